"""The virtual Blue Smart IP22: the header's byte stream (text blocks and the async HEX stream as
the real charger sends them), answers to HEX requests, register semantics, and faults.

Time is simulated: every method takes `now` in seconds, so tests can run minutes in
milliseconds. The frames are built and parsed with firmware/vedirect.py and firmware/ip22.py.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from tools.sim import ip22text, v
from tools.sim.physics import STARTING, Battery, ChargerPhysics

WIRE_BYTES_PER_S = 1920  # 19200 baud, 8N1
ASYNC_PERIOD_S = 0.1  # the 0x2009/0x200E pair, about ten times a second
NETWORKED_AFTER_S = 10.0  # 0x200E goes 0x01 -> 0x21 about 10 s after power-up
LINK_TIMEOUT_S = 60.0  # volatile link registers fall back without a refresh
FRAMING_ERROR = v.frame(v.ERROR, b"\xaa\xaa")  # ":4AAAAFD": the answer to a garbled frame
APP_VERSION = 0x4342  # type bits 01 (application), version 3.42, as MPPTs encode it

FLAG_OK = 0
STAGE_OFF = 0
STAGE_FAULT = 2


@dataclass
class ChargerOptions:
    """What the notes leave open, chosen per run (see vedirect-ip22-notes.md section 5)."""

    model: int = 0xA334
    below_min: str = (
        "reject"  # "reject": flags 0x04 and the value in force; "clamp": store the minimum
    )
    # 0x2015 + 0x200E: "supported", "absent" (flags 0x01), or "ignored" (confirmed, no effect)
    volatile: str = "supported"
    volatile_zero: str = "off"  # 0x2015 = 0: "off", "reject" (flags 0x04) or "clamp" (minimum)
    ping: bool = True  # False: ping is answered ":3" (unknown command), get/set still work
    true_min_a: float | None = None  # the minimum it really applies (None: 25 % of rated)
    device_mode: str = "supported"  # 0x0200 on=1/off=4: "supported" or "absent"
    min_register: bool = True  # whether 0xEDC8 exists (else: "unknown id")
    serial: str = "HQ2230XY6XR"
    firmware: str = "0342FF"
    history_clear: int = 1105659  # HC#

    def __post_init__(self) -> None:
        if ip22text.product(self.model) is None:
            raise ValueError("unknown IP22 product id 0x%04X" % self.model)
        for name, value, allowed in (
            ("below_min", self.below_min, ("reject", "clamp")),
            ("volatile", self.volatile, ("supported", "absent", "ignored")),
            ("volatile_zero", self.volatile_zero, ("off", "reject", "clamp")),
            ("device_mode", self.device_mode, ("supported", "absent")),
        ):
            if value not in allowed:
                raise ValueError("%s must be one of %s" % (name, ", ".join(allowed)))


@dataclass
class ChargerFaults:
    """Faults on the charger side, settable at start or at run time."""

    corrupt: float = 0.0  # share of bytes on the wire that arrive altered
    drop: float = 0.0  # share of bytes on the wire that are lost
    silent_until: float = 0.0  # sim time until which the line carries nothing
    no_replies: bool = False  # HEX requests are ignored
    reply_delay_s: float = 0.0  # slow replies
    reply_jitter_s: float = 0.0  # and up to this much more, at random, per reply
    text_pause_s: float = 0.0  # older firmware: no text until this long after the last HEX frame
    error: int = 0  # an ERR code (e.g. 2 battery voltage too high): CS 2 "fault", no output


@dataclass
class Counters:
    nvm_writes: int = 0  # every set of a stored (NVM) setting
    nvm_changes: int = 0  # sets that changed the stored value
    requests: int = 0
    bad_requests: int = 0
    replies: int = 0
    bytes_out: int = 0
    bytes_corrupted: int = 0
    bytes_dropped: int = 0
    reboots: int = 0


@dataclass
class Link:
    """The volatile network registers written by a host (0x200E, 0x2015)."""

    mode: int | None = None
    mode_at: float = -1e9
    limit: int | None = None  # 0.1 A
    limit_at: float = -1e9

    def active_limit(self, now: float) -> int | None:
        fresh = now - self.mode_at < LINK_TIMEOUT_S and now - self.limit_at < LINK_TIMEOUT_S
        if fresh and self.mode is not None and self.mode & 0x01 and self.limit is not None:
            return self.limit
        return None


class VirtualIP22:
    def __init__(
        self,
        options: ChargerOptions | None = None,
        battery: Battery | None = None,
        faults: ChargerFaults | None = None,
        now: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.options = options or ChargerOptions()
        model, volts, rated, outputs = ip22text.product(self.options.model)
        self.model_name = model
        self.rated_raw = rated * 10
        self.outputs = outputs
        self.min_raw = self.rated_raw // 4  # 25 % of rated, as four independent sources hint
        if self.options.true_min_a is not None:
            self.min_raw = round(self.options.true_min_a * 10)
        # what 0xEDC8 reports: 25 % even when the charger really applies more (notes 4.2)
        self.reported_min_raw = self.rated_raw // 4
        self.physics = ChargerPhysics(rated_a=rated, battery=battery or Battery(nominal_v=volts))
        self.faults = faults or ChargerFaults()
        self.counters = Counters()
        self.rng = random.Random(seed)
        self.parser = v.Parser()
        self.sets: deque[tuple[float, int, bytes]] = deque(maxlen=1000)  # (t, register, value)
        self.stored_limit = self.rated_raw  # 0xEDF0, in flash: survives a reboot
        self.on = True  # 0x0200
        self.mains = True  # the charger's AC supply (a smart plug may cut it)
        self._queue: deque[bytes] = deque()
        self._sending = b""
        self._replies: list[tuple[float, bytes]] = []
        self._wire_budget = 0.0
        self._last = now
        self._last_hex_in = -1e9
        self._boot(now)

    # -- state ---------------------------------------------------------------------------

    def _boot(self, now: float) -> None:
        self.boot_at = now
        self.link = Link()
        self.networked = False
        self._next_async = now
        self._next_block = now + 1.0
        self._last_reported: dict[int, bytes] = {}
        self.physics.restart()
        self.physics.set_enabled(self.on)

    def reboot(self, now: float) -> None:
        """Power cycle: uptime from 0, 0x200E back to 0x01, volatile link values lost."""
        self.counters.reboots += 1
        self._queue.clear()
        self._sending = b""
        self._replies.clear()
        self._boot(now)

    def set_mains(self, on: bool, now: float) -> None:
        """Cut or restore the AC supply: off is silence and no output; on is a power-up."""
        if on and not self.mains:
            self.mains = True
            self.reboot(now)
        elif not on and self.mains:
            self.mains = False
            self.physics.set_enabled(False)
            self._queue.clear()
            self._sending = b""
            self._replies.clear()

    @property
    def ac_w(self) -> float:
        return self.physics.ac_w if self.mains else 0.0

    def uptime(self, now: float) -> int:
        return int(now - self.boot_at)

    def effective_limit_raw(self, now: float) -> int:
        volatile = self.link.active_limit(now)
        return self.stored_limit if volatile is None else min(volatile, self.stored_limit)

    @property
    def state_code(self) -> int:
        if self.faults.error:
            return STAGE_FAULT
        if not self.on:
            return STAGE_OFF
        return self.physics.stage

    def off_reason(self) -> int:
        return 0x0004 if not self.on else 0  # soft switch

    def network_mode(self, now: float) -> int:
        if self.link.mode is not None and now - self.link.mode_at < LINK_TIMEOUT_S:
            return self.link.mode
        return 0x21 if self.networked else 0x01

    # -- registers -----------------------------------------------------------------------

    def _register_bytes(self, reg: int, now: float) -> bytes | None:
        """The value of a register as the charger would send it; None = unknown id."""
        ph = self.physics
        pid = self.options.model
        volatile = self.options.volatile != "absent"
        values: dict[int, Any] = {
            0x0100: bytes([0]) + v.pack("un16", pid) + b"\xff",
            0x0102: bytes([0]) + bytes.fromhex(self.options.firmware.rjust(6, "0"))[::-1],
            0x010A: self.options.serial.encode() + b"\x00",
            0x0120: ("un32", self.uptime(now)),
            0x0140: ("un32", 0x00000000),
            # bit 0: the device has no off mode; bit 3: the device is an AC charger
            0x0143: ("un32", 0x08 | (0x01 if self.options.device_mode == "absent" else 0)),
            0x0201: ("un8", self.state_code),
            0x0207: ("un32", self.off_reason()),
            0x2001: ("un16", round(ph.target_voltage * 100)),
            0x2009: ("un8", 0),
            0x200D: ("un16", 0x0008 if self.networked else 0),
            0x200E: ("un8", self.network_mode(now)),
            0xED8C: ("sn32", round(ph.current_a * 100) * 10),
            0xED8D: ("sn16", round(ph.voltage * 100)),
            0xED8F: ("sn16", round(ph.current_a * 10)),
            0xEDD5: ("un16", round(ph.voltage * 100)),
            0xEDD7: ("sn16", round(ph.current_a * 10)),
            0xEDDA: ("un8", self.faults.error),
            0xEDDB: ("sn16", round(ph.battery.temperature_c * 10) * 10),
            0xEDDE: ("un8", self.outputs),
            0xEDDF: ("un16", self.rated_raw),
            0xEDF0: ("un16", self.stored_limit),
            0xEDF1: ("un8", 0xFF),
            0xEE16: ("un16", None),
        }
        if self.options.min_register:
            values[0xEDC8] = ("un16", self.reported_min_raw)
        if self.options.device_mode == "supported":
            values[0x0200] = ("un8", 1 if self.on else 4)
        if volatile:
            values[0x2015] = ("un16", self.link.active_limit(now))
        value = values.get(reg)
        if value is None:
            return None
        if isinstance(value, bytes):
            return value
        return v.pack(*value)

    def _set(self, reg: int, raw: bytes, now: float) -> tuple[int, bytes]:
        """Apply a set; (flags, value now in force)."""
        current = self._register_bytes(reg, now)
        if current is None:
            return v.FLAG_UNKNOWN_ID, b""
        if reg == 0xEDF0:
            return self._set_stored_limit(raw, now)
        if reg == 0x0200 and self.options.device_mode == "supported":
            if raw not in (b"\x01", b"\x04"):
                return v.FLAG_PARAMETER_ERROR, current
            self.on = raw == b"\x01"
            self.physics.set_enabled(self.on)
            return FLAG_OK, raw
        if reg == 0x200E and self.options.volatile != "absent":
            if len(raw) != 1:
                return v.FLAG_PARAMETER_ERROR, current
            self.link.mode, self.link.mode_at = raw[0], now
            return FLAG_OK, raw
        if reg == 0x2015 and self.options.volatile != "absent":
            if len(raw) != 2:
                return v.FLAG_PARAMETER_ERROR, current
            value = v.unpack("un16", raw)  # 0xFFFF releases the limit
            if value == 0 and self.options.volatile_zero == "reject":
                return v.FLAG_PARAMETER_ERROR, current
            if value == 0 and self.options.volatile_zero == "clamp":
                value, raw = self.min_raw, v.pack("un16", self.min_raw)
            if value and value < self.min_raw and self.options.true_min_a is not None:
                if self.options.below_min == "reject":  # a stricter minimum than 25 %
                    return v.FLAG_PARAMETER_ERROR, current
                value, raw = self.min_raw, v.pack("un16", self.min_raw)
            if self.options.volatile == "ignored":
                return FLAG_OK, raw  # confirmed, and then not applied
            self.link.limit, self.link.limit_at = value, now
            return FLAG_OK, raw
        return v.FLAG_NOT_SUPPORTED, current

    def _set_stored_limit(self, raw: bytes, now: float) -> tuple[int, bytes]:
        if len(raw) != 2:
            return v.FLAG_PARAMETER_ERROR, v.pack("un16", self.stored_limit)
        asked = v.unpack("un16", raw, sentinel=False)
        value = min(max(asked, self.min_raw), self.rated_raw)
        if value != asked and self.options.below_min == "reject":
            return v.FLAG_PARAMETER_ERROR, v.pack("un16", self.stored_limit)
        self.counters.nvm_writes += 1
        if value != self.stored_limit:
            self.counters.nvm_changes += 1
        self.stored_limit = value
        return FLAG_OK, v.pack("un16", value)

    def answer(self, ev: v.HexFrame, now: float) -> bytes | None:
        """The reply to one valid request frame, or None (restart, enter boot)."""
        code = ev.code
        if code == v.PING and not self.options.ping:
            return v.frame(v.UNKNOWN, v.pack("un16", code))
        if code == v.PING:
            return v.frame(v.PING_REPLY, v.pack("un16", APP_VERSION))
        if code == v.APP_VERSION:
            return v.frame(v.DONE, v.pack("un16", APP_VERSION))
        if code == v.PRODUCT_ID:
            return v.frame(v.DONE, v.pack("un16", self.options.model))
        if code == v.RESTART:
            self.reboot(now)
            return None
        if code == 0:  # enter boot: never on a charger in use
            return None
        if code == v.GET:
            reg = ev.register
            value = self._register_bytes(reg, now)
            head = v.pack("un16", reg)
            if value is None:
                return v.frame(v.GET, head + bytes([v.FLAG_UNKNOWN_ID]))
            return v.frame(v.GET, head + b"\x00" + value)
        if code == v.SET:
            reg = ev.register
            self.sets.append((now, reg, ev.raw))
            flags, value = self._set(reg, ev.raw, now)
            return v.frame(v.SET, v.pack("un16", reg) + bytes([flags]) + value)
        return v.frame(v.UNKNOWN, v.pack("un16", code))

    # -- bytes in ------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the host (the header's RX pin)."""
        for ev in self.parser.feed(data, int(now * 1000)):
            if ev.kind != "hex":
                continue
            self.counters.requests += 1
            if not ev.ok:
                self.counters.bad_requests += 1
                reply: bytes | None = FRAMING_ERROR
            else:
                self._last_hex_in = now
                reply = self.answer(ev, now)
            if reply is not None and not self.faults.no_replies:
                delay = self.faults.reply_delay_s + self.rng.uniform(0, self.faults.reply_jitter_s)
                self._replies.append((now + delay, reply))

    # -- bytes out -----------------------------------------------------------------------

    def text_block(self, now: float) -> bytes:
        ph = self.physics
        fields = [
            (b"PID", b"0x%04X" % self.options.model),
            (b"FWE", self.options.firmware.encode()),
            (b"SER#", self.options.serial.encode()),
            (b"V", b"%d" % (round(ph.voltage * 100) * 10)),  # 10 mV steps
            (b"I", b"%d" % (round(ph.current_a * 10) * 100)),  # 100 mA steps, as observed
            (b"T", b"---"),
            (b"ERR", b"%d" % self.faults.error),
            (b"CS", b"%d" % self.state_code),
            (b"HC#", b"%d" % self.options.history_clear),
        ]
        body = b"".join(b"\r\n" + k + b"\t" + val for k, val in fields) + b"\r\nChecksum\t"
        return body + bytes([(-sum(body)) & 0xFF])

    def _async(self, reg: int, now: float) -> bytes:
        value = self._register_bytes(reg, now)
        assert value is not None
        return v.frame(v.ASYNC, v.pack("un16", reg) + b"\x00" + value)

    def _on_change(self, regs: tuple[int, ...], now: float) -> list[bytes]:
        out = []
        for reg in regs:
            value = self._register_bytes(reg, now)
            if self._last_reported.get(reg) != value:
                self._last_reported[reg] = value
                out.append(self._async(reg, now))
        return out

    def _generate(self, now: float) -> None:
        """Queue what the charger sends by `now`: async pairs, and each second a block."""
        while self._next_async <= now:
            t = self._next_async
            if not self.networked and t - self.boot_at >= NETWORKED_AFTER_S:
                self.networked = True
                for reg in (0x200D, 0x200E, 0x2001, 0x200C, 0x2007, 0x2008, 0x2042, 0x2013):
                    if reg in (0x200C, 0x2007, 0x2008, 0x2042, 0x2013):
                        self._queue.append(self._link_burst(reg, t))
                    else:
                        self._queue.append(self._async(reg, t))
            self._queue.append(self._async(0x2009, t))
            self._queue.append(self._async(0x200E, t))
            self._next_async += ASYNC_PERIOD_S
        while self._next_block <= now:
            t = self._next_block
            if t - self._last_hex_in >= self.faults.text_pause_s:
                self._queue.append(self.text_block(t))
            self._queue.append(self._async(0x0120, t))
            self._queue.append(self._async(0xEE16, t))
            changed = (0x0201, 0x0207, 0xEDDA, 0xED8D, 0xEDD5, 0xED8C, 0xED8F, 0xEDD7, 0xEDDB)
            self._queue.extend(self._on_change(changed, t))
            self._next_block += 1.0

    def _link_burst(self, reg: int, now: float) -> bytes:
        """The link values an IP22 sends once when it becomes networked (capture, 2.8)."""
        values = {
            0x200C: ("un8", None),
            0x2007: ("un32", int(self.physics.stage_time_s * 1000)),
            0x2008: ("un16", 0),
            0x2042: ("un16", round(self.physics.absorption_h * 100)),
            0x2013: ("sn32", None),
        }
        return v.frame(v.ASYNC, v.pack("un16", reg) + b"\x00" + v.pack(*values[reg]))

    def _on_wire(self, data: bytes, now: float) -> bytes:
        """What survives the line: silence, dropped and corrupted bytes."""
        if now < self.faults.silent_until:
            return b""
        if not self.faults.corrupt and not self.faults.drop:
            return data
        out = bytearray()
        for b in data:
            if self.rng.random() < self.faults.drop:
                self.counters.bytes_dropped += 1
                continue
            if self.rng.random() < self.faults.corrupt:
                b ^= 1 << self.rng.randrange(8)
                self.counters.bytes_corrupted += 1
            out.append(b)
        return bytes(out)

    def poll(self, now: float) -> bytes:
        """Advance to `now` and return the bytes that crossed the wire since the last poll,
        at most 1 920 per second of simulated time."""
        dt = max(0.0, now - self._last)
        self._last = now
        if not self.mains:
            self._next_async = self._next_block = now + 1.0
            self.boot_at = now
            return b""
        self.physics.limit_a = 0 if self.faults.error else self.effective_limit_raw(now) / 10
        self.physics.step(dt)
        self._generate(now)
        due = [r for r in self._replies if r[0] <= now]
        if due:
            self._replies = [r for r in self._replies if r[0] > now]
            # a reply waits for the frame on the wire, then goes before the queued async ones
            for _, reply in reversed(due):
                self._queue.appendleft(reply)
            self.counters.replies += len(due)
        self._wire_budget = min(self._wire_budget + dt * WIRE_BYTES_PER_S, 2 * WIRE_BYTES_PER_S)
        out = bytearray()
        while self._wire_budget >= 1:
            if not self._sending:
                if not self._queue:
                    self._wire_budget = min(self._wire_budget, 64)  # idle line: no backlog
                    break
                self._sending = self._queue.popleft()
            n = min(len(self._sending), int(self._wire_budget))
            out += self._sending[:n]
            self._sending = self._sending[n:]
            self._wire_budget -= n
        self.counters.bytes_out += len(out)
        return self._on_wire(bytes(out), now)

    def status(self, now: float) -> dict[str, Any]:
        ph = self.physics
        return {
            "model": self.model_name,
            "pid": "0x%04X" % self.options.model,
            "uptime_s": self.uptime(now),
            "on": self.on,
            "state": ip22text.state_name(self.state_code),
            "voltage_v": round(ph.voltage, 2),
            "current_a": round(ph.current_a, 2),
            "stored_limit_a": self.stored_limit / 10,
            "volatile_limit_a": (lambda x: None if x is None else x / 10)(
                self.link.active_limit(now)
            ),
            "effective_limit_a": self.effective_limit_raw(now) / 10,
            "ac_w": round(self.ac_w, 1),
            "mains": self.mains,
            "soc": round(ph.battery.soc, 4),
            "options": self.options.__dict__,
            "faults": self.faults.__dict__,
            "counters": self.counters.__dict__,
            "starting": ph.stage == STARTING,
        }
