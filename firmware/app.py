"""Wires the parts, owns the state, runs the asyncio tasks and feeds the watchdog while all of
them are alive."""

import asyncio
import gc
import json
import os

import board
import charger

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from charger import ticks_diff, ticks_ms

VERSION = "0.1.0"
LOG_LINES = 40
HOUSEKEEPING_S = 10
PERSIST_EVERY_MS = 3600 * 1000  # the stored-write counter goes to flash at most hourly
WATCHDOG_MS = 60000  # longer than any blocking call (MQTT connect, DNS, flash writes)
BEAT_STALE_MS = 30000  # a task that has not reported for this long is hung
TASK_RESTART_S = 5
MANUAL_RETRY_MS = 10000


class App:
    def __init__(
        self, config, board_, state_path="state.json", http_host="0.0.0.0", http_port=None
    ):
        self.config = config
        self.board = board_
        self.state_path = state_path
        self.http_host = http_host
        self.http_port = http_port or config["http"]["port"]
        self.started_ms = ticks_ms()
        self.lines = []
        self.beats = {}
        self.restarts = {}
        self.heap = {"used": None, "free": None, "peak_used": 0}
        persisted = self._load_state()
        self.link = charger.Link(
            board_.open_uart, config["charger"], self.log, persisted.get("stored_writes", 0)
        )
        self.link.read_only = config.safe_mode
        self._persisted_writes = self.link.stored_writes
        self._persisted_ms = ticks_ms()
        self.control = {"mode": config["control"]["mode"], "setpoint_a": None, "reason": None}
        if config.safe_mode:
            self.control["mode"] = "off"
            self.log("config invalid, safe mode: " + "; ".join(config.errors))

    # -- log and persistence -----------------------------------------------------------------

    def uptime_s(self):
        return ticks_diff(ticks_ms(), self.started_ms) // 1000

    def log(self, message):
        line = "%6d %s" % (self.uptime_s(), message)
        print(line)
        self.lines.append(line)
        if len(self.lines) > LOG_LINES:
            self.lines.pop(0)

    def _load_state(self):
        try:
            with open(self.state_path) as f:
                data = json.loads(f.read())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def persist(self, force=False):
        """Write the stored-write counter: when it changed, at most hourly (or at shutdown)."""
        writes = self.link.stored_writes
        if writes == self._persisted_writes:
            return
        if not force and ticks_diff(ticks_ms(), self._persisted_ms) < PERSIST_EVERY_MS:
            return
        tmp = self.state_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps({"stored_writes": writes}))
            os.rename(tmp, self.state_path)
            self._persisted_writes = writes
            self._persisted_ms = ticks_ms()
        except OSError as err:
            self.log("could not save %s: %s" % (self.state_path, err))

    # -- tasks -------------------------------------------------------------------------------

    def beat(self, name):
        self.beats[name] = ticks_ms()

    async def supervise(self, name, make):
        """Run a task; if it fails, log it, count it, start it again."""
        while True:
            try:
                await make()
                return
            except Exception as err:  # a bug must not take the other tasks down
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.log("task %s failed: %s %s" % (name, type(err).__name__, err))
            await asyncio.sleep(TASK_RESTART_S)

    async def link_task(self):
        await self.link.run(lambda: self.beat("link"))

    async def control_task(self):
        """Manual mode for now: hold the configured current and on/off. (Auto: issue #5.)"""
        settings = self.config["control"]
        applied = None
        tried_ms = None
        while True:
            self.beat("control")
            mode = self.control["mode"]
            if mode == "manual" and self.link.state.probed:
                wanted = (
                    self.link.clamp(settings["manual_current_a"]),
                    settings["manual_charging"],
                )
                self.control["setpoint_a"] = wanted[0]
                due = tried_ms is None or ticks_diff(ticks_ms(), tried_ms) >= MANUAL_RETRY_MS
                if wanted != applied and due:
                    tried_ms = ticks_ms()
                    ok = await self.link.set_current(wanted[0])
                    ok = await self.link.set_charging(wanted[1]) and ok
                    applied = wanted if ok else None
                self.control["reason"] = "manual: %s A, charging %s%s" % (
                    wanted[0],
                    "on" if wanted[1] else "off",
                    "" if applied else " (not confirmed: %s)" % self.link.last_skip,
                )
            elif mode == "manual":
                self.control["reason"] = "manual: waiting for the charger"
            elif mode == "auto":
                self.control["reason"] = "automatic control is not built yet"
            elif self.config.safe_mode:
                self.control["reason"] = "safe mode: fix config.json (see config.errors)"
            else:
                self.control["reason"] = "off: the charger is left as it is"
            await asyncio.sleep(1)

    async def housekeeping_task(self):
        while True:
            self.beat("housekeeping")
            gc.collect()
            used = board.heap_used()
            self.heap["used"] = used
            self.heap["free"] = board.free_heap()
            if used is not None and used > self.heap["peak_used"]:
                self.heap["peak_used"] = used
            self.persist()
            await asyncio.sleep(HOUSEKEEPING_S)

    async def watchdog_task(self):
        """Feed the watchdog only while every looping task reports in (link, control,
        housekeeping); a hung one lets the board reset."""
        wdt = self.board.watchdog(WATCHDOG_MS)
        reported = None
        while True:
            now = ticks_ms()
            stale = [n for n, t in self.beats.items() if ticks_diff(now, t) > BEAT_STALE_MS]
            if stale != reported:
                if stale:
                    self.log("not feeding the watchdog: %s hung" % ", ".join(stale))
                reported = stale
            if not stale:
                wdt.feed()
            await asyncio.sleep(5)

    async def web_task(self):
        import web  # microdot is loaded only when the server starts

        server = web.make_app(self)
        self.log("HTTP on %s:%d" % (self.http_host, self.http_port))
        await server.start_server(host=self.http_host, port=self.http_port)

    async def run(self):
        self.log(
            "IP22 adapter %s on %s, config: %s" % (VERSION, self.board.name, self.config.source)
        )
        tasks = [
            asyncio.create_task(self.supervise("link", self.link_task)),
            asyncio.create_task(self.supervise("control", self.control_task)),
            asyncio.create_task(self.supervise("housekeeping", self.housekeeping_task)),
            asyncio.create_task(self.supervise("web", self.web_task)),
            asyncio.create_task(self.board.wifi_task(self.config, self.log)),
            asyncio.create_task(self.watchdog_task()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            self.persist(force=True)

    # -- status ------------------------------------------------------------------------------

    def status(self):
        link = self.link.status()
        counters = link.pop("counters")
        return {
            "version": VERSION,
            "board": self.board.name,
            "uptime_s": self.uptime_s(),
            "free_heap": board.free_heap(),
            "heap": self.heap,
            "charger": link,
            "grid": {"power_w": None, "age_s": None, "note": "Venus poller arrives with issue #5"},
            "control": {
                "mode": self.control["mode"],
                "setpoint_a": self.control["setpoint_a"],
                "charging": self.link.state.charging,
                "reason": self.control["reason"],
            },
            "counters": {
                "frames_ok": counters["text_ok"] + counters["hex_ok"],
                "frames_bad": counters["text_bad"] + counters["hex_bad"],
                "text_ok": counters["text_ok"],
                "text_bad": counters["text_bad"],
                "hex_ok": counters["hex_ok"],
                "hex_bad": counters["hex_bad"],
                "bytes_discarded": counters["discarded"],
                "commands": counters["commands"],
                "confirmed": counters["confirmed"],
                "refused": counters["refused"],
                "timeouts": counters["timeouts"],
                "failures": counters["failures"],
                "skipped_writes": counters["skipped_writes"],
                "reconnects": counters["reconnects"],
                "task_restarts": sum(self.restarts.values()),
                "link_busy_ms": self.link.busy_us // 1000,
            },
            "wifi": self.board.wifi_status(),
            "config": {
                "source": self.config.source,
                "safe_mode": self.config.safe_mode,
                "errors": self.config.errors,
            },
            "log": self.lines[-10:],
        }
