"""Wires the parts, owns the state, runs the asyncio tasks and feeds the watchdog while all of
them are alive."""

import asyncio
import gc
from array import array
import json
import math
import os

import board
import charger
import cold
import control
import trend
import venus
import wifi
from ticks import ticks_diff, ticks_ms

VERSION = "0.1.0"
LOG_LINES = 10  # what /api/status shows; every line also goes to the console (print)
HOUSEKEEPING_S = 10
HISTORY_POINTS = 180  # the chart's 30 minutes at one point per housekeeping round
PERSIST_EVERY_MS = 3600 * 1000  # the stored-write counter goes to flash at most hourly
WATCHDOG_MS = 60000  # longer than any blocking call (MQTT connect, DNS, flash writes)
BEAT_STALE_MS = 30000  # a task that has not reported for this long is hung
TASK_RESTART_S = 5
TASK_FAILS_MAX = 5  # a task that failed this often in a row, each soon after its start, ...
TASK_STABLE_MS = 60000  # ... (sooner than this): the watchdog is no longer fed, the board resets
RETRY_MS = 10000
SWITCH_RETRY_MAX_MS = 600000  # a switch on that keeps failing is tried again this rarely
SWITCH_OFF_RETRY_MAX_MS = 60000  # off is what failing safe needs: at least once a minute
CONTROL_PERIOD_S = 0.25  # between grid samples (each wakes a step): the charger's changes
BELIEF_FRESH_S = 1.5  # the status claims on/off only while the charger's frames are this fresh
# the GC heap (as gc reports it) the full set (the core, MQTT, discovery) needs: on the 64-bit
# Unix port 288K (gc: 284.6 kB), host_tests/test_heap.py's line; it survives 60 s at 280K and
# not at 272K (tools/bench_heap.py --find-min, docs/development.md "Memory"); 32 bits: estimated
# (the modules take 0.89 of the 64-bit heap on the 32-bit port), not measured on a board. The
# core's: start.CORE_HEAP_*.
FULL_SET_HEAP_64 = 284 * 1024
FULL_SET_HEAP_32 = 252 * 1024
BULK = 3  # CS: the battery takes what the limit allows, so the current follows the limit
FOLLOW_MAX_S = 3.0  # a report older than this is not moved on (the link is about to count
# as lost anyway)
DRAW_HISTORY = 16  # the charger's output at each control step: 4 s, to match a grid sample
NO_WATCHDOG_FLAG = "nowdt"
HEALTHY_S = 60  # an update that has run this long (with the watchdog fed) is kept


class Config:
    """The values in force, and how they came to be (config.py reads and writes the file)."""

    def __init__(self, values, errors=(), source="defaults"):
        self.values = values
        self.errors = list(errors)
        self.source = source

    @property
    def safe_mode(self):
        return bool(self.errors)

    def __getitem__(self, key):
        return self.values[key]


class App:
    def __init__(
        self,
        config,
        board_,
        state_path="state.json",
        http_host="0.0.0.0",
        http_port=None,
        config_path="config.json",
    ):
        self.config = config
        self.config_path = config_path
        self.board = board_
        self.state_path = state_path
        self.http_host = http_host
        self.http_port = http_port or config["http"]["port"]
        self.started_ms = ticks_ms()
        self.healthy_s = HEALTHY_S
        self.lines = []
        self.beats = {}
        self.restarts = {}
        self.failing = {}  # task -> failures in a row, each soon after its start
        self.fail_task = None  # [name, times]: tests on the Unix port make a task fail
        self.web_server = None
        self.heap = {"used": None, "free": None, "peak_used": 0}
        self.trend = trend.Trend(
            (("grid_w", 1), ("charger_w", 1), ("setpoint_a", 10)), HISTORY_POINTS
        )
        persisted = self._load_state()
        zero_off = persisted.get("zero_off")
        self.link = charger.Link(
            board_.open_uart,
            config["charger"],
            self.log,
            persisted.get("stored_writes", 0),
            zero_off if isinstance(zero_off, dict) else None,
        )
        self.link.read_only = config.safe_mode
        self.energy = {
            "charged_wh": float(persisted.get("charged_wh", 0)),  # into the battery (DC)
            "grid_wh": float(persisted.get("grid_wh", 0)),  # of the charger's draw: imported
        }
        self._energy_ms = None
        self._serial_hint = persisted.get("serial")
        self._persisted = self._persistent()
        self._persisted_ms = ticks_ms()
        settings = dict(config["control"])
        if config.safe_mode:
            settings["mode"] = "off"
            self.log("config invalid, safe mode: " + "; ".join(config.errors))
        self.controller = control.Controller(settings)
        self.poller = self._grid_source(config)
        self.mqtt = None
        self.left_out = None  # what a small heap leaves out, and why
        if config["mqtt"]["host"] and not config.safe_mode:
            self.left_out = self._too_small(board_)
            if self.left_out:
                self.log("core only: " + self.left_out)
            else:
                import mqtt

                self.mqtt = mqtt.Mqtt(self, config["mqtt"], self._serial_hint)
        self.wifi = wifi.Supervisor(board_.radio, config, self.log)
        self.ota_root = config_path.rsplit("/", 1)[0] if "/" in config_path else ""
        self.updater = None  # ota.Updater, loaded when an update begins
        self.ota_boot = None  # the update state of this boot, read when first asked for
        self.plug = self._make_plug(config["plug"])
        if config["plug"]["type"] == "mqtt" and self.mqtt is None:
            self.log("plug.type mqtt needs the broker in mqtt.host: the plug cannot switch")
        self.powered_off = False  # we cut the charger's mains with the plug
        self.switched = None  # the last switch that went through, for a charger that cannot say
        self.applied_generation = 0
        # V x I as the link knew it at each control step (-1: not known), and when: a ring
        self.draws = array("f", bytes(4 * DRAW_HISTORY))
        self.draws_ms = [None] * DRAW_HISTORY
        self.draws_at = 0
        self.failed_set = None  # (setpoint, when) of the last set that did not go through
        self.handed_back = False  # mode off: the charger was given back to itself
        self.failed_switch = None  # (on, when, wait ms): a failed switch backs off, doubling
        self.control_errors = 0
        self._confirmed = False
        self.control_steps = 0  # proof of life: the controller decides about 4 times a second

    # -- log and persistence -----------------------------------------------------------------

    def _too_small(self, board_):
        """Why MQTT is left out (None: it is not): below the heap the full set needs, the
        core (charger, controller, Venus, page and API) runs alone, not in MemoryErrors."""
        short = board.short_of(board_.heap_total(), FULL_SET_HEAP_64, FULL_SET_HEAP_32)
        if short:
            return "MQTT and Home Assistant discovery left out: %d kB of heap, they need %d kB" % (
                short[0], short[1])
        return None

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

    def _make_plug(self, settings):
        """The configured plug, or None (plug.py is loaded only for a plug)."""
        if settings["type"] == "none":
            return None
        import plug

        return plug.make(settings, lambda: self.mqtt)

    def plug_ready(self):
        return self.plug is not None and self.plug.configured

    def _grid_source(self, config):
        v = config["venus"]
        if v["protocol"] == "dbus":  # only the Venus OS service's board has the GX's D-Bus
            make = getattr(self.board, "dbus_grid", None)
            if make is None:
                self.log("venus.protocol dbus works only in the Venus OS service: no grid data")
                return None
            return make(v, self.log)
        if not v["host"]:
            return None
        if v["protocol"] == "mqtt":
            import venusmqtt

            return venusmqtt.MqttGrid(v, self.log, "ip22-%s-venus" % self.board.unique_id())
        return venus.Poller(v, self.log)

    def _persistent(self):
        return {
            "stored_writes": self.link.stored_writes,
            "charged_wh": round(self.energy["charged_wh"], 1),
            "grid_wh": round(self.energy["grid_wh"], 1),
            "serial": self.link.state.serial or self._serial_hint,
            "zero_off": dict(self.link.zero_off),
        }

    def persist(self, force=False):
        """Write the counters (stored writes, energy) and the serial: when they changed, at
        most hourly (or at shutdown), so flash is not worn by bookkeeping."""
        data = self._persistent()
        if data == self._persisted:
            return
        if not force and ticks_diff(ticks_ms(), self._persisted_ms) < PERSIST_EVERY_MS:
            return
        tmp = self.state_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(data))
            os.rename(tmp, self.state_path)
            self._persisted = data
            self._persisted_ms = ticks_ms()
        except OSError as err:
            self.log("could not save %s: %s" % (self.state_path, err))

    def shutdown(self):
        """Before a reboot or a stop: counters to flash, "offline" to the broker."""
        self.persist(force=True)
        if self.mqtt is not None:
            self.mqtt.goodbye()

    def count_energy(self, now):
        """Integrate the charger's output, and the part of its draw the grid supplied (only
        while the grid value is fresh: an unknown grid adds nothing)."""
        last, self._energy_ms = self._energy_ms, now
        s = self.link.state
        if last is None or self.powered_off or not self.link.connected():
            return
        if s.voltage_v is None or not s.current_a or s.current_a < 0:
            return
        hours = ticks_diff(now, last) / 3600000
        if hours <= 0 or hours > 0.01:  # a stall of more than 36 s: do not guess
            return
        out_w = s.voltage_v * s.current_a
        self.energy["charged_wh"] += out_w * hours
        r = self.poller.reading if self.poller else None
        if r is not None and r.power_w is not None and r.power_w > 0:
            age = r.age_s(now)
            if age is not None and age <= self.controller.s["stale_s"]:
                draw_w = out_w / self.controller.s["efficiency"]
                self.energy["grid_wh"] += min(draw_w, r.power_w) * hours

    # -- tasks -------------------------------------------------------------------------------

    def beat(self, name):
        self.beats[name] = ticks_ms()

    async def supervise(self, name, make):
        """Run a task; if it fails, log it, count it, start it again. One that keeps failing
        soon after each start stops the watchdog's feeding: the board resets."""
        while True:
            started = ticks_ms()
            try:
                await self._run_task(name, make)
                return
            except Exception as err:  # a bug must not take the other tasks down
                self.restarts[name] = self.restarts.get(name, 0) + 1
                soon = ticks_diff(ticks_ms(), started) < TASK_STABLE_MS
                self.failing[name] = self.failing.get(name, 0) + 1 if soon else 1
                try:
                    self.log("task %s failed: %s %s" % (name, type(err).__name__, err))
                except MemoryError:  # nor a full heap while saying so
                    gc.collect()
            await asyncio.sleep(TASK_RESTART_S)

    async def _run_task(self, name, make):
        fail = self.fail_task
        if not fail or fail[0] != name or fail[1] <= 0:
            await make()
            return
        fail[1] -= 1  # a test's failure: the task runs a moment (a server has bound its port)
        task = asyncio.create_task(make())
        await asyncio.sleep(1)
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: B036  its CancelledError ends it, as a failure would
            pass
        raise RuntimeError("failure made by IP22_FAIL_TASK")

    async def link_task(self):
        await self.link.run(lambda: self.beat("link"))

    def situation(self):
        sit = control.Situation()
        if self.poller is not None:
            r = self.poller.reading
            sit.grid_w, sit.grid_seq, sit.grid_age_s = r.power_w, r.seq, r.age_s()
            sit.battery_w = r.battery_w
            sit.grid_error = self.poller.last_error
        else:
            sit.grid_error = "no Venus configured (venus.host)"
        link = self.link
        s = link.state
        sit.link_up = link.connected()
        sit.link_seen = s.last_frame_ms is not None
        sit.failed_probes = link.probe_failures
        sit.powered_off = self.powered_off
        sit.voltage_v, sit.current_a, sit.state_code = s.voltage_v, s.current_a, s.state
        sit.min_a, sit.max_a, sit.limit_a = s.min_a, s.max_a, s.limit_a
        if not s.probed:  # half-way through a probe: not known yet, nothing to decide on
            sit.min_a = sit.max_a = None
        sit.charging = self.confirmed_on()
        sit.can_switch_off = self.can_switch_off()
        sit.switch_is_stored = bool(s.device_mode) and not self.powered_off
        sit.stored_only = s.volatile is False
        now = ticks_ms()
        budget = link.budget
        sit.budget_full = budget.full(now)
        sit.writes_left = budget.daily_max - budget.used_24h(now)
        sit.daily_max = budget.daily_max
        sit.increase_wait_s = budget.increase_wait_ms(now) // 1000
        if self.poller is not None:
            sit.grid_failures = getattr(self.poller, "failures", 0)
            sampled = getattr(self.poller.reading, "sampled_ms", None)
            if sampled is not None:
                sit.sample_output_w = self._draw_at(sampled)
        return sit

    def confirmed_on(self):
        """Charging as the charger confirmed it; where nothing is confirmed (a charger that
        cannot say), the last switch that went through."""
        if self.powered_off:
            return False
        on = self.link.state.charging
        return on if on is not None else self.switched

    def _followed(self, amps, now):
        """The reported current moved on to `now` along the charger's first-order response
        toward the limit in force: its reports come once a second, and a ramp moves on
        meanwhile (up only in bulk, where the battery takes what the limit allows)."""
        s = self.link.state
        limit = self.link.confirmed_limit()
        if limit is None or s.current_ms is None or amps <= 0:
            return amps  # at 0 it may be starting up: no ramp to follow yet
        if limit > amps and s.state != BULK:
            return amps
        tau = self.controller.s["response_s"]
        if tau <= 0:
            return limit
        dt = min(ticks_diff(now, s.current_ms) / 1000, FOLLOW_MAX_S)
        return limit + (amps - limit) * math.exp(-dt / tau)

    def _record_draw(self, now):
        s = self.link.state
        k = self.draws_at
        volts, amps = s.voltage_v, s.current_a
        if self.confirmed_on() is False:
            self.draws[k] = 0.0
        elif volts is None or amps is None:
            self.draws[k] = -1.0
        else:
            self.draws[k] = volts * self._followed(amps, now)
        self.draws_ms[k] = now
        self.draws_at = (k + 1) % DRAW_HISTORY

    def _draw_at(self, at_ms):
        """The charger's output as it was when the grid sample was asked for: the meter saw
        that draw, not the one now (which a ramp has moved on). None: not known."""
        best = None
        for k in range(DRAW_HISTORY):
            ms = self.draws_ms[k]
            if ms is not None and ticks_diff(ms, at_ms) <= 0:
                if best is None or ticks_diff(ms, self.draws_ms[best]) > 0:
                    best = k
        if best is None or self.draws[best] < 0:
            return None
        return self.draws[best]

    async def control_task(self):
        if self.plug_ready():  # the plug may have been left off: know it from the start
            try:
                self.powered_off = not await self.plug.read()
                self.switched = not self.powered_off
            except Exception as err:  # an unreachable plug is reported, not fatal
                self.log("plug: %s" % err)
        woken = asyncio.Event()  # here, not in __init__: CPython binds it to the running loop
        if self.poller is not None:
            self.poller.on_sample = woken.set
        while True:
            self.beat("control")
            self.control_steps += 1
            self._record_draw(ticks_ms())
            try:
                decision = self.controller.step(ticks_ms(), self.situation())
            except Exception as err:  # a controller bug: fail safe, say why
                self.control_errors += 1
                decision = control.Decision(
                    None, False, "safe: controller error %s: %s" % (type(err).__name__, err), True
                )
            await self.apply(decision)
            self.count_energy(ticks_ms())
            try:  # a new grid sample is acted on at once, not up to a period later
                await asyncio.wait_for(woken.wait(), CONTROL_PERIOD_S)
            except asyncio.TimeoutError:
                pass
            woken.clear()

    async def apply(self, d):
        """Reconcile the charger with the decision on every step: a limit or an on/off that
        differs from what the charger confirmed is sent (again, after a failure with
        back-off). The limit goes first, so switching on never runs above the decision."""
        if self.controller.s["mode"] == "off" and not d.safe:
            await self._hand_back()
            return
        self.handed_back = False
        if self.link.generation != self.applied_generation:  # the charger may do otherwise
            self.applied_generation = self.link.generation
            self.failed_switch = None
            self.failed_set = None
        if d.charging is not False and d.setpoint_a is not None and self._charger_hears():
            await self._limit(d.setpoint_a)
        if d.charging is not None and d.charging != self.confirmed_on():
            await self._switch_with_backoff(d.charging)

    async def _hand_back(self):
        """Mode off leaves the charger to itself, so first give it back as it was before we
        steered it: on again where we switched it off (0x0200 or the plug; a 0x2015 = 0 "off"
        ends with the refresh), its volatile limit no longer refreshed. Once per entry."""
        if self.handed_back or not self._charger_hears() and not self.powered_off:
            return
        if self.link.desired_on is False or self.powered_off:
            if not await self.switch(True):
                return  # not yet: again at the next step
            self.switched = True
        self.link.release()
        self.handed_back = True
        self.log("mode off: the charger is left to itself")

    def can_switch_off(self):
        """By 0x0200, by 0x2015 = 0 where that is off, or by the plug."""
        s = self.link.state
        zero_is_off = s.volatile and s.volatile_off is not False and not s.device_mode
        return bool(zero_is_off or s.device_mode or self.plug_ready())

    def _heard_lately(self):
        age = self.link.frame_age_s()
        return age is not None and age < BELIEF_FRESH_S

    def _charger_hears(self):
        return self.link.connected() and self.link.state.probed and not self.powered_off

    async def _limit(self, amps):
        link = self.link
        want = link.clamp(amps)
        if want is None:
            return
        have = link.confirmed_limit()
        if have is not None and abs(have - want) < 0.05:
            return
        failed = self.failed_set
        now = ticks_ms()
        if failed and failed[0] == want and ticks_diff(now, failed[1]) < RETRY_MS:
            return  # the same request failed a moment ago: not again yet
        before = link.state.limit_a
        if await link.set_current(want):
            self.failed_set = None
            return
        self.failed_set = (want, now)
        if link.budget.full(now) and before and want < before:
            await self.switch(False)  # it must go down and cannot: off instead

    async def _switch_with_backoff(self, on):
        """Each failed try may be a stored write (0x0200) or a plug command: the same switch
        is tried again after 10 s, then 20 s, ... up to 10 min, not at every control step."""
        failed = self.failed_switch
        if failed and failed[0] == on and ticks_diff(ticks_ms(), failed[1]) < failed[2]:
            return
        if await self.switch(on):
            self.switched = on
            self.failed_switch = None
            return
        wait = RETRY_MS if not failed or failed[0] != on else failed[2] * 2
        longest = SWITCH_RETRY_MAX_MS if on else SWITCH_OFF_RETRY_MAX_MS
        self.failed_switch = (on, ticks_ms(), min(wait, longest))

    async def switch(self, on):
        """Charging on/off by the charger's own means, else (or when they fail) the plug."""
        s = self.link.state
        if on and self.powered_off and self.plug_ready():
            return await self._plug(True)  # unpowered: the charger cannot hear us
        if (s.volatile or s.device_mode) and self._charger_hears():
            if await self.link.set_charging(on):
                return True
            if not self.plug_ready():
                return False
        elif s.volatile or s.device_mode:
            if not self.plug_ready():
                return False  # it cannot hear us now: again when it is back
        if self.plug_ready():
            return await self._plug(on)
        return on  # nothing to switch with: it charges

    async def _plug(self, on):
        ok = await self.plug.switch(on)
        if ok:
            self.powered_off = not on
            if on:  # powered up to charge: the link must not switch it off again
                self.link.desired_on = True
            self.log("plug switched %s" % ("on" if on else "off"))
        return ok

    async def venus_task(self):
        if self.poller is None:
            return
        await self.poller.run(lambda: self.beat("venus"))

    async def mqtt_task(self):
        if self.mqtt is None:
            return
        await self.mqtt.run(lambda: self.beat("mqtt"))

    async def captive_task(self):
        """The captive DNS while the access point is open (not on a host without one)."""
        port = self.board.dns_port
        if port is None:
            return
        import captive

        await captive.Responder(port).run(lambda: self.wifi.ap_on)

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
            self.sample()
            if self.uptime_s() >= self.healthy_s and not self._confirmed:
                try:  # it has run a while with every task alive: it stays
                    ota = cold.load("ota")
                    path = ota.Updater(self.ota_root).state_path
                    if self.restarts and ota.load_state(path).get("trial"):
                        # e.g. a web server that never started: no way to update it again
                        self.log("this update is not healthy (task %s failed): restarting, "
                                 "back to the one before after %d boots"
                                 % (", ".join(sorted(self.restarts)), ota.MAX_TRIAL_BOOTS))
                        await self.reboot()
                    if ota.confirm(path):
                        self.log("this firmware is confirmed: no rollback")
                    self.ota_boot = None  # no longer on trial: read again when asked
                    self._confirmed = True
                    del ota
                except Exception as err:  # the flash, or no heap this round: next round
                    self.log("could not confirm the update: %s %s" % (type(err).__name__, err))
            await asyncio.sleep(HOUSEKEEPING_S)

    async def watchdog_task(self):
        """Feed the watchdog only while every looping task reports in (link, control,
        housekeeping); a hung one lets the board reset. The ESP32's watchdog cannot be stopped
        once armed, so tools/flash.py leaves a `nowdt` file and resets the board before it
        copies: this boot then runs without one."""
        try:
            os.remove(NO_WATCHDOG_FLAG)
            self.log("watchdog off for this boot (maintenance: %s)" % NO_WATCHDOG_FLAG)
            return
        except OSError:
            pass  # the normal case: no flag
        wdt = self.board.watchdog(WATCHDOG_MS)
        reported = None
        while True:
            now = ticks_ms()
            beats, failing = self.beats.items(), self.failing.items()
            stale = [n + " hung" for n, t in beats if ticks_diff(now, t) > BEAT_STALE_MS]
            stale += [n + " keeps failing" for n, k in failing if k >= TASK_FAILS_MAX]
            if stale != reported:
                if stale:
                    self.log("not feeding the watchdog: %s" % ", ".join(stale))
                reported = stale
            if not stale:
                wdt.feed()
            await asyncio.sleep(5)

    async def web_task(self):
        import web  # microdot is loaded only when the server starts

        server = web.make_app(self)
        self.web_server = server
        self.log("HTTP on %s:%d" % (self.http_host, self.http_port))
        try:
            await server.start_server(host=self.http_host, port=self.http_port)
        finally:  # failed or stopped: free the port and the connections for the restart
            server.close()

    async def run(self):
        self.log(
            "IP22 adapter %s on %s (%s), config: %s"
            % (VERSION, self.board.name, self.board.memory(), self.config.source)
        )
        tasks = [
            asyncio.create_task(self.supervise("link", self.link_task)),
            asyncio.create_task(self.supervise("control", self.control_task)),
            asyncio.create_task(self.supervise("venus", self.venus_task)),
            asyncio.create_task(self.supervise("mqtt", self.mqtt_task)),
            asyncio.create_task(self.supervise("housekeeping", self.housekeeping_task)),
            asyncio.create_task(self.supervise("web", self.web_task)),
            asyncio.create_task(self.supervise("wifi", self.wifi.run)),
            asyncio.create_task(self.supervise("captive", self.captive_task)),
            asyncio.create_task(self.watchdog_task()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            self.shutdown()

    def sample(self):
        """One point of the chart's history: grid W, charger W (V x I), setpoint A."""
        s = self.link.state
        grid = self.poller.reading.power_w if self.poller else None
        charger_w = None
        if s.voltage_v is not None and s.current_a is not None and self.link.connected():
            charger_w = round(s.voltage_v * s.current_a)
        self.trend.add((grid, charger_w, self.control_status()["setpoint_a"]))

    def history(self):
        out = {"interval_s": HOUSEKEEPING_S}
        out.update(self.trend.lists())
        return out

    # -- changes from the API: the one way in -----------------------------------------------

    def set_mode(self, change):
        """Mode and manual values, validated, applied to the controller and saved. Returns
        the list of errors (empty when done)."""
        allowed = ("mode", "manual_current_a", "manual_charging")
        unknown = [k for k in change if k not in allowed]
        if unknown:
            return ["%s: not a mode setting (use %s)" % (k, ", ".join(allowed)) for k in unknown]
        return self.update_config({"control": change})[0]

    def update_config(self, patch):
        """(errors, restart_needed): merge, validate, save atomically, apply what can be
        applied while running."""
        if not isinstance(patch, dict):
            return ["config: must be a JSON object"], []
        admin = patch.get("admin")
        if isinstance(admin, dict) and admin.get("password_hash") == "":
            # no hash: every later change would be refused (403) for good
            return ["admin.password_hash: cannot be emptied here; set a new password with "
                    "tools/flash.py --admin-password"], []
        configuration = cold.load("config")  # with the schema: only while settings change
        base = self.config.values
        if self.config.safe_mode:
            base = configuration.restored(self.config_path, base)
        values = configuration.merged(base, patch)
        clean, errors = configuration.validate(values)
        if errors:
            return errors, []
        if clean == self.config.values and not self.config.safe_mode:
            return [], []  # nothing changed: the flash is not written
        try:
            configuration.save(self.config_path, clean)
        except OSError as err:
            return ["could not save %s: %s" % (self.config_path, err)], []
        del configuration
        old, self.config.values = self.config.values, clean  # saved: in force from now on
        restart = []
        for section in patch:
            if clean[section] == old.get(section):
                continue
            try:
                live = self._apply(section, clean[section], old[section])
            except Exception as err:  # e.g. no heap for plug.py now: the restart applies it
                self.log("could not apply %s now: %s %s" % (section, type(err).__name__, err))
                live = False
            if not live:
                restart.append(section)
        if self.config.safe_mode:
            restart.append("safe mode (the saved config is valid now)")
        self.log("config saved%s" % (": restart for " + ", ".join(restart) if restart else ""))
        return [], restart

    def _apply(self, section, new, old):
        """One section's new settings into the running parts; False: only a restart can."""
        if section == "control":
            if not self.config.safe_mode:  # safe mode keeps the controller off
                self.controller.s.update(new)
            return True
        if section == "charger":
            self.link.settings.update(new)
            self.link.settings_changed(old)
            b = self.link.budget
            b.deadband = new["stored_deadband_a"]
            b.min_interval_ms = new["stored_min_interval_s"] * 1000
            b.daily_max = new["stored_daily_max"]
            return True
        if section == "venus" and self._venus_live(new, old):
            self.poller.s.update(new)
            self.poller.reconnect()  # with the new settings
            return True
        if section == "plug":
            self.plug = self._make_plug(new)
            return True
        if section == "wifi":  # the supervisor follows; an access point open keeps its key
            return new["ap_password"] == old["ap_password"]
        return section == "admin"

    def _venus_live(self, new, old):
        """Can the grid source take these settings without a restart?"""
        return (
            self.poller is not None
            and new["host"]
            and new["protocol"] == old["protocol"]
            and (new["protocol"] == "modbus" or new["portal_id"] == old["portal_id"])
        )

    def ota(self):
        """The updater, loaded when an update begins and kept until the reboot that ends it
        (ota.py is 6 kB of heap that a board not being updated does not need)."""
        if self.updater is None:
            self.updater = cold.load("ota").Updater(self.ota_root)
        return self.updater

    def ota_status(self):
        if self.updater is not None:
            return self.updater.status()
        if self.ota_boot is None:  # ota.py read in for it and let go again
            self.ota_boot = cold.load("ota").Updater(self.ota_root).status()
        return self.ota_boot

    def ota_step(self, step):
        """An update step from the web API: its result, or the error response."""
        if not getattr(self.board, "can_update", True):
            return {"error": "no updates over the web here: install the new package"}, 409
        try:
            result = step(self.ota())
        except Exception as err:  # UpdateError, or the filesystem
            return self.ota_failed(err)
        return result if result is not None else self.ota_status()

    def ota_failed(self, err):
        updater = self.ota()
        updater.last_error = "%s: %s" % (type(err).__name__, err)
        self.log("update refused: %s" % updater.last_error)
        return {"error": updater.last_error}, 400

    def version(self):
        return VERSION

    def url(self):
        """The status page's address, for Home Assistant's "visit device" link."""
        ip = self.wifi.state.get("ip") or (
            self.http_host if self.http_host not in ("0.0.0.0", "") else None
        )
        if not ip:
            return None
        return (
            "http://%s/" % ip if self.http_port == 80 else "http://%s:%d/" % (ip, self.http_port)
        )

    async def reboot(self):
        self.log("reboot requested")
        self.shutdown()
        await asyncio.sleep(0.5)  # let the HTTP answer go out
        self.board.reset()

    # -- status ------------------------------------------------------------------------------

    def control_status(self):
        c = self.controller
        d = c.decision
        return {
            "mode": c.s["mode"],
            "manual_charging": c.s["manual_charging"],  # manual + false: held off (GX /Mode 4)
            "can_switch_off": self.can_switch_off() if self.link.state.probed else None,
            "setpoint_a": c.setpoint_a if c.s["mode"] == "auto" else d.setpoint_a,
            # what the charger confirmed; not known once it misses a text block (it may be off)
            "charging": self.confirmed_on() if self.powered_off or self._heard_lately()
            else None,
            "reason": d.reason,
            "safe": d.safe,
            "available_w": c.available_w,
            "powered_off": self.powered_off,
            "charger_note": self.link.last_skip,
            "errors": self.control_errors,
            "steps": self.control_steps,
        }

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
            "grid": self.poller.status()
            if self.poller
            else {
                "power_w": None,
                "age_s": None,
                "last_error": "no Venus configured (venus.host)",
            },
            "control": self.control_status(),
            "plug": self.plug.status() if self.plug_ready() else None,
            "mqtt": self.mqtt.status() if self.mqtt else None,
            "left_out": self.left_out,
            "web": self.web_server.status() if self.web_server else None,
            "ota": self.ota_status(),
            "energy": {
                "charged_kwh": round(self.energy["charged_wh"] / 1000, 3),
                "grid_kwh": round(self.energy["grid_wh"] / 1000, 3),
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
            "wifi": dict(self.wifi.state),  # copies: the answer is written out between awaits
            "config": {
                "source": self.config.source,
                "safe_mode": self.config.safe_mode,
                "errors": self.config.errors,
            },
            "log": list(self.lines),
        }
