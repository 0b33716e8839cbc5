"""The surplus controller. Pure: `step(now_ms, situation)` returns a Decision with a reason in
plain words; no I/O, no clock, no sleeping. The app (and tools/bench.py) applies decisions and
reconciles them with what the charger confirms.

Auto mode: the charger may draw what it drew when the meter took its sample, minus what the
grid imports, plus the target grid power (a small export margin). Steps down on the first
reading that shows import (sooner on a falling trend, and faster than the charger's own time
constant by holding the minimum for a moment); rises on each fresh reading; never above the
user's maximum nor above what the battery takes in absorption and float. Below the charger's
minimum current it holds the minimum until the import this costs reaches a small energy (or a
delay), then switches off; on again when the surplus has covered the minimum plus a margin for
a moment. Switching on and raising a stored limit cost flash writes: they are paced over the
day. Stale grid data or a lost charger link -> the safe state; a GX that says it has no value
(refused, exception, meter gone) -> the minimum at once, the safe state when stale.
"""

import math

OFF = "off"
MANUAL = "manual"
AUTO = "auto"

ABSORPTION_AND_AFTER = (4, 5, 6, 7, 244, 246, 247)  # CS codes: the battery sets the pace
HEX_SILENT_PROBES = 2  # failed probes (30 s apart) before a charger counts as deaf to HEX
LEARN_RETRY_MS = 300000  # an unknown charger powered up to be probed: not more often
LEARN_RETRY_MAX_MS = 3600000  # ... doubling up to this for one that talks but is deaf to HEX
STARTUP_GRACE_MS = 20000  # after a power-up, the charger's first frames come within this
HOUSE_IDLE_W = 30  # a house battery discharging less than this is idle (its own consumption)
FROZEN_DRAW_W = 100  # the charger's draw moved this much ...
FROZEN_AFTER_MS = 10000  # ... and the grid value stayed exactly the same this long: frozen
SETTLED_MS = 8000  # after a change, the charger's current has followed (about 4 time constants)
GX_FAILED_POLLS = 2  # polls in a row that the GX answered with "no value": hold the minimum
LOOP_DELAY_S = 1.0  # a meter sample reaches a command about this much later
TREND_STEP_W = 10  # a fall smaller than this between two readings is noise, not a trend
OVERDRIVE_MIN_S = 0.3  # a shorter hold at the minimum is not worth two commands
OVERDRIVE_MIN_A = 1.0  # nor a smaller step down
READING_GAP_S = 3.0  # the import energy counts at most this long per reading
PACE_DAY_H = 12  # the stored writes of a day are spread over its daylight hours ...
RESERVE_SHARE = 0.2  # ... keeping this share of them for going down
PACE_BURST = 10  # switch-ons and raises of a stored limit that may come in a row
PENDING_MS = 30000  # a switch the charger has not confirmed: asked for again this long
STORED_STEP_A = 0.5  # a stored limit is changed by at least this (each change is a write)
ROOM_MAX = 64  # readings kept for the stored rise's window


class Situation:
    """What the controller sees; the app fills it from the link and the poller each step."""

    def __init__(self):
        self.grid_w = None  # last good grid power, W, positive = import
        self.grid_seq = 0  # counts new grid values
        self.grid_age_s = None
        self.grid_error = None  # why the grid value is missing, for the reason
        self.grid_failures = 0  # polls in a row the GX answered with "no value" (evidence)
        self.battery_w = None  # the house battery (Venus 842), + = charging; None: unknown
        self.link_up = False
        self.link_seen = False  # a valid frame has arrived since boot
        self.failed_probes = 0  # in a row: the charger talks but does not answer HEX
        self.powered_off = False  # we cut the charger's mains (plug): no link is expected
        self.voltage_v = None
        self.current_a = None
        self.sample_output_w = None  # V x I when the grid sample was asked for (None: not
        # known: the values now are used)
        self.state_code = None
        self.min_a = None
        self.max_a = None
        self.charging = None  # as confirmed (None: the charger cannot say)
        self.can_switch_off = False
        self.switch_is_stored = False  # switching is 0x0200: a flash write, paced
        self.stored_only = False  # only 0xEDF0 works: every setpoint change is a flash write
        self.limit_a = None  # the limit in force, as confirmed
        self.budget_full = False  # no stored write left today: the limit cannot go down
        self.writes_left = None  # stored writes left in the last 24 h (None: no limit known)
        self.daily_max = None
        self.increase_wait_s = 0  # until the write budget allows a stored increase


class Decision:
    def __init__(self, setpoint_a=None, charging=None, reason="", safe=False):
        self.setpoint_a = setpoint_a  # None: leave the current limit alone
        self.charging = charging  # None: leave on/off alone
        self.reason = reason
        self.safe = safe


def floor_tenth(amps):
    return int(amps * 10 + 1e-6) / 10


class Pacer:
    """Tokens for what costs a stored write going up (a switch-on by 0x0200, a higher 0xEDF0):
    a burst for a cloudy hour, refilled so that a day's budget lasts the day with a reserve
    for going down and off, which never wait."""

    def __init__(self):
        self.tokens = PACE_BURST
        self.at = None

    def _per_s(self, daily_max):
        """Tokens a second: 80 % of the day's writes over a 12 h day, half of them going up."""
        return daily_max * (1 - RESERVE_SHARE) / 2 / (PACE_DAY_H * 3600)

    def _refill(self, now, daily_max):
        if self.at is not None:
            gained = (now - self.at) / 1000 * self._per_s(daily_max)
            self.tokens = min(PACE_BURST, self.tokens + gained)
        self.at = now

    def wait_s(self, now, sit):
        """0 when a write going up may be spent now, else the seconds until one may."""
        daily = sit.daily_max
        if not daily:
            return 0 if daily is None else 86400
        self._refill(now, daily)
        if sit.writes_left is not None and sit.writes_left <= daily * RESERVE_SHARE:
            return 3600  # the rest of the day's writes are kept for going down
        if self.tokens >= 1:
            return 0
        return int((1 - self.tokens) / self._per_s(daily)) + 1

    def spend(self):
        self.tokens -= 1


class Controller:
    def __init__(self, settings):
        """`settings` is the config's "control" section."""
        self.s = settings
        self.setpoint_a = None
        self.on = None  # what we want: True/False; None before the first decision
        self.on_ms = None  # when we last asked for a switch
        self.last_seq = None
        self.changed_ms = None  # when the setpoint last went up (settling)
        self.raised_ms = None
        self.below_since = None  # surplus short of the minimum since (ms)
        self.short_ws = 0.0  # import the minimum has cost since then, W*s
        self.above_since = None  # surplus enough for the minimum since (ms)
        self.available_w = None
        self.readings = []  # (ms, available W) of the last three fresh readings: the trend
        self.overdrive = None  # (until ms, then A): holding the minimum to fall faster
        self.guarded_w = 0  # house battery discharge left out of the surplus, W
        self.same_grid = None  # (grid W, since ms, charger W then): see _frozen
        self.frozen = None  # why the grid value is taken as frozen, until it moves
        self.learn_wait_ms = LEARN_RETRY_MS
        self.deaf = False  # cut because it does not answer HEX, since the last learn attempt
        self.learn_tried_ms = None  # when we last powered an unknown charger up to probe it
        self.powered_on_ms = None  # when we switched the charger's mains on (it boots)
        self.retry_ms = None  # a charger that did not come up: no new power-up before this
        self.room = []  # stored-only: (ms, A) the surplus allowed at each reading, a window
        self.recovered = True  # no decision yet, or back from the safe state: no waiting
        self.pacer = Pacer()
        self.decision = Decision(reason="starting")

    # -- helpers ---------------------------------------------------------------------------

    def _ms(self, seconds):
        return int(seconds * 1000)

    def _since(self, now, start):
        return (now - start) / 1000 if start is not None else 0

    def _safe(self, sit, why, minimum=False):
        """The user's safe state; `minimum`: hold the least current until then (a GX that
        says it has no value: the surplus is not known, the house may import)."""
        self.overdrive = None
        self.recovered = True
        self.readings = []  # no trend across a gap in the data
        if not minimum and self.s["safe_state"] == "off" and (
            sit.can_switch_off or sit.powered_off
        ):
            self._want(False, None)
            return Decision(None, False, "safe: %s; charging off" % why, True)
        low = sit.min_a
        self.setpoint_a = low
        if minimum and sit.charging is False:
            return Decision(None, None, "safe: %s; charging stays off" % why, True)
        note = ""
        if low is not None and sit.voltage_v:
            note = " (about %d W)" % (low * sit.voltage_v / self.s["efficiency"])
        return Decision(low, True, "safe: %s; holding the minimum %s A%s" % (why, low, note), True)

    def _want(self, on, now):
        if on != self.on:
            self.on_ms = now
        self.on = on

    # -- the step ---------------------------------------------------------------------------

    def step(self, now, sit):
        mode = self.s["mode"]
        if mode == OFF:
            self.decision = Decision(None, None, "off: the charger is left to itself")
        elif mode == MANUAL:
            amps = self.s["manual_current_a"]
            if sit.min_a is not None:
                amps = min(max(amps, sit.min_a), sit.max_a)
            on = self.s["manual_charging"]
            self.decision = Decision(
                amps, on, "manual: %s A, charging %s" % (amps, "on" if on else "off")
            )
        else:
            self.decision = self._auto(now, sit)
        return self.decision

    def _auto(self, now, sit):
        if sit.min_a is None:  # the charger is not known yet
            if sit.powered_off:
                tried = self.learn_tried_ms
                if tried is None or now - tried >= self.learn_wait_ms:
                    self.learn_tried_ms = now
                    self.powered_on_ms = now  # booting: no link is expected for a while
                    self.deaf = False
                    return Decision(None, True, "switching the charger on to learn what it is")
                why = "does not answer HEX requests" if self.deaf else "did not answer"
                left = (self.learn_wait_ms - (now - tried)) // 1000
                why = "the charger %s: powered up again in %d s" % (why, left)
                return Decision(None, None, why)
            if sit.link_up and sit.failed_probes >= HEX_SILENT_PROBES and sit.can_switch_off:
                # it charges at its own setting, grid or not, and cannot be told otherwise
                self.on = False
                if not self.deaf:  # once per power-up: learn again later, then rarer
                    self.deaf = True
                    if self.learn_tried_ms is not None:
                        self.learn_wait_ms = min(self.learn_wait_ms * 2, LEARN_RETRY_MAX_MS)
                    self.learn_tried_ms = now
                why = "safe: the charger does not answer HEX requests; charging off"
                return Decision(None, False, why, True)
            if sit.link_up or not sit.link_seen:
                return Decision(None, None, "waiting for the charger")
        if sit.min_a is not None:
            self.learn_wait_ms = LEARN_RETRY_MS  # known: a later unknown one starts afresh
        if not sit.link_up and not sit.powered_off:
            if self.powered_on_ms is not None and now - self.powered_on_ms < STARTUP_GRACE_MS:
                return Decision(None, None, "the charger is starting up")
            if self.powered_on_ms is not None:  # powered up by us and never answered
                self.retry_ms = now + LEARN_RETRY_MS
            self.powered_on_ms = None
            return self._safe(sit, "charger link down")
        if sit.link_up:
            self.powered_on_ms = None
        if sit.grid_age_s is None or sit.grid_age_s > self.s["stale_s"]:
            age = (
                "no grid data" if sit.grid_age_s is None else "grid data %d s old" % sit.grid_age_s
            )
            if sit.grid_error:
                age += " (%s)" % sit.grid_error
            return self._safe(sit, age)
        if sit.grid_failures >= GX_FAILED_POLLS:
            why = "the GX has no grid value (%s)" % (sit.grid_error or "failed polls")
            return self._safe(sit, why, True)
        frozen = self._frozen(now, sit)
        if frozen:
            return self._safe(sit, frozen)
        od = self.overdrive
        if od is not None and now >= od[0]:  # held the minimum long enough: the new limit
            self.overdrive = None
            self.setpoint_a = od[1]
            self.decision = Decision(od[1], True, "down to %s A: the current got there by "
                                     "holding the minimum" % od[1])
            if sit.grid_seq == self.last_seq:
                return self.decision
        if sit.grid_seq == self.last_seq and not self.decision.safe:
            return self.decision  # act on fresh meter readings only
        self.last_seq = sit.grid_seq
        d = self._track(now, sit)
        if self.guarded_w:
            d.reason += "; the house battery's %d W discharge is no surplus" % self.guarded_w
        return d

    def _frozen(self, now, sit):
        """A grid value that stays exactly the same while the charger's draw moves is no
        meter reading: Venus answers but has stopped updating (venus-notes: Timing). Caught
        here in seconds, where the poller's `frozen_s` waits for a whole minute."""
        draw = (sit.current_a or 0) * (sit.voltage_v or 0) if not sit.powered_off else 0
        same = self.same_grid
        if same is None or sit.grid_w != same[0]:
            self.same_grid = (sit.grid_w, now, draw)
            self.frozen = None
            return None
        moved = abs(draw - same[2])
        if not self.frozen and moved > FROZEN_DRAW_W and now - same[1] > FROZEN_AFTER_MS:
            # latched until the value moves: the draw falling back proves nothing
            self.frozen = "grid value %d W unchanged while the charger's draw moved %d W" % (
                sit.grid_w, moved)
        return self.frozen

    def _lead(self, now, available):
        """A surplus that fell on two readings in a row goes on falling while the charger
        follows: act on where it will be (charger time constant + loop delay) later. One
        step is not a trend."""
        r = self.readings
        r.append((now, available))
        if len(r) > 3:
            r.pop(0)
        if len(r) < 3:
            return 0.0
        (t0, a0), (_, a1), (t2, a2) = r
        if a0 - a1 < TREND_STEP_W or a1 - a2 < TREND_STEP_W or t2 <= t0:
            return 0.0
        rate = (a0 - a2) * 1000 / (t2 - t0)  # W/s
        return rate * (self.s["response_s"] + LOOP_DELAY_S)

    def _track(self, now, sit):
        s = self.s
        eff = s["efficiency"]
        volts = sit.voltage_v or 0
        confirmed = sit.charging
        charging = confirmed if confirmed is not None else self.on is not False
        drawing = 0.0
        if sit.sample_output_w is not None and not sit.powered_off:
            drawing = max(0.0, sit.sample_output_w) / eff
        elif charging and not sit.powered_off and sit.current_a and volts:
            drawing = max(0.0, sit.current_a) * volts / eff
        available = drawing - sit.grid_w + s["target_grid_w"]
        discharge = -sit.battery_w if sit.battery_w is not None else 0
        self.guarded_w = 0
        if s["house_battery_guard"] and discharge > HOUSE_IDLE_W:
            # ESS holding the grid at its setpoint would feed us from the house battery
            self.guarded_w = discharge
            available -= discharge
        lead = self._lead(now, available)
        gap_s = LOOP_DELAY_S  # the first reading below stands for about one meter period
        if len(self.readings) > 1:
            gap_s = min(READING_GAP_S, (now - self.readings[-2][0]) / 1000)
        self.available_w = available
        available -= lead
        if not volts or sit.min_a is None:
            return Decision(None, None, "waiting: the charger's voltage and minimum are not known")
        min_w = sit.min_a * volts / eff
        pending = self._pending(now, sit, available, min_w)
        if pending is not None:
            return pending
        if sit.stored_only:
            return self._stored(now, sit, available, volts, min_w, charging, drawing)
        if not charging:
            return self._maybe_enable(now, sit, available, min_w)
        self.recovered = False
        if available < min_w - s["disable_threshold_w"]:
            return self._short(now, sit, available, min_w, gap_s)
        self.below_since = None
        self.short_ws = 0.0
        return self._regulate(now, sit, available, volts, lead)

    def _pending(self, now, sit, available, min_w):
        """A switch asked for and not confirmed yet (the app sends it again, with back-off):
        say so, never describe the state wanted as the one the charger is in."""
        confirmed = sit.charging
        if confirmed is None or self.on is None or confirmed == self.on or sit.powered_off:
            return None
        if self.on_ms is not None and now - self.on_ms > PENDING_MS:
            self.on = confirmed  # given up: decide afresh from what it does
            return None
        if self.on and available >= min_w:
            return Decision(self.setpoint_a or sit.min_a, True,
                            "switching on: the charger still reports off")
        if not self.on and available < min_w + self.s["enable_threshold_w"]:
            return Decision(None, False, "switching off: the charger still reports on")
        self.on = confirmed  # the surplus is back (or gone): what it does is what we want
        return None

    def _short(self, now, sit, available, min_w, gap_s):
        """Below the minimum: off at once where switching is free; where it costs a stored
        write (0x0200), hold the minimum while the import it costs stays small, then off."""
        s = self.s
        self.above_since = None
        self.overdrive = None
        if self.below_since is None:
            self.below_since = now
            self.short_ws = 0.0
        # what the meter shows (more while the current falls to the minimum), at least what
        # the minimum itself will import
        importing = max(min_w - available, sit.grid_w - s["target_grid_w"])
        self.short_ws += importing * gap_s
        waited = self._since(now, self.below_since)
        can_off = sit.can_switch_off or sit.powered_off
        allowed = s["off_after_ws"] if sit.switch_is_stored and available > 0 else 0
        if can_off and (self.short_ws >= allowed or waited >= s["disable_delay_s"]):
            self._want(False, now)
            self.setpoint_a = sit.min_a
            return Decision(
                None, False, "off: %d W available, the minimum needs %d W" % (available, min_w)
            )
        self.setpoint_a = sit.min_a
        if not can_off:
            return Decision(
                sit.min_a,
                True,
                "at the minimum %s A: importing about %d W (this charger cannot be "
                "switched off)" % (sit.min_a, min_w - available),
            )
        return Decision(
            sit.min_a,
            True,
            "at the minimum: %d W short, %d of %d W*s of import before switching off"
            % (min_w - available, self.short_ws, allowed),
        )

    def _maybe_enable(self, now, sit, available, min_w):
        s = self.s
        need = min_w + s["enable_threshold_w"]
        if sit.powered_off and self.retry_ms is not None and now < self.retry_ms:
            return Decision(
                None,
                False,
                "the charger did not answer after its last power-up; again in %d s"
                % ((self.retry_ms - now) // 1000),
            )
        if available < need:
            self.above_since = None
            self.recovered = False  # decided: a surplus from now on has to last
            self._want(False, now)
            return Decision(
                None, False, "waiting: surplus %d W below the %d W minimum" % (max(available, 0),
                                                                               need)
            )
        if self.above_since is None:
            self.above_since = now
        waited = self._since(now, self.above_since)
        if waited < s["enable_delay_s"] and not self.recovered:
            return Decision(
                None,
                False,
                "waiting: %d W surplus for %d/%d s before switching on"
                % (available, waited, s["enable_delay_s"]),
            )
        if sit.switch_is_stored:
            wait = self.pacer.wait_s(now, sit)
            if wait:
                return Decision(None, False, "waiting: %d W surplus; switching on is a stored "
                                "write, the next in %d s (the day's budget)" % (available, wait))
            self.pacer.spend()
        self._want(True, now)
        self.above_since = None
        self.recovered = False
        if sit.powered_off:
            self.powered_on_ms = now
        amps = floor_tenth(min(max(available, 0) * s["efficiency"] / sit.voltage_v, sit.max_a))
        self.setpoint_a = max(amps, sit.min_a) if not sit.stored_only else self.setpoint_a
        self.changed_ms = now
        return Decision(self.setpoint_a, True, "on: %d W surplus covers the minimum" % available)

    def _overdrive_s(self, amps_now, new, low):
        """How long to hold the minimum so that a first-order current falls from `amps_now`
        to `new` (then set `new`): tau * ln((I - Imin) / (Inew - Imin)) minus the loop delay
        the command has already had."""
        if amps_now is None or new <= low or amps_now - new < OVERDRIVE_MIN_A:
            return 0
        ratio = (amps_now - low) / (new - low)
        if ratio <= 1:
            return 0
        hold = self.s["response_s"] * math.log(ratio) - LOOP_DELAY_S / 2
        return hold if hold >= OVERDRIVE_MIN_S else 0

    def _regulate(self, now, sit, available, volts, lead):
        s = self.s
        eff = s["efficiency"]
        target = floor_tenth(max(available, 0) * eff / volts)
        cap = sit.max_a
        limited_by = "your maximum"
        current = self.setpoint_a
        if current is None:
            current = sit.limit_a if sit.limit_a is not None else sit.max_a
        settled = self.changed_ms is None or now - self.changed_ms >= SETTLED_MS
        if sit.state_code in ABSORPTION_AND_AFTER or (
            settled and sit.current_a is not None and sit.current_a < current - s["not_taking_a"]
        ):
            # the battery takes less than the limit: do not chase the limit upward (but never
            # lower it for that: the charger's own stage sets the pace)
            taking = floor_tenth(max(sit.current_a or 0, sit.min_a) + s["not_taking_a"])
            if max(taking, current) < cap:
                cap, limited_by = max(taking, current), "what the battery takes"
        target = min(max(target, sit.min_a), cap)
        trend = " (falling: %d W ahead)" % lead if lead else ""
        od = self.overdrive
        if od is not None and target > od[1] + 0.5:
            self.overdrive = od = None  # the surplus came back meanwhile
        if od is not None:  # holding the minimum to fall faster
            if target < od[1]:
                self.overdrive = (od[0], target)
            return Decision(sit.min_a, True, "down to %s A: holding the minimum %s A until the "
                            "current is there" % (self.overdrive[1], sit.min_a))
        if (
            target < current
            and not lead
            and sit.grid_w <= s["target_grid_w"]
            and sit.current_a is not None
            and sit.current_a < current - s["not_taking_a"]
        ):
            # no import, and the current is still below the limit: a ramp (its reports lag it,
            # so the surplus reads low) or a battery that takes less; it goes down when the
            # meter shows import, or on a falling trend
            self.setpoint_a = current
            return Decision(current, True, "holding %s A: %d W exported, the current (%s A) "
                            "still below it" % (current, -sit.grid_w, sit.current_a))
        if target < current:  # import (or about to): down at once
            self.changed_ms = now
            hold = self._overdrive_s(sit.current_a, target, sit.min_a)
            if s["overdrive"] and hold:
                self.overdrive = (now + int(hold * 1000), target)
                self.setpoint_a = target
                return Decision(sit.min_a, True, "down to %s A: %d W available%s; holding the "
                                "minimum for %.1f s to get there sooner" % (target, available,
                                                                             trend, hold))
            self.setpoint_a = target
            reason = "down to %s A: %d W available%s" % (target, available, trend)
        elif target - current < s["deadband_w"] * eff / volts:
            reason = "holding %s A: %d W available" % (current, available)
            if target >= cap and current >= cap:
                reason = "at %s A, limited by %s" % (current, limited_by)
            self.setpoint_a = current
        elif self.changed_ms is not None and now - self.changed_ms < self._ms(s["settle_s"]):
            reason = "settling at %s A" % current
            self.setpoint_a = current
        else:
            since = self._since(now, self.raised_ms) if self.raised_ms is not None else 1.0
            step = s["rise_a_per_s"] * min(max(since, 1.0), max(s["settle_s"], 1.0))
            new = floor_tenth(min(target, current + step))
            self.setpoint_a = new
            self.raised_ms = now
            self.changed_ms = now
            reason = "up to %s A: %d W available" % (new, available)
        return Decision(self.setpoint_a, True, reason)

    # -- only the stored limit 0xEDF0: every change is a flash write -------------------------

    def _stored(self, now, sit, available, volts, min_w, charging, drawing):
        """Keep the stored limit where the surplus has been for a while; protect against
        import at once with a decrease (or the off switch), raise at most now and then, to the
        lowest surplus of a short window, paced over the day."""
        s = self.s
        eff = s["efficiency"]
        sp = sit.limit_a if sit.limit_a is not None else self.setpoint_a
        if sp is None:
            sp = sit.max_a
        self.setpoint_a = sp
        fits = floor_tenth(min(max(available, 0) * eff / volts, sit.max_a))
        if not charging:
            self.room = []
            if sit.budget_full:  # only at the limit as it stands
                min_w = sp * volts / eff
            decision = self._maybe_enable(now, sit, available, min_w)
            self.setpoint_a = sp  # the stored limit stays where it is, unless it must go down
            if decision.charging:
                if fits < sp:
                    self.setpoint_a = max(fits, sit.min_a)  # written before the current flows
                decision.setpoint_a = self.setpoint_a
            return decision
        self.recovered = False
        need_w = sp * volts / eff
        if sit.state_code in ABSORPTION_AND_AFTER or (
            sit.current_a is not None and sit.current_a < sp - s["not_taking_a"]
        ):
            need_w = min(need_w, drawing)  # the battery takes less than the limit
        if available < need_w - max(s["deadband_w"], STORED_STEP_A * volts / eff):
            self.room = []
            if available < min_w or not sit.can_switch_off and fits < sit.min_a:
                if sit.can_switch_off or sit.powered_off:
                    self._want(False, now)
                    return Decision(
                        None,
                        False,
                        "off: %d W available, %s A needs %d W" % (available, sp, need_w),
                    )
            self.setpoint_a = max(fits, sit.min_a)
            return Decision(
                self.setpoint_a,
                True,
                "down to %s A (a stored write): %d W available" % (self.setpoint_a, available),
            )
        room = self.room
        room.append((now, fits))
        window = self._ms(s["stored_rise_after_s"])
        while len(room) > ROOM_MAX or now - room[0][0] > window:
            room.pop(0)
        lowest = min(a for _, a in room)
        if fits >= sp + STORED_STEP_A and sp < sit.max_a:
            # the window must have been filled: readings that span it, all with room
            wait = max(sit.increase_wait_s, (window - (now - room[0][0])) // 1000)
            if lowest < sp + STORED_STEP_A:
                wait = max(wait, 1)
            if wait <= 0:
                wait = self.pacer.wait_s(now, sit)
            if wait <= 0:
                self.pacer.spend()
                self.setpoint_a = lowest
                self.room = []
                return Decision(
                    lowest,
                    True,
                    "up to %s A (a stored write): the lowest surplus of the last %d s"
                    % (lowest, s["stored_rise_after_s"]),
                )
            return Decision(
                sp,
                True,
                "holding %s A: room for %s A, a stored write in %d s or later" % (sp, lowest,
                                                                                  wait),
            )
        return Decision(sp, True, "holding %s A: %d W available" % (sp, available))

