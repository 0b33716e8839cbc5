"""Grid power from Venus OS over Modbus TCP: a pure MBAP/PDU codec, strict about every header
field, and an async poller with reconnect, back-off, counters and the age of the last value.

Registers (Victron's list 3.00): unit 100 (com.victronenergy.system) 820-822 = grid L1-L3, int16
W, positive = import. Optionally the meter's own service (unit 30 by default) 2600-2602, the same
values, to catch the dropout trap: when the meter stops, 820-822 silently read 0.
"""

import asyncio

from ticks import ticks_diff, ticks_ms

GRID_REGISTER = 820
METER_REGISTER = 2600
BATTERY_REGISTER = 842  # the system's battery power, int16 W, positive = charging
MAX_PDU = 253
METER_RETRY_S = 60  # a meter unit that did not answer is asked again this often (and on connect)

# errnos of a connection that never opened; ECONNRESET counts too before the first reply (the
# ESP32's lwIP reports a refused port as a reset at the first write), later it is CLOSED
ECONNREFUSED = 111
ECONNRESET = 104
EHOSTUNREACH = 113
UNIT_MISSING = (10, 11)  # 0x0A gateway path unavailable, 0x0B (older Venus) target failed
REFUSED_HINT = "Modbus TCP is off by default on Venus (Settings > Services > Modbus TCP)"
UNIT_HINT = "unit id %d not found (Settings > Services > Modbus TCP > Available services)"

# error kinds, for the counters and the status
REFUSED = "refused"  # no connection (Modbus TCP off in Venus: Settings > Services)
TIMEOUT = "timeout"
CLOSED = "closed"
PROTOCOL = "protocol"  # a reply that breaks the MBAP/PDU rules
EXCEPTION = "exception"  # a Modbus exception response
STALE = "frozen"  # the value stopped changing
EVIDENCE = (REFUSED, CLOSED, PROTOCOL, EXCEPTION, STALE)  # the GX says it has no value
BACKOFF_MAX_S = 1  # reconnect this often at most apart: tracking again soon after an outage
METER_PERIOD_MS = 1000  # Venus's grid value changes about once a second

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server failure",
    6: "server busy",
    10: "unit id not found (gateway path unavailable)",
    11: "unit id not found (gateway target failed)",
}


class ModbusError(Exception):
    def __init__(self, kind, detail, code=None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.code = code


def build_read(tid, unit, function, address, count):
    """MBAP header + read request PDU (function 3 or 4)."""
    return bytes(
        [
            tid >> 8, tid & 0xFF,  # transaction id
            0, 0,  # protocol id: Modbus
            0, 6,  # length: unit id + 5 PDU bytes
            unit, function,
            address >> 8, address & 0xFF,
            count >> 8, count & 0xFF,
        ]
    )  # fmt: skip


def parse_header(header, tid, unit):
    """Check the 7 MBAP bytes of a reply; the number of PDU bytes that follow."""
    if len(header) != 7:
        raise ModbusError(PROTOCOL, "short MBAP header")
    got_tid = header[0] << 8 | header[1]
    if got_tid != tid:
        raise ModbusError(PROTOCOL, "transaction id %d, expected %d" % (got_tid, tid))
    if header[2] or header[3]:
        raise ModbusError(PROTOCOL, "protocol id %d, not Modbus" % (header[2] << 8 | header[3]))
    length = header[4] << 8 | header[5]
    if not 2 <= length <= MAX_PDU + 1:
        raise ModbusError(PROTOCOL, "length %d out of range" % length)
    if header[6] != unit:
        raise ModbusError(PROTOCOL, "unit id %d, expected %d" % (header[6], unit))
    return length - 1


def parse_pdu(pdu, function, count):
    """The registers of a read reply PDU; ModbusError for an exception or a malformed reply."""
    if not pdu:
        raise ModbusError(PROTOCOL, "empty PDU")
    if pdu[0] == function | 0x80:
        if len(pdu) != 2:
            raise ModbusError(PROTOCOL, "exception reply of %d bytes" % len(pdu))
        code = pdu[1]
        raise ModbusError(EXCEPTION, EXCEPTION_NAMES.get(code, "exception %d" % code), code)
    if pdu[0] != function:
        raise ModbusError(PROTOCOL, "function %d, expected %d" % (pdu[0], function))
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise ModbusError(PROTOCOL, "byte count does not match %d registers" % count)
    return [pdu[2 + 2 * i] << 8 | pdu[3 + 2 * i] for i in range(count)]


def int16(word):
    return word - 0x10000 if word & 0x8000 else word


def grid_power(registers, source):
    """W from the three phase registers: one phase ("L1".."L3") or their sum ("sum")."""
    phases = [int16(w) for w in registers]
    if source == "sum":
        return sum(phases)
    return phases["L1 L2 L3".split().index(source)]


class Reading:
    """The last good grid value: power_w, when it was read, a sequence number that counts new
    values (the controller acts on each new value once)."""

    def __init__(self):
        self.power_w = None
        self.battery_w = None  # the house battery's power (+ = charging); None: not known
        self.phases = None
        self.at_ms = None
        self.sampled_ms = None  # when the meter most likely took it: the charger's draw then
        self.seq = 0  # counts new samples (a value polled again unchanged is not one)

    def age_s(self, now_ms=None):
        if self.at_ms is None:
            return None
        return ticks_diff(ticks_ms() if now_ms is None else now_ms, self.at_ms) / 1000

    def status(self, source):
        """What every grid source's status starts with (Modbus, MQTT, the GX's D-Bus)."""
        return {
            "power_w": self.power_w,
            "phases_w": self.phases,
            "battery_w": self.battery_w,
            "age_s": self.age_s(),
            "source": source,
        }


class Poller:
    """Reads grid power every `interval_s` (start to start); one connection kept, reopened
    with back-off. Polled faster than the meter updates, a value that comes back unchanged
    is the same sample: the controller acts on new ones, as soon as they arrive."""

    def __init__(self, settings, log=print):
        """`settings` is the config's "venus" section."""
        self.s = settings
        self.log = log
        self.reading = Reading()
        self.tid = 0
        self.counters = {"reads": 0, "ok": 0, "reconnects": 0, "latency_ms": None}
        self.errors = {}
        self.last_error = None
        self.failures = 0  # polls in a row that failed with proof: refused, reset, exception
        self.meter = None  # the meter cross-check: None unknown, True in use, False absent
        self._meter_unit = None  # the unit self.meter is about
        self._meter_asked = None  # when an absent meter was last asked; None: ask now
        self._answered = False  # this connection has given a reply
        self._reader = None
        self._writer = None
        self._same_since = None
        self._beat = None  # the watchdog feed, also between the (up to two) reads of a poll
        self.on_sample = None  # called on each new sample (the app's control step wakes)

    def _count_error(self, err):
        self.errors[err.kind] = self.errors.get(err.kind, 0) + 1
        self.last_error = "%s: %s" % (err.kind, err.detail)
        if err.kind in EVIDENCE:  # a silent GX proves nothing yet: it waits for stale_s
            self.failures += 1

    async def _connect(self):
        """Bounded: a GX that is off drops the SYN, and the watchdog must still be fed."""
        s = self.s
        try:
            opening = asyncio.open_connection(s["host"], s["port"])
            self._reader, self._writer = await asyncio.wait_for(opening, s["timeout_s"])
        except asyncio.TimeoutError:
            detail = "%s:%s: no connection in %s s" % (s["host"], s["port"], s["timeout_s"])
            raise ModbusError(TIMEOUT, detail) from None
        except OSError as err:
            raise self._os_error(err) from None
        self._answered = False
        self._meter_asked = None  # a fresh connection: ask an absent meter again

    def _os_error(self, err):
        """REFUSED (with the hint the user needs) or CLOSED, from a socket error."""
        code = err.args[0] if err.args else None
        where = "%s:%s: " % (self.s["host"], self.s["port"])
        if code == ECONNREFUSED or (code == ECONNRESET and not self._answered):
            return ModbusError(REFUSED, where + REFUSED_HINT)
        return ModbusError(REFUSED if code == EHOSTUNREACH else CLOSED, where + str(err))

    def _close(self):
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
        self._reader = self._writer = None

    def reconnect(self):
        self._close()

    async def read(self, unit, address, count):
        """One request and its reply, strictly checked."""
        reader, writer = self._reader, self._writer  # reconnect() may close them meanwhile
        if reader is None or writer is None:
            raise ModbusError(CLOSED, "not connected")
        self.tid = (self.tid + 1) & 0xFFFF
        function = self.s["function"]
        writer.write(build_read(self.tid, unit, function, address, count))
        await writer.drain()
        header = await reader.readexactly(7)
        self._answered = True
        pdu = await reader.readexactly(parse_header(header, self.tid, unit))
        return parse_pdu(pdu, function, count)

    async def _timed(self, unit, address, count):
        if self._beat:
            self._beat()
        try:
            return await asyncio.wait_for(self.read(unit, address, count), self.s["timeout_s"])
        except asyncio.TimeoutError:
            raise ModbusError(TIMEOUT, "no reply in %s s" % self.s["timeout_s"]) from None
        except EOFError:
            raise ModbusError(CLOSED, "connection closed by Venus") from None
        except OSError as err:
            # MicroPython's open_connection reports a refused port only at the first I/O
            raise self._os_error(err) from None
        except ModbusError as err:
            if err.code in UNIT_MISSING:
                err.detail = UNIT_HINT % unit
            raise

    async def poll_once(self):
        """Read the grid (and the meter); update the reading or raise ModbusError."""
        self.counters["reads"] += 1
        start = ticks_ms()
        regs = await self._timed(self.s["unit"], GRID_REGISTER, 3)
        meter_unit = self.s["meter_unit"]
        if meter_unit != self._meter_unit:  # changed settings: learn the new unit afresh
            self.meter, self._meter_unit, self._meter_asked = None, meter_unit, None
        if meter_unit and self._ask_meter(start):
            try:
                meter = await self._timed(meter_unit, METER_REGISTER, 3)
            except ModbusError as err:
                if err.kind != EXCEPTION or self.meter:
                    raise ModbusError(
                        err.kind, "grid meter (unit %d): %s" % (meter_unit, err.detail)
                    )
                if self.meter is None:
                    self.log("no grid meter on unit %d: 820-822 unchecked for now" % meter_unit)
                self.meter = False  # not (yet) there: in a dropout, or the GX is starting
                self._meter_asked = start
            else:
                if not self.meter:
                    self.log("grid meter on unit %d answers: cross-checking" % meter_unit)
                self.meter = True
                regs = meter  # the meter's own values: no silent fallback to 0
        battery = await self._battery()
        self.counters["latency_ms"] = ticks_diff(ticks_ms(), start)
        power = grid_power(regs, self.s["source"])
        self._check_frozen(regs)
        r = self.reading
        phases = [int16(w) for w in regs]
        new = (
            phases != r.phases
            or r.sampled_ms is None
            or ticks_diff(start, r.sampled_ms) >= METER_PERIOD_MS
            or battery != r.battery_w
        )
        r.power_w, r.phases, r.at_ms = power, phases, ticks_ms()
        r.battery_w = battery
        self.failures = 0
        self.counters["ok"] += 1
        self.last_error = None
        if new:
            # the meter took it up to a period before; matched to the charger's draw when the
            # poll went out (on the bench, better than the period's middle: docs/development.md,
            # "The real-time bench")
            r.sampled_ms = start
            r.seq += 1
            if self.on_sample:
                self.on_sample()

    async def _battery(self):
        """The house battery's power, for the controller's guard against charging from it
        (ESS); None where this Venus answers with an exception."""
        try:
            regs = await self._timed(self.s["unit"], BATTERY_REGISTER, 1)
        except ModbusError as err:
            if err.kind != EXCEPTION:
                raise
            return None
        return int16(regs[0])

    def _ask_meter(self, now):
        """A meter seen or unknown is read each time; an absent one now and then, since a
        firmware that starts during a dropout must not trust 820-822 for good."""
        asked = self._meter_asked
        return (
            self.meter is not False
            or asked is None
            or ticks_diff(now, asked) >= METER_RETRY_S * 1000
        )

    def _check_frozen(self, regs):
        """A real meter's value moves by a watt now and then; one that does not is stuck."""
        limit = self.s["frozen_s"]
        now = ticks_ms()
        same = self.reading.phases == [int16(w) for w in regs]
        if not same or self._same_since is None:
            self._same_since = now
            return
        if limit and ticks_diff(now, self._same_since) > limit * 1000:
            raise ModbusError(STALE, "grid value unchanged for %d s" % limit)

    async def run(self, beat=None):
        self._beat = beat
        delay = 1
        while True:
            if beat:
                beat()
            if self._writer is None:
                try:
                    await self._connect()
                except ModbusError as err:
                    self._count_error(err)
                    await self._sleep(delay, beat)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
            started = ticks_ms()
            try:
                await self.poll_once()
                delay = 1
            except ModbusError as err:
                self._count_error(err)
                if err.kind in (REFUSED, CLOSED, TIMEOUT, PROTOCOL):
                    self._close()  # a fresh connection: no half-read reply left behind
                    self.counters["reconnects"] += 1
                    await self._sleep(delay, beat)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
            spent = ticks_diff(ticks_ms(), started) / 1000
            await asyncio.sleep(max(0.05, self.s["interval_s"] - spent))

    async def _sleep(self, seconds, beat):
        for _ in range(seconds):
            if beat:
                beat()
            await asyncio.sleep(1)

    def status(self):
        out = self.reading.status(self.s["source"])
        out.update({
            "host": "%s:%s" % (self.s["host"], self.s["port"]),
            "unit": self.s["unit"],
            "meter_check": self.meter,
            "connected": self._writer is not None,
            "last_error": self.last_error,
            "reads": self.counters["reads"],
            "ok": self.counters["ok"],
            "errors": self.errors,
            "reconnects": self.counters["reconnects"],
            "latency_ms": self.counters["latency_ms"],
        })
        return out
