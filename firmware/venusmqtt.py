"""Grid power from Venus OS's own MQTT broker (Settings > Services > MQTT), the alternative to
Modbus TCP. Same Reading, same errors in words, same stale rules: the controller cannot tell
which source fed it.

Venus (dbus-flashmq, 3.20+) publishes `N/<portal id>/...` only while someone keeps it alive:
an empty `R/<portal id>/keepalive` first (everything is sent once), then every 30 s one with
"suppress-republish" (its timeout is 60 s). Values come on change only; `N/<id>/heartbeat`
every 3 s tells "unchanged" from "dead". The system topics `system/0/Ac/Grid/Lx/Power` fall
back to the Multi's AC input (or null) when the grid meter is gone: once the meter's own topic
`grid/<instance>/Ac/Lx/Power` has been seen, it is used, and its disappearance is an error.
"""

import json

import mqttlink
from ticks import ticks_diff, ticks_ms
from venus import Reading

SUPPRESS = b'{"keepalive-options":["suppress-republish"]}'
PHASES = ("L1", "L2", "L3")
INF = float("inf")
# what a broken or hostile payload can raise while being parsed: counted, never fatal
BAD_INPUT = (
    ValueError,
    TypeError,
    UnicodeError,
    KeyError,
    AttributeError,
    RuntimeError,
    MemoryError,
)


class MqttGrid:
    def __init__(self, settings, log=print, client_id="ip22-adapter"):
        """`settings` is the config's "venus" section (protocol mqtt)."""
        self.s = settings
        self.log = log
        self.reading = Reading()
        self.last_error = None
        self.errors = {}
        self.portal = settings["portal_id"] or None
        self.session = mqttlink.Session(
            "venus-mqtt",
            settings["host"],
            settings["mqtt_port"],
            client_id,
            log,
            "",  # Venus ignores the user name; the password is the security profile's
            settings["mqtt_password"],
        )
        self.system = [None, None, None]
        self.meter = [None, None, None]
        self.numbered = 0  # bits: phases seen with a number (system L1-L3, then meter L1-L3)
        self.meter_instance = None  # the grid meter's instance, once its topic was seen
        self.meter_gone = False
        self.keepalive_ms = None
        self.heartbeat_ms = None
        self.changed_ms = None  # when a value last changed
        self.fresh = False  # something arrived since the reading was last computed
        self.on_sample = None  # called on each new sample (the app's control step wakes)
        self.counters = {"messages": 0, "keepalives": 0, "heartbeats": 0}

    def _error(self, kind, detail):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = "%s: %s" % (kind, detail)

    # -- connection -------------------------------------------------------------------------

    def _connected(self, session):
        self.keepalive_ms = None
        if self.portal:
            self._follow(session)
        else:
            session.subscribe("N/+/system/0/Serial")  # the one retained topic: the portal id

    def _follow(self, session):
        p = "N/" + self.portal + "/"
        session.subscribe(p + "system/0/Ac/Grid/+/Power")
        session.subscribe(p + "grid/+/Ac/+/Power")
        session.subscribe(p + "heartbeat")
        session.subscribe(p + "system/0/Dc/Battery/Power")
        self._keepalive(b"")  # empty: Venus sends everything once

    def _keepalive(self, payload):
        if self.session.publish("R/" + self.portal + "/keepalive", payload):
            self.keepalive_ms = ticks_ms()
            self.counters["keepalives"] += 1

    def reconnect(self):
        self.session.close("settings changed")

    async def run(self, beat=None):
        import asyncio

        while True:
            if beat:
                beat()
            self.session.tend(self._connected)
            if self.session.connected:
                for topic, payload in self.session.take():
                    self.counters["messages"] += 1
                    self.handle(topic, payload, ticks_ms())
                if self.portal and (
                    self.keepalive_ms is None
                    or ticks_diff(ticks_ms(), self.keepalive_ms) >= self.s["keepalive_s"] * 1000
                ):
                    self._keepalive(SUPPRESS)
            elif self.session.last_error:
                self.last_error = "connection: %s" % self.session.last_error
            self.update(ticks_ms())
            await asyncio.sleep(0.1)

    # -- messages (pure enough to test without a broker) ------------------------------------

    def handle(self, topic, payload, now):
        try:
            topic = topic.decode() if isinstance(topic, bytes) else topic
            parts = topic.split("/")
            if len(parts) < 3 or parts[0] != "N":
                return
            if not self.portal:
                if parts[2:] == ["system", "0", "Serial"]:
                    value = _value(payload)
                    if _is_portal_id(value):
                        self.portal = value
                        self.log("venus-mqtt: portal id %s" % value)
                        self._follow(self.session)
                return
            if parts[1] != self.portal:
                return
            path = parts[2:]
            if path == ["heartbeat"]:
                self.heartbeat_ms = now
                self.counters["heartbeats"] += 1
                self.fresh = True
            elif path[-1] != "Power":
                return
            elif path == ["system", "0", "Dc", "Battery", "Power"]:
                value = _number(_value(payload)) if payload else None
                self.reading.battery_w = None if value is None else int(round(value))
            elif len(path) == 6 and path[:4] == ["system", "0", "Ac", "Grid"]:
                self._store(self.system, path[4], _value(payload), now)
            elif len(path) == 5 and path[0] == "grid" and path[2] == "Ac":
                if self.meter_instance is not None and path[1] != self.meter_instance:
                    return  # a second meter: the first one seen counts
                if not payload:  # empty: the meter's service has gone
                    if self.meter_instance is not None and not self.meter_gone:
                        self.log("venus-mqtt: grid meter %s gone" % self.meter_instance)
                    self.meter_gone = True
                    self.fresh = True
                    return
                if self.meter_instance is None:
                    self.log("venus-mqtt: grid meter instance %s: using its values" % path[1])
                self.meter_instance = path[1]
                self.meter_gone = False
                self._store(self.meter, path[3], _value(payload), now)
        except BAD_INPUT as err:
            self._error("protocol", "%s: %s" % (topic, err))

    def _store(self, phases, name, value, now):
        if name not in PHASES:
            return
        value = _number(value)
        i = PHASES.index(name)
        if value is not None:
            self.numbered |= 1 << (i + (3 if phases is self.meter else 0))
        if phases[i] != value:
            self.changed_ms = now
        phases[i] = value
        self.fresh = True

    def update(self, now):
        """A new Reading when a value or a heartbeat confirmed the grid power."""
        if not self.fresh:
            return
        self.fresh = False
        if self.meter_gone:
            return self._error(
                "meter", "the grid meter (instance %s) has gone" % (self.meter_instance)
            )
        metered = self.meter_instance is not None
        phases = self.meter if metered else self.system
        source = self.s["source"]
        if source == "sum":
            if all(w is None for w in phases):
                return self._error("null", "no grid power from Venus (no meter?)")
            for i in range(3):  # null after a number is invalid, not 0: the sum would lie
                if phases[i] is None and self.numbered >> (i + 3 * metered) & 1:
                    return self._error("null", "%s null (invalid)" % PHASES[i])
            power = sum(w for w in phases if w is not None)  # a phase never seen reads 0
        else:
            power = phases[PHASES.index(source)]
            if power is None:
                return self._error("null", "no grid power on %s" % source)
        limit = self.s["frozen_s"]
        if (
            limit
            and self.changed_ms is not None
            and ticks_diff(now, self.changed_ms) > limit * 1000
        ):
            return self._error("frozen", "grid value unchanged for %d s" % limit)
        r = self.reading
        r.power_w = int(round(power))
        r.phases = [None if w is None else int(round(w)) for w in phases]
        r.at_ms = r.sampled_ms = now  # pushed as it changes: the sample is this fresh
        r.seq += 1
        self.last_error = None
        if self.on_sample:
            self.on_sample()

    def status(self):
        out = self.reading.status(self.s["source"])
        out.update({
            "protocol": "mqtt",
            "host": "%s:%s" % (self.s["host"], self.s["mqtt_port"]),
            "portal_id": self.portal,
            "meter_check": None if self.meter_instance is None else not self.meter_gone,
            "connected": self.session.connected,
            "last_error": self.last_error,
            "errors": self.errors,
            "reconnects": self.session.counters["connects"],
            "messages": self.counters["messages"],
            "keepalives": self.counters["keepalives"],
            "heartbeats": self.counters["heartbeats"],
        })
        return out


def _is_portal_id(value):
    """A VRM id: letters and digits (MicroPython's str has no isalnum)."""
    if not isinstance(value, str) or not 0 < len(value) <= 32:
        return False
    return all(c.isdigit() or "a" <= c.lower() <= "z" for c in value)


def _number(value):
    """A finite number or None (null); anything else is a protocol error."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError("not a number: %r" % (value,))
    if value is not None and (value != value or value in (INF, -INF)):
        raise ValueError("not a finite number: %r" % (value,))
    return value


def _value(payload):
    """Venus's `{"value": x}`; None for null (invalid or absent)."""
    data = json.loads(payload)
    if not isinstance(data, dict) or "value" not in data:
        raise ValueError("not a Venus value: %r" % (payload[:40],))
    return data["value"]
