"""The link to the charger: the only writer to the UART.

Bytes -> vedirect.Parser -> ChargerState. One HEX request in flight at a time, matched to its
reply by code and register, retried, then counted as a failure. `set_current()` and
`set_charging()` are the only ways to change the charger; the state shows what the charger
*confirmed*, never what was asked. Stored settings (0xEDF0, in the charger's flash) are written
only under a WriteBudget; the volatile limit 0x2015 is used instead when the charger has it.
"""

import asyncio

import cold
import ip22
import vedirect
from ticks import ticks_diff, ticks_ms, ticks_us, us_diff

REPLY_TIMEOUT_S = 1.0
RETRIES = 2  # tries after the first, for a request without an answer
LINK_TIMEOUT_MS = 3000  # no valid frame (text or HEX) for this long: the link is down
HEX_FRESH_MS = 2500  # text values lag the async HEX ones; prefer HEX this long
NETWORK_MODE_EXTERNAL = 0x05  # 0x200E: networked + external control (never 0x09, the BMS bit)
EXTERNAL_CONTROL_BIT = 0x04  # an async 0x200E without it: the charger dropped our mode
SERIAL_REG = 0x010A
DAY_MS = 24 * 3600 * 1000
READ_BUFFER = 256
PROBE_RETRY_MS = 30000  # a charger that does not answer HEX is asked again this often
REREAD_MS = 60000  # on/off and the stored limit are read back this often (VictronConnect may
# change them through the charger's Bluetooth module, which shares the line)
IGNORED_MS = 30000  # the current above a confirmed 0x2015 this long: the charger ignores it
MIN_STEP_A = 1.0  # a refused value below the minimum raises the learned minimum by this

_REPLY_RETRY = "retry"  # the charger saw a garbled frame (":4AAAAFD"): send again


class WriteBudget:
    """How often a stored setting may be written: skip unchanged values and changes inside the
    deadband, space increases by a minimum interval (from the last increase), cap writes per
    24 h. Decreases skip the interval (they are what failing safe needs) but not the cap."""

    def __init__(self, deadband, min_interval_s, daily_max):
        self.deadband = deadband
        self.min_interval_ms = min_interval_s * 1000
        self.daily_max = daily_max
        self.recent = []  # ticks of the writes of the last 24 h (at most daily_max)
        self.last_ms = None

    def check(self, stored, wanted, now_ms):
        """None if a write of `wanted` over `stored` is allowed now, else the reason."""
        self._expire(now_ms)
        if stored is not None:
            change = wanted - stored
            if abs(change) < 0.05:
                return "unchanged"
            if abs(change) < self.deadband:
                return "within the %.1f A deadband" % self.deadband
            increase = change > 0
        else:
            increase = True
        if len(self.recent) >= self.daily_max:
            return "daily limit of %d stored writes reached" % self.daily_max
        if increase and self.last_ms is not None:
            wait = self.min_interval_ms - ticks_diff(now_ms, self.last_ms)
            if wait > 0:
                return "next increase allowed in %d s" % ((wait + 999) // 1000)
        return None

    def increase_wait_ms(self, now_ms):
        """Until a stored increase is allowed (0: now)."""
        if self.last_ms is None:
            return 0
        return max(0, self.min_interval_ms - ticks_diff(now_ms, self.last_ms))

    def full(self, now_ms):
        self._expire(now_ms)
        return len(self.recent) >= self.daily_max

    def record(self, now_ms, spaced=True):
        """One write; `spaced`: an increase, which the next increase waits for (a decrease or
        a switch by 0x0200 counts against the day, not against the spacing)."""
        if spaced:
            self.last_ms = now_ms
        self.recent.append(now_ms)
        self._expire(now_ms)

    def _expire(self, now_ms):
        while self.recent and ticks_diff(now_ms, self.recent[0]) >= DAY_MS:
            self.recent.pop(0)

    def used_24h(self, now_ms):
        self._expire(now_ms)
        return len(self.recent)


class ChargerState:
    """What the charger told us. None = not known (yet)."""

    def __init__(self):
        self.pid = None
        self.model = None
        self.firmware = None
        self.serial = None
        self.voltage_v = None
        self.current_a = None
        self.current_ms = None  # when the current was reported
        self.state = None  # CS / 0x0201 code
        self.error = None  # ERR / 0xEDDA code
        self.off_reason = None  # 0x0207 bits
        self.temperature_c = None
        self.uptime_s = None
        self.stored_limit_a = None  # 0xEDF0 as confirmed
        self.volatile_limit_a = None  # 0x2015 as confirmed (None: not in use)
        self.min_a = None
        self.max_a = None
        self.rated_a = None
        self.outputs = None
        self.capabilities4 = None  # 0x0143: bit 0 = no off mode, bit 3 = AC charger
        self.volatile = None  # 0x2015 path: None unknown, True works, False absent
        self.volatile_off = None  # 0x2015 = 0 switches off: None untried, True, False
        self.device_mode = None  # 0x0200 on/off: None unknown, True works, False absent
        self.hex_answers = None  # does the charger answer HEX requests at all?
        self.charging = None  # True/False as confirmed by 0x0200 or 0x2015
        self.last_frame_ms = None
        self.probed = False

    @property
    def limit_a(self):
        """The limit in force: min(volatile, stored), as the charger applies it."""
        if self.volatile_limit_a is not None and self.stored_limit_a is not None:
            return min(self.volatile_limit_a, self.stored_limit_a)
        return self.stored_limit_a


class Link:
    def __init__(self, open_port, settings, log=print, persisted_writes=0, zero_off=None):
        """`open_port()` -> a port with async readinto(buf), write(data), async drain(),
        close(). `settings` is the config's "charger" section. `zero_off`: {serial: bool},
        what 0x2015 = 0 did on chargers seen before (it is asked once per charger, ever)."""
        self.open_port = open_port
        self.settings = settings
        self.log = log
        self.state = ChargerState()
        self.parser = vedirect.Parser()
        self.read_only = False  # safe mode: look, never touch
        self._named = {}  # (kind, code) -> words: see names()
        self.budget = WriteBudget(
            settings["stored_deadband_a"],
            settings["stored_min_interval_s"],
            settings["stored_daily_max"],
        )
        self.stored_writes = persisted_writes  # every 0xEDF0/0x0200 write, ever
        self.counters = {
            "commands": 0,
            "confirmed": 0,
            "refused": 0,
            "timeouts": 0,
            "failures": 0,
            "skipped_writes": 0,
            "reconnects": 0,
        }
        self.last_skip = None  # why the last stored write was not made
        self.busy_us = 0  # time spent parsing, for the CPU share
        self.desired_current = None  # what the controller wants, re-sent on the volatile path
        self.desired_on = None
        self.zero_off = dict(zero_off or {})
        self._mode_sent_ms = None  # 0x200E = 0x05 confirmed then (None: send before 0x2015)
        self._port = None
        self._lock = asyncio.Lock()
        self._got = asyncio.Event()
        self._want = None  # (code, register) of the request in flight
        self._reply = None
        self._volatile_sent_ms = None
        self._hex_v_ms = None
        self._hex_i_ms = None
        self._outputs_in_text = False  # I2/I3 seen: a triple-output model
        self._probe_failed_ms = None
        self.probe_failures = 0  # in a row: a charger that never answers HEX cannot be steered
        self._reread_ms = None
        self._over_since = None  # since when the current exceeds a confirmed 0x2015
        self.learned_min_a = None  # a minimum above the probed one, learned from refusals
        self.echo = None  # (register, flags, value) of the last set's answer
        self.sent = 0
        # bumped when what the charger does may no longer be what was applied (the volatile
        # path given up, someone else switched it): the app then applies its decision again
        self.generation = 0

    # -- link state ----------------------------------------------------------------------

    def connected(self, now_ms=None):
        last = self.state.last_frame_ms
        if last is None:
            return False
        return ticks_diff(ticks_ms() if now_ms is None else now_ms, last) < LINK_TIMEOUT_MS

    def frame_age_s(self):
        last = self.state.last_frame_ms
        return None if last is None else ticks_diff(ticks_ms(), last) / 1000

    # -- bytes in --------------------------------------------------------------------------

    async def read_loop(self, port):
        buf = bytearray(READ_BUFFER)
        while True:
            n = await port.readinto(buf)
            if not n:
                raise OSError("charger stream closed")
            start = ticks_us()
            self.take(buf, n, ticks_ms())
            self.busy_us += us_diff(ticks_us(), start)

    def take(self, data, n, now):
        """The first `n` bytes read from the charger at `now`."""
        for ev in self.parser.feed(data, now, n):
            if ev.ok:
                if not self.connected(now):  # (back) after silence, e.g. mains restored
                    self.probe_failures = 0
                    last = self.state.last_frame_ms
                    if last is not None:  # it may have booted (a flicker leaves the uptime
                        # too small to tell): ask again what it is and what is in force
                        self.log("charger back after %d s: probing again"
                                 % (ticks_diff(now, last) // 1000))
                        self._restarted()
                self.state.last_frame_ms = now
                if ev.kind == "text":
                    self._on_text(ev, now)
                else:
                    self._on_hex(ev, now)

    def _on_text(self, block, now):
        s = self.state
        pid = block.number("PID")
        if pid is not None and pid != s.pid:
            s.pid = pid
            s.model = cold.load("ip22text").model_name(pid)
        if s.firmware is None:
            s.firmware = block.get("FWE")
        if s.serial is None:
            s.serial = block.get("SER#")
        # a label that is absent keeps its value: a block's tail can pass its checksum
        v = block.number("V")
        if v is not None and not self._fresh(self._hex_v_ms, now):
            s.voltage_v = v / 1000
        i = block.number("I")
        if i is not None:
            # triple-output models add I2 and I3; the HEX current is output 1 only
            more = block.number("I2", 0) + block.number("I3", 0)
            self._outputs_in_text = more != 0 or self._outputs_in_text
            if self._outputs_in_text or not self._fresh(self._hex_i_ms, now):
                s.current_a = (i + more) / 1000
                s.current_ms = now
        s.state = block.number("CS", s.state)
        s.error = block.number("ERR", s.error)
        if block.has("T"):
            s.temperature_c = block.number("T")  # "---" (no sensor) reads None

    def _fresh(self, at, now):
        return at is not None and ticks_diff(now, at) < HEX_FRESH_MS

    def _on_hex(self, frame, now):
        want = self._want
        if want is not None:
            if frame.code == want[0] and (want[1] is None or frame.register == want[1]):
                self._reply = (frame.code, frame.register, frame.flags, frame.raw)
                self._got.set()
            elif frame.code == vedirect.ERROR:
                self._reply = _REPLY_RETRY
                self._got.set()
            elif frame.code == vedirect.UNKNOWN:
                self._reply = (frame.code, None, None, frame.raw)
                self._got.set()
        if frame.register is not None and not frame.flags:
            self._remember(frame.register, frame, now)  # async, get answer or set echo

    def _remember(self, reg, frame, now):
        """Values the charger reports by itself (async) or in a get answer."""
        if frame.value_size() not in (1, 2, 4):
            return
        s = self.state
        if reg == 0xED8D or reg == 0xEDD5:
            v = frame.unpack_sized(reg == 0xED8D)  # sn16 and un16: 0xFFFF is n/a in 0xEDD5
            if v is not None:
                s.voltage_v = v / 100
                self._hex_v_ms = now
        elif self._outputs_in_text:
            return  # the current is the text block's sum of the outputs
        elif reg == 0xED8C:
            i = frame.unpack_sized(True)
            if i is not None:
                s.current_a = i / 1000
                s.current_ms = self._hex_i_ms = now
        elif reg == 0xED8F or reg == 0xEDD7:
            i = frame.unpack_sized(True)
            if i is not None and not self._fresh(self._hex_i_ms, now):
                s.current_a = i / 10
                s.current_ms = now
        elif reg == 0x0201:
            s.state = frame.unpack_sized(False)
        elif reg == 0x0207:
            s.off_reason = frame.unpack_sized(False, False)
        elif reg == 0xEDDA:
            s.error = frame.unpack_sized(False)
        elif reg == 0x0120:
            uptime = frame.unpack_sized(False)
            if uptime is not None and s.uptime_s is not None and uptime + 2 < s.uptime_s:
                self.log("charger restarted (uptime %d s -> %d s)" % (s.uptime_s, uptime))
                self._restarted()
            s.uptime_s = uptime
        elif reg == ip22.LINK_NETWORK_MODE:
            mode = frame.unpack_sized(False)
            if mode is not None and not mode & EXTERNAL_CONTROL_BIT:
                self._mode_sent_ms = None  # not (or no longer) ours: again before 0x2015
        elif reg == 0xEDF0:
            raw = frame.unpack_sized(False)
            s.stored_limit_a = None if raw is None else raw / 10

    def _restarted(self):
        """The charger booted: its link registers (0x200E, 0x2015) are gone, what it does now
        is its stored settings. Probe again; the app sees the new generation and reconciles."""
        s = self.state
        s.probed = False
        s.volatile_limit_a = None
        self._volatile_sent_ms = None
        self._mode_sent_ms = None
        self._over_since = None
        self.generation += 1

    # -- requests ----------------------------------------------------------------------------

    async def request(self, frame, code, register=None, resend=True):
        """Send `frame`, wait for the reply with `code` (and `register`); (code, register,
        flags, raw) or None after the retries. `resend=False`: a request without an answer
        is not sent again (a stored set may have been carried out, its reply lost)."""
        async with self._lock:
            self.sent = 0  # frames this request put on the wire (read right after it)
            port = self._port
            if port is None:
                return None
            for _ in range(1 + RETRIES):
                self._reply = None
                self._got.clear()
                self._want = (code, register)
                try:
                    port.write(frame)
                    await port.drain()
                except OSError:
                    break
                self.counters["commands"] += 1
                self.sent += 1
                try:
                    await asyncio.wait_for(self._got.wait(), REPLY_TIMEOUT_S)
                except asyncio.TimeoutError:
                    self.counters["timeouts"] += 1
                    if resend:
                        continue
                    break
                if self._reply is _REPLY_RETRY:
                    continue
                self._want = None
                if self._reply[0] == vedirect.UNKNOWN and code != vedirect.UNKNOWN:
                    self.counters["refused"] += 1
                    return None
                return self._reply
            self._want = None
            self.counters["failures"] += 1
            return None

    async def get(self, reg):
        """(flags, raw) of a register, or None without an answer."""
        reply = await self.request(vedirect.frame_get(reg), vedirect.GET, reg)
        return None if reply is None else (reply[2], reply[3])

    async def _set(self, reg, raw, stored=False, increase=False):
        """Set and check the echo (kept in `echo`). True: confirmed as asked; False: refused
        or another value confirmed; None: no answer. A stored set counts against the write
        budget each time it goes out, answered or not."""
        reply = await self.request(
            vedirect.frame_set_raw(reg, raw), vedirect.SET, reg, resend=not stored
        )
        if stored:
            for _ in range(self.sent):
                self._count_stored_write(increase)
        self.echo = None if reply is None else (reg, reply[2], reply[3])
        if reply is None:
            return None
        flags, echoed = reply[2], reply[3]
        if not flags and echoed == raw:
            self.counters["confirmed"] += 1
            return True
        self.counters["refused"] += 1
        if flags:
            self.log(
                "charger refused 0x%04X = %s: %s"
                % (reg, vedirect.hexstr(raw), ", ".join(vedirect.flag_names(flags)))
            )
        return False

    # -- probing -----------------------------------------------------------------------------

    async def probe(self):
        """Ask what this charger is and what it supports; record what works."""
        s = self.state
        # no IP22 ping answer was ever captured: a charger that ignores ping (or answers
        # ":3", unknown command) but answers the product id request is fine
        pinged = await self.request(vedirect.frame_ping(), vedirect.PING_REPLY)
        reply = await self.request(vedirect.frame_product_id(), vedirect.DONE)
        s.hex_answers = pinged is not None or reply is not None
        if not s.hex_answers:
            self.log("charger does not answer HEX requests (is the adapter's TX connected?)")
            return False
        if reply is not None and len(reply[3]) >= 2:
            s.pid = reply[3][0] | reply[3][1] << 8
        reported_max = await self._get_scaled(ip22.MAX_CURRENT)
        text = cold.load("ip22text")
        if s.pid is not None:
            s.model = text.model_name(s.pid)
        s.rated_a = text.rated_current(s.pid, reported_max)
        del text
        reported_min = await self._get_scaled(ip22.MIN_CURRENT)
        s.outputs = await self._get_scaled(ip22.OUTPUTS)
        s.stored_limit_a = await self._get_scaled(ip22.CHARGE_CURRENT_LIMIT)
        s.capabilities4 = await self._get_scaled(ip22.CAPABILITIES4)
        if s.rated_a is not None:
            s.min_a = ip22.min_current(s.rated_a, reported_min)
            if self.learned_min_a is not None:
                s.min_a = max(s.min_a, self.learned_min_a)
            s.max_a = self._max_a()
        s.volatile = await self._answers(ip22.LINK_CHARGE_CURRENT_LIMIT)
        if self.settings["volatile"] == "never":
            s.volatile = False
        s.device_mode = await self._answers(ip22.DEVICE_MODE)
        if s.device_mode:
            await self._read_mode()
        if s.serial is None:  # before the first text block: ask (the table decodes it)
            s.serial = await self._get_scaled(SERIAL_REG) or None
        if s.volatile_off is None:
            s.volatile_off = self.zero_off.get(s.serial)  # asked once per charger, ever
        s.probed = True
        self.generation += 1  # what it does now may not be what was applied: reconcile
        self.log(
            "charger %s: %s..%s A, volatile limit %s, on/off %s"
            % (s.model, s.min_a, s.max_a, _yes(s.volatile), _yes(s.device_mode))
        )
        return True

    def confirmed_limit(self):
        """The limit the charger confirmed on the path in use (None: none confirmed)."""
        s = self.state
        return s.volatile_limit_a if s.volatile else s.stored_limit_a

    async def _get_scaled(self, reg):
        answer = await self.get(reg)
        if answer is None or answer[0]:
            return None
        try:
            return ip22.decode(reg, answer[1])[0]
        except (ValueError, KeyError):
            return None

    async def _answers(self, reg):
        answer = await self.get(reg)
        if answer is None:
            return None  # unknown: ask again at the next probe
        return not answer[0] & vedirect.FLAG_UNKNOWN_ID

    # -- the two ways to change the charger --------------------------------------------------

    def clamp(self, amps):
        s = self.state
        if s.min_a is None or not s.max_a:
            return None  # no range known (never a limit of 0 A)
        return min(max(amps, s.min_a), s.max_a)

    async def set_current(self, amps):
        """Ask for a charge current limit; True once the charger confirmed it, else False and
        the reason in `last_skip` (or a counted failure)."""
        if self.read_only:
            self.last_skip = "safe mode: the charger is not touched"
            return False
        if not self.state.probed:
            self.desired_current = amps  # applied once the charger is probed
            self.last_skip = "charger not probed yet"
            return False
        clamped = self.clamp(amps)
        if clamped is None:
            self.last_skip = "the charger's current range is not known: nothing sent"
            return False
        amps = clamped
        self.desired_current = amps
        if self.state.volatile:
            ok = await self._set_volatile(amps)
            if ok and self.state.volatile_off and not self.state.device_mode:
                self.state.charging = True  # 0 was its off: any other limit is on
            if ok is not False or self._below_minimum(amps):
                return bool(ok)
            self.log("volatile limit refused: using the stored limit 0xEDF0 from now on")
            self._leave_volatile()
        return await self._set_stored(amps)

    def _max_a(self):
        cap = self.settings["max_current_a"]
        rated = self.state.rated_a
        if rated is None:
            return None
        return min(cap, rated) if cap > 0 else rated

    def settings_changed(self, old):
        """The charger section changed (API, MQTT): the user's maximum and the volatile
        choice in force at once, not at the next probe. A lower maximum is a battery's limit."""
        s = self.state
        s.max_a = self._max_a()  # None until probed, as before
        volatile = self.settings["volatile"]
        if volatile == "never" and s.volatile:
            self._leave_volatile()
        elif old["volatile"] == "never" and volatile != "never":
            s.probed = False  # whether 0x2015 works is found out by probing again
        self.generation += 1  # the app applies its decision again, within the new range

    def _leave_volatile(self):
        s = self.state
        s.volatile = False
        s.volatile_limit_a = None
        if s.volatile_off:  # "off" was 0x2015 = 0, which did not hold: not known now
            s.charging = None
        s.volatile_off = None
        self._over_since = None
        self.generation += 1

    def _below_minimum(self, amps):
        """After a refused or changed set of a current: was it below the charger's real
        minimum? Then learn that minimum (from the echo if it holds one, else a step up) so
        that the same value is not asked for again."""
        s = self.state
        if self.echo is None or s.min_a is None or s.max_a is None or amps <= 0:
            return False
        reg, flags, echoed = self.echo
        if reg not in (ip22.CHARGE_CURRENT_LIMIT, ip22.LINK_CHARGE_CURRENT_LIMIT):
            return False
        value = vedirect.unpack("un16", echoed) if len(echoed) == 2 else None
        if not flags and value is not None and amps < value / 10 <= s.max_a:
            learned = value / 10  # clamped to its minimum, and told us which
        elif flags == vedirect.FLAG_PARAMETER_ERROR and amps < (s.rated_a or s.max_a) / 2:
            # a minimum above half the rating is not plausible: a refusal up there is not one
            learned = min(s.max_a, max(amps, s.min_a) + MIN_STEP_A)
        else:
            return False
        self.learned_min_a = s.min_a = learned
        self.log("charger did not take %s A: its minimum is taken as %s A" % (amps, learned))
        return True

    async def set_charging(self, on):
        """Switch charging on or off by the documented switch 0x0200 (its storage is not
        documented, so it is budgeted like a stored write). Only a charger without it is
        asked whether 0x2015 = 0 (outside its announced range) is off: once per charger
        serial, remembered. False when there is no way to switch off (the app then uses the
        plug). Switching on never raises the limit above the one asked for last."""
        if self.read_only:
            self.last_skip = "safe mode: the charger is not touched"
            return False
        s = self.state
        self.desired_on = on
        if s.device_mode:
            return await self._set_mode(on)
        if s.volatile and s.volatile_off is not False:
            current = self.desired_current if self.desired_current is not None else s.min_a
            if current is None:
                return False
            ok = await self._set_volatile(current if on else 0)
            if ok:
                s.charging = on
                if not on:
                    self._learn_zero_off(True)
                return True
            echo = self.echo
            if ok is None or on or echo is None or echo[0] != ip22.LINK_CHARGE_CURRENT_LIMIT:
                return False
            # refused, or clamped to its minimum: 0 is not "off" on this charger
            self.log("charger does not take 0x2015 = 0 as off")
            self._learn_zero_off(False)
            if s.min_a is not None:
                await self._set_volatile(s.min_a)  # the least it will do
        if on:
            return True  # nothing switched it off: it charges
        self.last_skip = "this charger cannot be switched off over VE.Direct"
        return False

    def _learn_zero_off(self, value):
        s = self.state
        s.volatile_off = value
        if s.serial:
            self.zero_off[s.serial] = value

    async def _set_mode(self, on):
        s = self.state
        if s.charging == on:  # as confirmed by the probe, the last write or the last read
            return True
        if on and self.budget.full(ticks_ms()):  # switching off is always allowed
            self.last_skip = "daily limit of stored writes reached"
            self.counters["skipped_writes"] += 1
            return False
        ok = await self._set(ip22.DEVICE_MODE, bytes([1 if on else 4]), True)
        if ok is None:  # it may have been carried out: read what is in force
            await self._read_mode()
            return s.charging == on
        if ok:
            s.charging = on
        return ok

    async def _read_mode(self):
        """On (1, or 2/3 on other chargers), off (4; 0 on MPPTs) or unknown (no answer,
        0xFC standby, 0xFF n/a): unknown is never taken for on."""
        mode = await self._get_scaled(ip22.DEVICE_MODE)
        self.state.charging = None if mode not in (0, 1, 2, 3, 4) else mode in (1, 2, 3)

    async def _set_volatile(self, amps, refresh=False):
        """0x2015, after 0x200E (external control) when that is not in force: after the
        probe, a restart, the charger's own 0x200E without our bit, and with each refresh
        (the charger forgets both after 60 s). True, False (refused) or None (no answer)."""
        ok = True
        if refresh or self._mode_sent_ms is None:
            ok = await self._set(ip22.LINK_NETWORK_MODE, bytes([NETWORK_MODE_EXTERNAL]))
            self._mode_sent_ms = ticks_ms() if ok else None
        if ok:
            raw = ip22.encode(ip22.LINK_CHARGE_CURRENT_LIMIT, amps)
            ok = await self._set(ip22.LINK_CHARGE_CURRENT_LIMIT, vedirect.pack("un16", raw))
            if ok:
                self.state.volatile_limit_a = raw / 10
                self._volatile_sent_ms = ticks_ms()
        return ok

    async def _set_stored(self, amps):
        s = self.state
        reason = self.budget.check(s.stored_limit_a, amps, ticks_ms())
        if reason:
            self.last_skip = reason
            if reason != "unchanged":
                self.counters["skipped_writes"] += 1
            return reason == "unchanged"
        raw = ip22.encode(ip22.CHARGE_CURRENT_LIMIT, amps)
        up = s.stored_limit_a is None or amps > s.stored_limit_a
        ok = await self._set(ip22.CHARGE_CURRENT_LIMIT, vedirect.pack("un16", raw), True, up)
        if not ok:  # refused, changed or unanswered (then perhaps carried out): read it back
            if ok is False:
                self._below_minimum(amps)
            stored = await self._read_stored()
            if stored is not None and abs(stored - amps) < 0.05:
                self.last_skip = None
                return True
            return False
        s.stored_limit_a = raw / 10
        self.last_skip = None
        return True

    def _count_stored_write(self, spaced=False):
        self.stored_writes += 1
        self.budget.record(ticks_ms(), spaced)

    def release(self):
        """Stop steering: nothing wanted, the volatile limit no longer refreshed (the charger
        goes back to its stored limit, and out of a 0x2015 = 0 "off", within its 60 s)."""
        self.desired_current = None
        self.desired_on = None
        self._volatile_sent_ms = None

    async def keep_volatile(self):
        """Refresh the volatile limit well inside the charger's 60 s timeout."""
        s = self.state
        sent = self._volatile_sent_ms
        if not s.volatile or sent is None:
            return
        if ticks_diff(ticks_ms(), sent) >= self.settings["volatile_refresh_s"] * 1000:
            amps = s.volatile_limit_a  # what is confirmed: 0 where that is its off
            if amps is None:
                amps = self.desired_current
            if amps is not None:
                await self._set_volatile(amps, True)

    async def reread(self):
        """Read back what someone else may have changed: on/off and the stored limit."""
        now = ticks_ms()
        if self._reread_ms is not None and ticks_diff(now, self._reread_ms) < REREAD_MS:
            return
        self._reread_ms = now
        s = self.state
        if s.device_mode:
            before = s.charging
            await self._read_mode()
            wanted = self.desired_on
            if s.charging is not None and wanted is not None and s.charging != wanted:
                if before == wanted:
                    switched = "on" if s.charging else "off"
                    self.log("charger switched %s by someone else" % switched)
                self.generation += 1
        await self._read_stored()

    async def _read_stored(self):
        """0xEDF0 as the charger has it now; without an answer the last known value stays
        (a decrease asked for next then stays a decrease for the write budget)."""
        stored = await self._get_scaled(ip22.CHARGE_CURRENT_LIMIT)
        if stored is not None:
            self.state.stored_limit_a = stored
        return stored

    async def check_volatile(self):
        """A charger that confirms 0x2015 and then ignores it: more current than the limit
        for IGNORED_MS means the stored limit is the only one that works."""
        s = self.state
        limit, amps, sent = s.volatile_limit_a, s.current_a, self._volatile_sent_ms
        now = ticks_ms()
        refresh_ms = self.settings["volatile_refresh_s"] * 1000
        if (
            not s.volatile
            or limit is None
            or amps is None
            or sent is None
            or ticks_diff(now, sent) > 2 * refresh_ms  # not refreshed: it may have lapsed
            or amps <= limit + max(1.0, limit * 0.2)
        ):
            self._over_since = None
            return
        if self._over_since is None:
            self._over_since = now
        elif ticks_diff(now, self._over_since) >= IGNORED_MS:
            self.log("charger delivers %.1f A over its confirmed 0x2015 limit of %s A: "
                     "using the stored limit 0xEDF0 from now on" % (amps, limit))
            self._leave_volatile()  # the app reconciles: the stored limit from now on

    # -- running -----------------------------------------------------------------------------

    async def run(self, beat=None):
        """Open the port, read it, probe, keep the volatile limit alive; reopen on errors."""
        beat = beat or (lambda: None)
        delay = 1
        while True:
            try:
                port = await self.open_port()
            except OSError as err:
                self.log("charger port: %s" % err)
                port = None
            if port is not None:
                self._port = port
                manager = asyncio.create_task(self._manage(beat, port))
                try:
                    await self.read_loop(port)
                except OSError as err:
                    self.log("charger link: %s" % err)
                finally:
                    self._port = None
                    manager.cancel()
                    port.close()
                if self.connected():
                    delay = 1
                self.counters["reconnects"] += 1
            for _ in range(delay):  # back off, still reporting in
                beat()
                await asyncio.sleep(1)
            delay = min(delay * 2, 30)

    async def _manage(self, beat, port):
        """Probe and keep the volatile limit alive while `port` is open. An error (a full
        heap too) costs one round, never the manager: the reader would go on without it.
        It ends by itself when the port goes: a cancel can be lost (CPython 3.11's wait_for
        swallows one that meets a reply), and a second manager would run beside the next."""
        while self._port is port:
            beat()
            try:
                if self.connected():
                    await self._probe_when_due()
                    if self.state.probed:
                        await self.keep_volatile()
                        await self.check_volatile()
                        await self.reread()
            except Exception as err:
                self.counters["failures"] += 1
                try:
                    self.log("charger: %s %s" % (type(err).__name__, err))
                except MemoryError:
                    pass
            await asyncio.sleep(1)

    async def _probe_when_due(self):
        if self.state.probed:
            return
        now = ticks_ms()
        failed = self._probe_failed_ms
        if failed is not None and ticks_diff(now, failed) < PROBE_RETRY_MS:
            return
        if await self.probe():
            self._probe_failed_ms = None
            self.probe_failures = 0
        else:
            self._probe_failed_ms = now
            self.probe_failures += 1

    def names(self):
        """(state, error, off reasons) as words. ip22text.py is read in only for a code not
        seen before; the words found are kept (a few dozen codes at most)."""
        s = self.state
        wanted = (("state", s.state), ("error", s.error), ("off", s.off_reason))
        named = self._named
        if any(code is not None and (kind, code) not in named for kind, code in wanted):
            text = cold.load("ip22text")
            looks = {"state": text.state_name, "error": text.error_name,
                     "off": text.off_reason_names}
            for kind, code in wanted:
                if code is not None and (kind, code) not in named:
                    named[(kind, code)] = looks[kind](code)
        return tuple(None if code is None else named[(kind, code)] for kind, code in wanted)

    def status(self):
        s = self.state
        p = self.parser
        counters = dict(self.counters)
        counters.update(p.counters())
        state, error, off_reason = self.names()
        return {
            "connected": self.connected(),
            "frame_age_s": self.frame_age_s(),
            "hex_answers": s.hex_answers,
            "pid": None if s.pid is None else "0x%04X" % s.pid,
            "model": s.model,
            "firmware": s.firmware,
            "serial": s.serial,
            "voltage_v": s.voltage_v,
            "current_a": s.current_a,
            "state": state,
            "state_code": s.state,
            "error": error,
            "error_code": s.error,
            "off_reason": off_reason,
            "temperature_c": s.temperature_c,
            "uptime_s": s.uptime_s,
            "limit_a": s.limit_a,
            "stored_limit_a": s.stored_limit_a,
            "volatile_limit_a": s.volatile_limit_a,
            "min_a": s.min_a,
            "max_a": s.max_a,
            "rated_a": s.rated_a,
            "volatile_limit": s.volatile,
            "device_mode": s.device_mode,
            "no_off_mode": None if s.capabilities4 is None else bool(s.capabilities4 & 1),
            "charging": s.charging,
            "stored_writes": self.stored_writes,
            "stored_writes_24h": self.budget.used_24h(ticks_ms()),
            "last_skip": self.last_skip,
            "read_only": self.read_only,
            "counters": counters,
        }


def _yes(flag):
    return "unknown" if flag is None else ("yes" if flag else "no")
