"""The surplus controller. Pure: `step(now_ms, situation)` returns a Decision with a reason in
plain words; no I/O, no clock, no sleeping. The app (and tools/bench.py) applies decisions.

Auto mode: the charger may draw what it draws now, minus what the grid imports, plus the target
grid power (a small export margin). Steps down on the first reading that shows import; rises
calmly (a slew limit, a deadband, a settling time); never above the user's maximum nor above
what the battery takes in absorption and float. Below the charger's minimum current it switches
charging off (after a delay) and back on when the surplus has covered the minimum for a while.
Stale grid data or a lost charger link -> the safe state.
"""

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


class Situation:
    """What the controller sees; the app fills it from the link and the poller each step."""

    def __init__(self):
        self.grid_w = None  # last good grid power, W, positive = import
        self.grid_seq = 0  # counts new grid values
        self.grid_age_s = None
        self.grid_error = None  # why the grid value is missing, for the reason
        self.battery_w = None  # the house battery (Venus 842), + = charging; None: unknown
        self.link_up = False
        self.link_seen = False  # a valid frame has arrived since boot
        self.failed_probes = 0  # in a row: the charger talks but does not answer HEX
        self.powered_off = False  # we cut the charger's mains (plug): no link is expected
        self.voltage_v = None
        self.current_a = None
        self.state_code = None
        self.min_a = None
        self.max_a = None
        self.charging = None  # as confirmed
        self.can_switch_off = False
        self.stored_only = False  # only 0xEDF0 works: every setpoint change is a flash write
        self.limit_a = None  # the limit in force, as confirmed
        self.budget_full = False  # no stored write left today: the limit cannot go down


class Decision:
    def __init__(self, setpoint_a=None, charging=None, reason="", safe=False):
        self.setpoint_a = setpoint_a  # None: leave the current limit alone
        self.charging = charging  # None: leave on/off alone
        self.reason = reason
        self.safe = safe


def floor_tenth(amps):
    return int(amps * 10 + 1e-6) / 10


class Controller:
    def __init__(self, settings):
        """`settings` is the config's "control" section."""
        self.s = settings
        self.setpoint_a = None
        self.on = None
        self.last_seq = None
        self.changed_ms = None  # when the setpoint last went up (settling)
        self.raised_ms = None
        self.below_since = None  # surplus short of the minimum since (ms)
        self.above_since = None  # surplus enough for the minimum since (ms)
        self.available_w = None
        self.guarded_w = 0  # house battery discharge left out of the surplus, W
        self.same_grid = None  # (grid W, since ms, charger W then): see _frozen
        self.frozen = None  # why the grid value is taken as frozen, until it moves
        self.learn_wait_ms = LEARN_RETRY_MS
        self.deaf = False  # cut because it does not answer HEX, since the last learn attempt
        self.learn_tried_ms = None  # when we last powered an unknown charger up to probe it
        self.powered_on_ms = None  # when we switched the charger's mains on (it boots)
        self.retry_ms = None  # a charger that did not come up: no new power-up before this
        self.rise_since = None  # stored-only: since when the surplus allows more
        self.rise_to = None  # stored-only: the lowest current that surplus allowed since then
        self.decision = Decision(reason="starting")

    # -- helpers ---------------------------------------------------------------------------

    def _ms(self, seconds):
        return int(seconds * 1000)

    def _since(self, now, start):
        return (now - start) / 1000 if start is not None else 0

    def _safe(self, sit, why):
        if self.s["safe_state"] == "off" and (sit.can_switch_off or sit.powered_off):
            self.on = False
            return Decision(None, False, "safe: %s; charging off" % why, True)
        low = sit.min_a
        self.setpoint_a = low
        note = ""
        if low is not None and sit.voltage_v:
            note = " (about %d W)" % (low * sit.voltage_v / self.s["efficiency"])
        return Decision(low, True, "safe: %s; holding the minimum %s A%s" % (why, low, note), True)

    # -- the step ---------------------------------------------------------------------------

    def step(self, now, sit):
        mode = self.s["mode"]
        if mode == OFF:
            self.decision = Decision(None, None, "off: the charger is left as it is")
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
        frozen = self._frozen(now, sit)
        if frozen:
            return self._safe(sit, frozen)
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

    def _track(self, now, sit):
        s = self.s
        eff = s["efficiency"]
        volts = sit.voltage_v or 0
        charging = self.on if self.on is not None else bool(sit.charging)
        drawing = 0.0
        if charging and not sit.powered_off and sit.current_a and volts:
            drawing = max(0.0, sit.current_a) * volts / eff
        available = drawing - sit.grid_w + s["target_grid_w"]
        discharge = -sit.battery_w if sit.battery_w is not None else 0
        self.guarded_w = 0
        if s["house_battery_guard"] and discharge > HOUSE_IDLE_W:
            # ESS holding the grid at its setpoint would feed us from the house battery
            self.guarded_w = discharge
            available -= discharge
        self.available_w = available
        if not volts or sit.min_a is None:
            return Decision(None, None, "waiting: the charger's voltage and minimum are not known")
        min_w = sit.min_a * volts / eff
        if sit.stored_only:
            return self._stored(now, sit, available, volts, min_w, charging, drawing)
        if not charging:
            return self._maybe_enable(now, sit, available, min_w)
        if available < min_w - s["disable_threshold_w"]:
            self.above_since = None
            if self.below_since is None:
                self.below_since = now
            waited = self._since(now, self.below_since)
            if waited >= s["disable_delay_s"] and (sit.can_switch_off or sit.powered_off):
                self.on = False
                self.setpoint_a = sit.min_a
                return Decision(
                    None,
                    False,
                    "off: %d W available, the minimum needs %d W" % (available, min_w),
                )
            self.setpoint_a = sit.min_a
            if not sit.can_switch_off:
                return Decision(
                    sit.min_a,
                    True,
                    "at the minimum %s A: importing about %d W (this charger cannot be "
                    "switched off)" % (sit.min_a, min_w - available),
                )
            return Decision(
                sit.min_a,
                True,
                "at the minimum: %d W short for %d/%d s before switching off"
                % (min_w - available, waited, s["disable_delay_s"]),
            )
        self.below_since = None
        return self._regulate(now, sit, available, volts)

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
        if available >= need:
            if self.above_since is None:
                self.above_since = now
            waited = self._since(now, self.above_since)
            if waited >= s["enable_delay_s"]:
                self.on = True
                self.above_since = None
                if sit.powered_off:
                    self.powered_on_ms = now
                self.setpoint_a = sit.min_a
                self.changed_ms = now
                return Decision(sit.min_a, True, "on: %d W surplus covers the minimum" % available)
            return Decision(
                None,
                False,
                "waiting: %d W surplus for %d/%d s before switching on"
                % (available, waited, s["enable_delay_s"]),
            )
        self.above_since = None
        return Decision(
            None, False, "waiting: surplus %d W below the %d W minimum" % (max(available, 0), need)
        )

    def _regulate(self, now, sit, available, volts):
        s = self.s
        eff = s["efficiency"]
        target = floor_tenth(max(available, 0) * eff / volts)
        cap = sit.max_a
        limited_by = "your maximum"
        current = self.setpoint_a if self.setpoint_a is not None else sit.min_a
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
        if target < current:  # import (or about to): down at once
            self.setpoint_a = target
            self.changed_ms = now
            reason = "down to %s A: %d W available" % (target, available)
        elif target - current < s["deadband_w"] * eff / volts:
            reason = "holding %s A: %d W available" % (current, available)
            if target >= cap and current >= cap:
                reason = "at %s A, limited by %s" % (current, limited_by)
        elif self.changed_ms is not None and now - self.changed_ms < self._ms(s["settle_s"]):
            reason = "settling at %s A" % current
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
        import with the (wear-free) off switch or a decrease, never with a quick chase up."""
        s = self.s
        eff = s["efficiency"]
        if self.setpoint_a is None:
            self.setpoint_a = sit.max_a if sit.limit_a is None else sit.limit_a
        sp = self.setpoint_a
        fits = floor_tenth(min(max(available, 0) * eff / volts, sit.max_a))
        if not charging:
            self.rise_since = None
            if sit.budget_full:  # only at the limit as it stands
                min_w = sp * volts / eff
            decision = self._maybe_enable(now, sit, available, min_w)
            self.setpoint_a = sp  # the stored limit stays where it is, unless it must go down
            if decision.charging:
                if fits < sp:
                    self.setpoint_a = max(fits, sit.min_a)  # written before the current flows
                decision.setpoint_a = self.setpoint_a
            return decision
        need_w = sp * volts / eff
        if sit.state_code in ABSORPTION_AND_AFTER or (
            sit.current_a is not None and sit.current_a < sp - s["not_taking_a"]
        ):
            need_w = min(need_w, drawing)  # the battery takes less than the limit
        if available < need_w - s["deadband_w"]:
            self.rise_since = None
            if available < min_w or not sit.can_switch_off and fits < sit.min_a:
                if sit.can_switch_off or sit.powered_off:
                    self.on = False
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
        if fits >= sp + s["deadband_w"] * eff / volts and sp < sit.max_a:
            if self.rise_since is None:
                self.rise_since, self.rise_to = now, fits
            self.rise_to = min(self.rise_to, fits)
            waited = self._since(now, self.rise_since)
            if waited >= s["stored_rise_after_s"]:
                self.setpoint_a = self.rise_to
                self.rise_since = None
                return Decision(
                    self.setpoint_a,
                    True,
                    "up to %s A (a stored write): the surplus "
                    "held for %d s" % (self.setpoint_a, waited),
                )
            return Decision(
                sp,
                True,
                "holding %s A: room for %s A for %d/%d s before a stored "
                "write" % (sp, self.rise_to, waited, s["stored_rise_after_s"]),
            )
        self.rise_since = None
        return Decision(sp, True, "holding %s A: %d W available" % (sp, available))
