"""Grid power straight from the GX's D-Bus (venus.protocol "dbus", the Venus OS service only):
com.victronenergy.system's /Ac/Grid/L1..L3/Power (W, + = import), followed by its signals.
Same Reading, same errors in words, same stale rules as the Modbus and MQTT sources
(firmware/venus.py, venusmqtt.py): the controller cannot tell which source fed it.

systemcalc recomputes once a second and sends what changed as ItemsChanged on `/` (a batch
sends no PropertiesChanged), so that is what we follow; PropertiesChanged too, for a single
change. A value that does not change is not sent: when no signal came for `interval_s`, the
values are read (GetValue), and a read that finds them unchanged is a sample again after a
meter period, as venus.py's polls are.

The meter-dropout trap (venus-notes.md): when the grid meter goes, systemcalc silently
substitutes the Multi's AC input on its next tick. So the com.victronenergy.grid.* services are
watched (NameOwnerChanged, their /Connected): once a meter has been seen, no meter means no
sample, until one is back. A meter never seen leaves the system's value unchecked, as venus.py
does when the meter unit does not answer; `meter_unit` 0 turns the check off, as there.
An invalid value (an empty array) is no sample; a value unchanged for `frozen_s` is stale.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from dbus_charger import BUSITEM, DBUS, add_match, call, unwrap_number
from dbus_next import Message, MessageType
from dbus_next.errors import DBusError
from ticks import ticks_diff, ticks_ms
from venus import Reading

SYSTEM = "com.victronenergy.system"
GRID_PREFIX = "com.victronenergy.grid."
PHASES = ("L1", "L2", "L3")
POWER_PATHS = tuple("/Ac/Grid/%s/Power" % p for p in PHASES)
PHASES_PATH = "/Ac/Grid/NumberOfPhases"
BATTERY_PATH = "/Dc/Battery/Power"  # + = charging, as Modbus 842
READ_PATHS = POWER_PATHS + (PHASES_PATH, BATTERY_PATH)
GRID_PATHS = POWER_PATHS + (PHASES_PATH,)
METER_PERIOD_MS = 1000  # systemcalc's tick: a value read again unchanged sooner is the same one
RETRY_S = 1  # the bus or the first read failed: again this soon
TICK_S = 0.1
# error kinds that prove the GX has no grid value (control holds at once after two in a row);
# a read that timed out proves nothing yet
EVIDENCE = ("bus", "system", "meter", "null", "frozen")
GONE = ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner")


class DbusGrid:
    """The grid source for venus.protocol "dbus": `reading`, `status()`, `on_sample`,
    `failures`, `last_error`, `run(beat)`, `reconnect()`, as venus.Poller has them."""

    def __init__(self, bus: Any, settings: dict, log: Callable[[str], None] = print) -> None:
        """`bus`: a connected dbus-next MessageBus (shared with the charger's service), or None
        to connect one; `settings`: the config's "venus" section."""
        self.bus = bus
        self.s = settings
        self.log = log
        self.reading = Reading()
        self.last_error: str | None = None
        self.errors: dict[str, int] = {}
        self.failures = 0  # updates in a row with proof that the GX has no grid value
        self.on_sample: Callable[[], Any] | None = None
        self.system_owner: str | None = None  # the unique name of com.victronenergy.system
        self.power: list[float | None] = [None, None, None]
        self.numbered = 0  # bits: phases that had a number (invalid after one is no 0)
        self.phase_count: int | None = None  # /Ac/Grid/NumberOfPhases
        self.battery_w: int | None = None
        self.meters: dict[str, dict] = {}  # grid meter name -> {"owner", "connected"}
        self.meter_seen: str | None = None  # the first meter seen: from then on one must be
        self.changed_ms: int | None = None  # when a grid value last changed
        self.heard_ms: int | None = None  # when grid values last came (signal or read)
        self.counters = {"messages": 0, "reads": 0, "reconnects": 0}
        self._ready = False  # rules added and names learnt on this connection
        self._read_now = True
        self._handled: Any = None  # the bus our message handler is on
        self._followed: set[str] = set()  # meter names with match rules on this bus

    # -- errors and the status -------------------------------------------------------------------

    def _fail(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = "%s: %s" % (kind, detail)
        if kind in EVIDENCE:
            self.failures += 1

    def meter_check(self) -> bool | None:
        """None: not checked (off, or no meter seen yet); True: a meter is there; False: the
        meter seen has gone."""
        if not self._checking() or self.meter_seen is None:
            return None
        return self._meter_present()

    def status(self) -> dict:
        out = self.reading.status(self.s["source"])
        out.update({
            "protocol": "dbus",
            "host": "D-Bus %s" % SYSTEM,
            "meter_check": self.meter_check(),
            "meter": self.meter_seen,
            "phases": self.phase_count,
            "connected": bool(self.bus is not None and self.bus.connected
                              and self.system_owner),
            "last_error": self.last_error,
            "errors": self.errors,
            "reads": self.counters["reads"],
            "messages": self.counters["messages"],
            "reconnects": self.counters["reconnects"],
        })
        return out

    def reconnect(self) -> None:
        """New settings: read again now (the source may have changed)."""
        self._read_now = True

    # -- the task ---------------------------------------------------------------------------------

    async def run(self, beat: Callable[[], Any] | None = None) -> None:
        while True:
            if beat:
                beat()
            if not await self._ensure_ready():
                await asyncio.sleep(RETRY_S)
                continue
            if self._read_due(ticks_ms()):
                self._read_now = False
                await self.read_once()
            await asyncio.sleep(TICK_S)

    def _read_due(self, now: int) -> bool:
        """Asked for, or no grid value came (signal or read) for `interval_s`."""
        heard = self.heard_ms
        return (self._read_now or heard is None
                or ticks_diff(now, heard) >= self.s["interval_s"] * 1000)

    async def _ensure_ready(self) -> bool:
        """A bus (our own if the shared one has gone), the match rules, the names."""
        if self.bus is None or not self.bus.connected:
            if self.bus is not None:
                self.counters["reconnects"] += 1
            self._ready = False
            try:
                from dbus_next import BusType
                from dbus_next.aio import MessageBus

                self.bus = await asyncio.wait_for(
                    MessageBus(bus_type=BusType.SYSTEM).connect(), self.s["timeout_s"])
            except Exception as err:  # no socket, refused, auth: all "no bus" to the user
                self.bus = None
                self._fail("bus", "no system D-Bus (%s: %s)" % (type(err).__name__, err))
                return False
        if self._ready:
            return True
        try:
            await self._setup()
        except (DBusError, asyncio.TimeoutError) as err:
            self._fail("bus", "D-Bus set-up: %s" % _why(err))
            return False
        return True

    async def _setup(self) -> None:
        bus = self.bus
        assert bus is not None
        if self._handled is not bus:
            bus.add_message_handler(self._on_message)
            self._handled = bus
            self._followed = set()
        # rules first, then the names and values: nothing that changes in between is missed
        await add_match(bus, "type='signal',sender='%s',interface='%s',member='NameOwnerChanged',"
                        "arg0namespace='com.victronenergy'" % (DBUS, DBUS))
        await add_match(bus, "type='signal',sender='%s',interface='%s',member='ItemsChanged',"
                        "path='/'" % (SYSTEM, BUSITEM))
        await add_match(bus, "type='signal',sender='%s',interface='%s',member='PropertiesChanged'"
                        ",path_namespace='/Ac/Grid'" % (SYSTEM, BUSITEM))
        await add_match(bus, "type='signal',sender='%s',interface='%s',member='PropertiesChanged'"
                        ",path='%s'" % (SYSTEM, BUSITEM, BATTERY_PATH))
        self.system_owner = await self._owner(SYSTEM)
        names = (await call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "ListNames"))[0]
        self.meters = {}
        for name in sorted(n for n in names if n.startswith(GRID_PREFIX)):
            owner = await self._owner(name)
            if owner:
                was = self._meter_present()
                self.meters[name] = {"owner": owner, "connected": None}
                self._meter_changed(was, name)
                await self._follow_meter(name)
        self._ready = True
        self._read_now = True

    async def _owner(self, name: str) -> str | None:
        try:
            return (await call(self.bus, DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner",
                               "s", [name], self.s["timeout_s"]))[0]
        except DBusError as err:
            if err.type in GONE:
                return None
            raise

    async def _follow_meter(self, name: str) -> None:
        """The meter's /Connected: its signals (a batch sends ItemsChanged only), and read."""
        try:
            if name not in self._followed:
                self._followed.add(name)
                await add_match(self.bus, "type='signal',sender='%s',interface='%s',"
                                "member='ItemsChanged',path='/'" % (name, BUSITEM))
                await add_match(self.bus, "type='signal',sender='%s',interface='%s',"
                                "member='PropertiesChanged',path='/Connected'" % (name, BUSITEM))
            value = (await call(self.bus, name, "/Connected", BUSITEM, "GetValue",
                                timeout=self.s["timeout_s"]))[0]
        except (DBusError, asyncio.TimeoutError):
            return  # gone again, or no /Connected: present while its name is there
        self._meter_connected(name, value)

    # -- reading ----------------------------------------------------------------------------------

    async def read_once(self) -> None:
        """GetValue on each path: at the start, and when no signal came for `interval_s`."""
        started = ticks_ms()
        self.counters["reads"] += 1
        if self.system_owner is None:
            self.heard_ms = started
            self._fail("system", "no %s on D-Bus (systemcalc not running?)" % SYSTEM)
            return
        timeout = self.s["timeout_s"]
        replies = await asyncio.gather(
            *(call(self.bus, SYSTEM, p, BUSITEM, "GetValue", timeout=timeout)
              for p in READ_PATHS),
            return_exceptions=True,
        )
        now = ticks_ms()
        self.heard_ms = now
        values = {}
        for path, reply in zip(READ_PATHS, replies):
            if isinstance(reply, asyncio.TimeoutError):
                return self._fail("timeout", "%s %s: no answer in %s s" % (SYSTEM, path, timeout))
            if isinstance(reply, DBusError) and reply.type in GONE:
                return self._fail("system", "%s has gone" % SYSTEM)
            if isinstance(reply, BaseException):
                values[path] = None  # no such path here: invalid
            else:
                values[path] = reply[0]
        self._store(values, now)
        self._evaluate(now, started)

    def _store(self, values: dict, now: int) -> bool:
        """The values of a signal or a read; True if a grid path was among them."""
        grid = False
        for path, value in values.items():
            if path in POWER_PATHS:
                i = POWER_PATHS.index(path)
                number = unwrap_number(value)
                if number is not None:
                    self.numbered |= 1 << i
                if self.changed_ms is None or self.power[i] != number:
                    self.changed_ms = now
                self.power[i] = number
                grid = True
            elif path == PHASES_PATH:
                count = unwrap_number(value)
                self.phase_count = None if count is None else int(count)
                grid = True
            elif path == BATTERY_PATH:
                watts = unwrap_number(value)
                self.battery_w = None if watts is None else int(round(watts))
        return grid

    def _problem(self, now: int) -> tuple[str, str] | None:
        """Why there is no sample now, or None."""
        if self.system_owner is None:
            return "system", "no %s on D-Bus" % SYSTEM
        if self._checking() and not self._meter_present():
            if self.meter_seen is not None:
                return "meter", ("the grid meter (%s) has gone: the system's value would be "
                                 "the Multi's AC input" % self.meter_seen)
        source = self.s["source"]
        if source == "sum":
            if all(w is None for w in self.power):
                return "null", "no grid power from Venus (no meter?)"
            for i in range(3):  # invalid after a number, or within the phase count: not 0
                within = self.phase_count is not None and i < self.phase_count
                if self.power[i] is None and (self.numbered >> i & 1 or within):
                    return "null", "%s invalid" % PHASES[i]
        elif self.power[PHASES.index(source)] is None:
            return "null", "no grid power on %s" % source
        limit = self.s["frozen_s"]
        changed = self.changed_ms
        if limit and changed is not None and ticks_diff(now, changed) > limit * 1000:
            return "frozen", "grid value unchanged for %d s" % limit
        return None

    def _evaluate(self, now: int, read_at: int | None = None) -> None:
        """A sample from the values, unless something says they are no grid reading. A read
        (`read_at`: when it went out) that finds them unchanged within a meter period only
        refreshes the age, as venus.py's polls; a signal is always a new value."""
        problem = self._problem(now)
        if problem:
            return self._fail(*problem)
        source = self.s["source"]
        if source == "sum":
            power = sum(w for w in self.power if w is not None)
        else:
            power = self.power[PHASES.index(source)] or 0.0
        phases = [None if w is None else int(round(w)) for w in self.power]
        r = self.reading
        watts = int(round(power))
        new = (
            read_at is None
            or watts != r.power_w  # the source setting changed
            or phases != r.phases
            or r.sampled_ms is None
            or ticks_diff(read_at, r.sampled_ms) >= METER_PERIOD_MS
            or self.battery_w != r.battery_w
        )
        r.power_w, r.phases, r.at_ms = watts, phases, now
        r.battery_w = self.battery_w
        self.failures = 0
        self.last_error = None
        if new:
            r.sampled_ms = now if read_at is None else read_at
            r.seq += 1
            if self.on_sample:
                self.on_sample()

    # -- the grid meters --------------------------------------------------------------------------

    def _checking(self) -> bool:
        return self.s.get("meter_unit", 30) != 0

    def _meter_present(self) -> bool:
        return any(m["connected"] is not False for m in self.meters.values())

    def _meter_connected(self, name: str, value: Any) -> None:
        meter = self.meters.get(name)
        if meter is None:
            return
        number = unwrap_number(value)
        was = self._meter_present()
        meter["connected"] = None if number is None else number != 0
        self._meter_changed(was, name)

    def _meter_changed(self, was: bool, name: str) -> None:
        """Say it when the meter comes and goes; a meter gone is an error at once."""
        if not self._checking():
            return
        now = self._meter_present()
        if now and not was:
            if self.meter_seen is None:
                self.meter_seen = name
                self.log("venus-dbus: grid meter %s: the system's grid value is checked "
                         "against it" % name)
            else:
                self.log("venus-dbus: grid meter %s is back" % name)
        elif was and not now and self.meter_seen is not None:
            self.log("venus-dbus: grid meter %s gone: no grid data until it is back" % name)
            self._fail("meter", "the grid meter (%s) has gone" % name)

    # -- signals ----------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return None
        if msg.member == "NameOwnerChanged" and msg.interface == DBUS:
            if msg.signature == "sss":
                self._owner_changed(*msg.body)
            return None
        if msg.interface != BUSITEM:
            return None
        values = _changes(msg)
        if values is None:
            return None
        if msg.sender == self.system_owner and self.system_owner is not None:
            self.counters["messages"] += 1
            now = ticks_ms()
            if self._store(values, now):
                self.heard_ms = now
                self._evaluate(now)
            return None
        for name, meter in self.meters.items():
            if meter["owner"] == msg.sender and "/Connected" in values:
                self.counters["messages"] += 1
                self._meter_connected(name, values["/Connected"])
        return None

    def _owner_changed(self, name: str, old: str, new: str) -> None:
        if name == SYSTEM:
            self.system_owner = new or None
            if new:
                self._read_now = True
            else:
                self._fail("system", "%s has gone" % SYSTEM)
        elif name.startswith(GRID_PREFIX):
            was = self._meter_present()
            if new:
                self.meters[name] = {"owner": new, "connected": None}
                asyncio.ensure_future(self._follow_meter(name))
            else:
                self.meters.pop(name, None)
            self._meter_changed(was, name)


def _changes(msg: Message) -> dict | None:
    """{path: value variant} of an ItemsChanged (on `/`) or a PropertiesChanged (on a path)."""
    if msg.member == "ItemsChanged" and msg.path == "/" and msg.signature == "a{sa{sv}}":
        return {p: c["Value"] for p, c in msg.body[0].items() if "Value" in c}
    if msg.member == "PropertiesChanged" and msg.signature == "a{sv}" and "Value" in msg.body[0]:
        return {msg.path: msg.body[0]["Value"]}
    return None


def _why(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "no answer"
    if isinstance(err, DBusError):
        return "%s: %s" % (err.type, err.text)
    return "%s: %s" % (type(err).__name__, err)

