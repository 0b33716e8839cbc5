"""State, commands and Home Assistant discovery on the user's broker.

Topics under the base (default `ip22/<charger serial>`):
  status              online / offline (retained; offline is the broker's last will)
  state               every value as one JSON object (retained)
  <key>               each value alone, on change (retained): for Node-RED and friends
                      (not STATE_ONLY's: the codes and identity the GX's bridge reads)
  set/mode            auto | manual | off
  set/current         the manual current in A (clamped to the charger's range)
  set/charging        ON / OFF: manual mode charges, or holds the charger off
  set/reboot          PRESS
Commands go through the app's one entry point for changes (the same as the web API), never
to the charger. Bad ones are refused, counted and logged; with `commands` off, Home Assistant
gets no controls.
"""

import json

import cold
import mqttlink
from ticks import ticks_add, ticks_diff, ticks_ms

try:
    from random import getrandbits
except ImportError:  # pragma: no cover - every port has random

    def getrandbits(bits):
        return ticks_ms() & ((1 << bits) - 1)


TICK_S = 0.1
SERIAL_WAIT_MS = 60000  # the charger tells its serial in its first text block
ANNOUNCE_WAIT_MS = 30000  # discovery waits this long for the charger's model and range
REBOOT_GUARD_MS = 30000  # a reboot command this soon after connecting may be a retained one
BIRTH_DELAY_MS = 5000  # Home Assistant restarted: republish after a random delay up to this
MAX_PAYLOAD = 64  # a command longer than this is not one of ours
# values that change on every round: on their own topics only with the full state
QUIET = ("grid_age_s", "uptime_s", "free_heap_b", "frames_ok", "frames_bad")
# for the Venus OS bridge (venus_os/bridge.py: the charger on the GX's D-Bus): in the JSON
# state only, never on their own topics, no entities
STATE_ONLY = ("state_code", "error_code", "temperature_c", "pid", "model", "firmware", "serial",
              "manual_charging", "can_switch_off")


def _shown(value):
    """Booleans as Home Assistant's ON/OFF; everything else as it is."""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    return value


def _text(value):
    """A value as a plain-topic payload: numbers as numbers, None as "unknown" (an empty
    retained payload would delete the value at the broker: a new subscriber would get none)."""
    return "unknown" if value is None else str(_shown(value))


def node_id(serial):
    """Home Assistant ids allow [a-zA-Z0-9_-] only (discovery.py builds the configs)."""
    ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    return "ip22_" + "".join(c if c in ok else "_" for c in str(serial))


def _round(value, digits):
    return None if value is None else round(value, digits)


def _clamped(amps, limits):
    """In the number's announced range, on its 0.1 A step: Home Assistant logs an error for
    every state outside it."""
    low, high = limits
    return round(min(max(amps, low), high) * 10) / 10


class Mqtt:
    def __init__(self, app, settings, serial_hint=None):
        """`settings` is the config's "mqtt" section; `serial_hint` the serial last seen
        (persisted), so the ids are right before the charger has said its serial."""
        self.app = app
        self.s = settings
        self.serial = None
        self.serial_hint = serial_hint
        self.base = None
        self.session = None
        self.started_ms = ticks_ms()
        self.sent = {}  # key -> payload last published on its own topic
        self.state_ms = None  # when the state went out last
        self.full_ms = None  # when everything went out last
        self.announce_ms = None  # discovery due at this time
        self.waited = False  # ANNOUNCE_WAIT_MS have passed since the start
        self.discovered_range = None
        self.counters = {"commands": 0, "refused": 0, "announcements": 0}
        self.last_refused = None
        self.fallback = False  # the serial is the board's: no discovery under it

    # -- identity ---------------------------------------------------------------------------

    def _identify(self):
        """The serial, once the charger told it (or the persisted one, or after a wait, the
        board's id). Chosen once per boot: ids must not change under Home Assistant."""
        serial = self.app.link.state.serial
        if not serial and self.serial_hint:
            serial = self.serial_hint
        if not serial and ticks_diff(ticks_ms(), self.started_ms) >= SERIAL_WAIT_MS:
            serial = "adapter-" + self.app.board.unique_id()
            self.fallback = True  # Home Assistant would keep a device under it for ever
        if not serial:
            return False
        node = node_id(serial)
        base = self.s["base_topic"] or "ip22/" + serial
        session = mqttlink.Session(
            "mqtt",
            self.s["host"],
            self.s["port"],
            self.s["client_id"] or node,
            self.app.log,
            self.s["user"],
            self.s["password"],
            self.s["ca_file"],
        )
        session.will = (base + "/status", "offline")
        self.serial, self.base, self.session = serial, base, session  # all or nothing
        return True

    # -- the task ---------------------------------------------------------------------------

    async def run(self, beat=None):
        import asyncio

        while self.session is None:
            if beat:
                beat()
            if self._identify():
                break
            await asyncio.sleep(1)
        self.app.log("mqtt: base topic %s" % self.base)
        while True:
            if beat:
                beat()
            self.session.tend(self._connected)
            if self.session.connected:
                self._handle(self.session.take())
                await self._publish_due(asyncio)
            await asyncio.sleep(TICK_S)

    def _connected(self, session):
        """A fresh connection: subscribe, then everything goes out again. A refused
        subscription ends it (Session.tend then backs off)."""
        if self.s["discovery"] and not session.subscribe(self.s["discovery_prefix"] + "/status"):
            return
        plug = self.app.plug
        if getattr(plug, "state_topic", None):
            if not session.subscribe(plug.state_topic):  # a relay on MQTT: the off switch
                return
        # last: retained commands arrive after the setup, not inside a wait for a SUBACK
        if self.s["commands"] and not session.subscribe(self.base + "/set/+"):
            return
        session.publish(self.base + "/status", "online", True)
        self.announce_ms = ticks_ms()
        self.sent = {}
        self.full_ms = None

    async def _publish_due(self, asyncio):
        now = ticks_ms()
        due = self.announce_ms is not None and ticks_diff(now, self.announce_ms) >= 0
        if due and self.fallback:
            self.announce_ms = None  # the serial comes in a later boot; the state goes out now
        elif due and self._charger_known(now):
            self.announce_ms = None
            await self._announce(asyncio)
            self.full_ms = None
        elif (
            self.announce_ms is None
            and self._range() != self.discovered_range
            and self.s["discovery"]
            and not self.fallback
        ):
            await self._announce(asyncio)  # the charger's range became known: the number
        full = self.full_ms is None or ticks_diff(now, self.full_ms) >= self.s["full_s"] * 1000
        if (
            full
            or self.state_ms is None
            or (ticks_diff(now, self.state_ms) >= self.s["update_s"] * 1000)
        ):
            self.publish_state(full)

    def _charger_known(self, now):
        """Discovery goes out once the charger is probed: its model and range are in the
        configs (one announcement, not a second one moments later), and its tables are not
        read in beside discovery's. Without a charger, after ANNOUNCE_WAIT_MS."""
        if not self.waited and ticks_diff(now, self.started_ms) >= ANNOUNCE_WAIT_MS:
            self.waited = True  # latched: ticks_diff is meaningless days later
        return self.app.link.state.probed or self.waited

    def _range(self):
        s = self.app.link.state
        if s.min_a is None or s.max_a is None:
            return None
        return (s.min_a, s.max_a)

    def _limits(self):
        """The number's range as discovery announces it (the settings' without the charger)."""
        return self._range() or (0.0, 100.0)

    async def _announce(self, asyncio):
        """Discovery configs (or their removal), one message at a time."""
        prefix = self.s["discovery_prefix"]
        discovery = cold.load("discovery")  # 11 kB of tables: only for the announcement
        try:
            await self._send_configs(asyncio, discovery, prefix)
        finally:
            del discovery

    async def _send_configs(self, asyncio, discovery, prefix):
        if self.s["discovery"]:
            self.discovered_range = self._range()
            items = discovery.messages(
                prefix, self.base, self.device(), self.discovered_range, self.s["commands"]
            )
        else:
            items = discovery.removals(prefix, self.serial)
        for topic, payload in items:
            if not self.session.publish(topic, payload, True):
                return
            await asyncio.sleep(0)  # the charger link reads between two messages
        self.counters["announcements"] += 1  # configs or removals, all of them sent

    def device(self):
        s = self.app.link.state
        return {
            "serial": self.serial,
            "model": s.model,
            "pid": None if s.pid is None else "0x%04X" % s.pid,
            "version": self.app.version(),
            "charger_firmware": s.firmware,
            "url": self.app.url(),
        }

    # -- state ------------------------------------------------------------------------------

    def state(self):
        """The values a user graphs or automates, with the keys discovery.py names."""
        st = self.app.status()
        ch, grid, ctl = st["charger"], st["grid"], st["control"]
        v, i = ch["voltage_v"], ch["current_a"]
        link = ch["connected"]
        energy = self.app.energy
        return {
            "battery_v": _round(v, 2),
            "battery_a": _round(i, 1),
            "battery_w": round(v * i, 1) if v is not None and i is not None and link else None,
            "charger_state": ch["state"],
            "charger_error": ch["error"],
            "limit_a": ch["limit_a"],
            "grid_w": grid.get("power_w"),
            "grid_age_s": grid.get("age_s"),
            "mode": ctl["mode"],
            "setpoint_a": ctl["setpoint_a"],
            "manual_a": _clamped(self.app.config["control"]["manual_current_a"], self._limits()),
            "charging": None if ctl["charging"] is None else bool(ctl["charging"]),
            "reason": ctl["reason"],
            "safe": ctl["safe"],
            "link": link,
            "frames_ok": st["counters"]["frames_ok"],
            "frames_bad": st["counters"]["frames_bad"],
            "writes_24h": ch["stored_writes_24h"],
            "writes_total": ch["stored_writes"],
            "rssi_dbm": st["wifi"].get("rssi"),
            "uptime_s": st["uptime_s"],
            "free_heap_b": st["free_heap"],
            "energy_kwh": round(energy["charged_wh"] / 1000, 3),
            "grid_energy_kwh": round(energy["grid_wh"] / 1000, 3),
            "state_code": ch["state_code"],  # STATE_ONLY from here on
            "error_code": ch["error_code"],
            "temperature_c": ch["temperature_c"],
            "pid": ch["pid"],
            "model": ch["model"],
            "firmware": ch["firmware"],
            "serial": ch["serial"],
            "manual_charging": ctl["manual_charging"],
            "can_switch_off": ctl["can_switch_off"],
        }

    def publish_state(self, full=False):
        """The JSON state, and each value that changed on its own topic (all when `full`)."""
        now = ticks_ms()
        values = self.state()
        state = {key: _shown(value) for key, value in values.items()}
        if not self.session.publish(self.base + "/state", json.dumps(state), True):
            return
        self.state_ms = now
        if full:
            self.full_ms = now
        for key, value in values.items():
            if key in STATE_ONLY:
                continue
            text = _text(value)
            if full or (self.sent.get(key) != text and key not in QUIET):
                if not self.session.publish(self.base + "/" + key, text, True):
                    return
                self.sent[key] = text

    # -- commands ---------------------------------------------------------------------------

    def _handle(self, messages):
        prefix = self.s["discovery_prefix"] + "/status"
        for topic, payload in messages:
            try:
                topic = topic.decode()
                text = payload.decode().strip() if len(payload) <= MAX_PAYLOAD else None
            except (UnicodeError, AttributeError):
                topic, text = str(topic), None
            plug = self.app.plug
            if topic == getattr(plug, "state_topic", None):
                plug.on_state(payload)
                continue
            if topic == prefix:
                if text == "online":  # Home Assistant (re)started: discovery again, soon
                    self.announce_ms = ticks_add(
                        ticks_ms(), getrandbits(12) * BIRTH_DELAY_MS // 4096
                    )
                continue
            self.counters["commands"] += 1
            commands = self.base + "/set/"
            name = topic[len(commands) :] if topic.startswith(commands) else topic
            error = self.command(name, text)
            if error:
                self.counters["refused"] += 1
                self.last_refused = "%s %r: %s" % (topic, payload[:MAX_PAYLOAD], error)
                self.app.log("mqtt: refused %s" % self.last_refused)
            else:
                self.state_ms = None  # show the result at once

    def command(self, name, text):
        """Carry out `<base>/set/<name>` with payload `text`; the reason it was refused."""
        if text is None:
            return "not a short text payload"
        if name == "mode":
            errors = self.app.set_mode({"mode": text.lower()})
            return "; ".join(errors) if errors else None
        if name == "current":  # a value in force already saves nothing (app.update_config)
            try:
                amps = float(text)
            except ValueError:
                return "not a number"
            if amps != amps or amps in (float("inf"), float("-inf")):
                return "not a number"
            errors = self.app.set_mode({"manual_current_a": _clamped(amps, self._limits())})
            return "; ".join(errors) if errors else None
        if name == "reboot":
            if text != "PRESS":
                return "send PRESS"
            connected = self.session.connected_ms
            if connected is not None and ticks_diff(ticks_ms(), connected) < REBOOT_GUARD_MS:
                return "ignored so soon after connecting (a retained command?)"
            import asyncio

            asyncio.create_task(self.app.reboot())
            return None
        if name == "charging":  # manual mode's on/off (ON / OFF, as Home Assistant sends)
            on = {"ON": True, "TRUE": True, "1": True, "OFF": False, "FALSE": False, "0": False}
            if text.upper() not in on:
                return "send ON or OFF"
            errors = self.app.set_mode({"manual_charging": on[text.upper()]})
            return "; ".join(errors) if errors else None
        return "unknown command (use mode, current, charging or reboot)"

    def goodbye(self):
        """A clean stop: say offline now (the last will would take the keepalive's 45 s)."""
        if self.session is not None and self.session.connected:
            self.session.publish(self.base + "/status", "offline", True)
            self.session.close("stopped", clean=True)  # DISCONNECT: the broker drops the will

    def status(self):
        out = {"base_topic": self.base, "serial": self.serial}
        if self.session is not None:
            out.update(self.session.status())
        else:
            out.update(dict.fromkeys(mqttlink.COUNTERS, 0))
            out.update({"connected": False, "last_error": "waiting for the charger's serial"})
        out.update(self.counters)
        out["last_refused"] = self.last_refused
        return out
