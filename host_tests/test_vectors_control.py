"""The Modbus TCP codec (venus.py) and the controller (control.py), table-driven: run by pytest
and on the MicroPython Unix port."""

import config
import control
import venus

# -- Modbus codec ----------------------------------------------------------------------------


def test_read_request_bytes():
    # the notes' example: 3 input registers from 820 on unit 100, transaction 1
    assert venus.build_read(1, 100, 4, 820, 3) == bytes.fromhex("000100000006640403340003")
    assert venus.build_read(0x1234, 30, 3, 2600, 3) == bytes.fromhex("1234000000061e030a280003")


def test_reply_parses():
    header = bytes.fromhex("00010000000964")
    assert venus.parse_header(header, 1, 100) == 8
    regs = venus.parse_pdu(bytes.fromhex("0406fcae00000000"), 4, 3)
    assert regs == [0xFCAE, 0, 0]
    assert venus.grid_power(regs, "sum") == -850
    assert venus.grid_power([100, 0xFFFF, 5], "L2") == -1
    assert venus.grid_power([100, 0xFFFF, 5], "sum") == 104


def expect_error(kind, fn, *args):
    try:
        fn(*args)
    except venus.ModbusError as err:
        assert err.kind == kind, (err.kind, err.detail)
        return err
    raise AssertionError("no error for %r" % (args,))


def test_malformed_replies_are_refused():
    cases = [
        (venus.parse_header, bytes.fromhex("00020000000964"), 1, 100),  # transaction id
        (venus.parse_header, bytes.fromhex("00010001000964"), 1, 100),  # protocol id
        (venus.parse_header, bytes.fromhex("00010000000064"), 1, 100),  # length 0
        (venus.parse_header, bytes.fromhex("00010000ffff64"), 1, 100),  # length too big
        (venus.parse_header, bytes.fromhex("0001000000091e"), 1, 100),  # unit id
        (venus.parse_header, bytes.fromhex("000100000009"), 1, 100),  # short
        (venus.parse_pdu, bytes.fromhex("0306fcae00000000"), 4, 3),  # function
        (venus.parse_pdu, bytes.fromhex("0404fcae0000"), 4, 3),  # byte count
        (venus.parse_pdu, bytes.fromhex("0406fcae0000"), 4, 3),  # truncated
        (venus.parse_pdu, bytes.fromhex("8402ff"), 4, 3),  # exception of 3 bytes
        (venus.parse_pdu, b"", 4, 3),
    ]
    for fn, data, a, b in cases:
        expect_error(venus.PROTOCOL, fn, data, a, b)


def test_exception_responses():
    err = expect_error(venus.EXCEPTION, venus.parse_pdu, bytes.fromhex("8402"), 4, 3)
    assert err.code == 2 and err.detail == "illegal data address"
    err = expect_error(venus.EXCEPTION, venus.parse_pdu, bytes.fromhex("840a"), 4, 3)
    assert "unit id not found" in err.detail
    err = expect_error(venus.EXCEPTION, venus.parse_pdu, bytes.fromhex("8363"), 3, 3)
    assert err.code == 0x63 and err.detail == "exception 99"


# -- the controller ---------------------------------------------------------------------------

V = 25.0  # battery volts in these tables
EFF = 0.92


def settings(**changes):
    values = config.defaults()["control"]
    values["mode"] = "auto"
    values.update(changes)
    return values


def situation(**changes):
    sit = control.Situation()
    sit.grid_w, sit.grid_seq, sit.grid_age_s = 0, 1, 0.5
    sit.link_up = sit.link_seen = True
    sit.voltage_v, sit.current_a, sit.state_code = V, 0.0, 3
    sit.min_a, sit.max_a, sit.limit_a = 3.0, 12.0, 12.0
    sit.charging = True
    sit.can_switch_off = True
    if changes.get("powered_off") and "charging" not in changes:
        sit.charging = False  # as the app reports a charger whose mains we cut
    for key, value in changes.items():
        setattr(sit, key, value)
    return sit


def watts(amps):
    return amps * V / EFF


def run_steps(ctl, steps):
    """steps: (now_ms, situation changes) -> the list of decisions."""
    out = []
    seq = 0
    for now, changes in steps:
        seq += 1
        changes.setdefault("grid_seq", seq)
        out.append(ctl.step(now, situation(**changes)))
    return out


def test_off_and_manual():
    d = control.Controller(settings(mode="off")).step(0, situation())
    assert (d.setpoint_a, d.charging) == (None, None) and "left to itself" in d.reason
    ctl = control.Controller(settings(mode="manual", manual_current_a=20.0))
    d = ctl.step(0, situation())
    assert (d.setpoint_a, d.charging) == (12.0, True)  # clamped to the maximum
    ctl = control.Controller(settings(mode="manual", manual_current_a=1.0, manual_charging=False))
    assert (ctl.step(0, situation()).setpoint_a, ctl.decision.charging) == (3.0, False)


def test_surplus_switches_on_after_the_enable_delay_and_tracks():
    ctl = control.Controller(settings(enable_delay_s=3, enable_threshold_w=30))  # a margin
    off = dict(charging=False)
    d = run_steps(ctl, [(0, dict(off, grid_w=200))])
    assert d[0].charging is False and "below the" in d[0].reason
    # the minimum (3 A, 82 W) plus the 30 W margin: 150 W is enough, for 3 s
    d = run_steps(ctl, [(1000, dict(off, grid_w=-150, grid_seq=2)),
                        (2000, dict(off, grid_w=-150, grid_seq=3)),
                        (4000, dict(off, grid_w=-150, grid_seq=4))])
    assert d[0].charging is False and "waiting" in d[0].reason
    assert d[1].charging is False
    assert d[2].charging is True and d[2].reason.startswith("on:")
    assert d[2].setpoint_a == control.floor_tenth((150 - 3) * EFF / V)  # what fits, not more
    # charging at 5.4 A; more surplus: up to what fits, in one step
    d = run_steps(ctl, [(6000, dict(current_a=5.4, grid_w=-300, grid_seq=5))])
    assert d[0].setpoint_a > 5.4 and "up to" in d[0].reason


def test_the_first_decision_and_one_after_the_safe_state_do_not_wait():
    """At start and after a fault the surplus is there already: no enable delay."""
    ctl = control.Controller(settings(enable_delay_s=3))
    d = ctl.step(0, situation(charging=False, grid_w=-400))
    assert d.charging is True and d.setpoint_a == 12.0
    ctl.step(1000, situation(grid_age_s=None))  # safe: no data
    d = ctl.step(2000, situation(charging=False, grid_w=-400, grid_seq=9))
    assert d.charging is True


def test_import_steps_down_at_once():
    ctl = control.Controller(settings(overdrive=False))
    ctl.on, ctl.setpoint_a = True, 10.0
    d = ctl.step(0, situation(current_a=10.0, grid_w=100))
    # available = 10 A draw - 100 W import - 3 W margin
    expected = control.floor_tenth((watts(10.0) - 100 - 3) * EFF / V)
    assert d.setpoint_a == expected and d.reason.startswith("down to")


def test_a_big_step_down_holds_the_minimum_first():
    """tau 2 s: from 10 A to 4 A the current needs tau*ln((10-3)/(4-3)) = 3.9 s at the
    minimum, less the half loop delay already spent; then the new limit, which it holds."""
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 10.0
    grid = watts(10.0) - watts(4.0) - 3 + 1  # 4 A (less a tenth) is what fits
    d = ctl.step(0, situation(current_a=10.0, grid_w=grid))
    assert d.setpoint_a == 3.0 and "holding the minimum" in d.reason
    until, then = ctl.overdrive
    assert then == 3.9 and 3000 < until < 3700
    d = ctl.step(2000, situation(current_a=6.0, grid_w=grid - watts(4.0), grid_seq=2))
    assert d.setpoint_a == 3.0  # still on its way down: no rise meanwhile
    d = ctl.step(until, situation(current_a=4.2, grid_seq=2))
    assert d.setpoint_a == 3.9 and "got there" in d.reason
    # a small step is just the new limit
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 5.0
    d = ctl.step(0, situation(current_a=5.0, grid_w=20))
    assert 4.0 < d.setpoint_a < 5.0 and ctl.overdrive is None


def test_no_step_down_while_exporting_and_the_current_is_still_below_the_limit():
    """The charger's reports lag its ramp, so the surplus reads low while it rises: with the
    house exporting, the limit stays; import, or a falling trend, takes it down at once."""
    def first(grid, current_a=4.0, grids=()):
        ctl = control.Controller(settings(overdrive=False))
        ctl.on, ctl.setpoint_a = True, 11.0
        for k, g in enumerate(grids):  # earlier readings, for a trend
            ctl.step(k * 1000, situation(current_a=current_a, grid_w=g, grid_seq=k + 1))
        n = len(grids)
        return ctl.step(n * 1000, situation(current_a=current_a, grid_w=grid, grid_seq=n + 1))

    held = first(-150)  # 4 A drawn + 150 W exported reads as ~7.5 A of surplus
    assert held.setpoint_a == 11.0 and "still below" in held.reason
    down = first(10)  # importing: down at once, whatever the ramp
    assert down.setpoint_a < 5.0 and down.reason.startswith("down to")
    at_limit = first(-150, current_a=10.5)  # the current is there: the surplus is real
    assert "still below" not in at_limit.reason and at_limit.setpoint_a >= 11.0
    falling = first(-150, grids=(-250, -200))  # a trend: ahead of it
    assert falling.setpoint_a < 11.0 and "falling" in falling.reason


def test_a_falling_surplus_is_met_ahead_but_a_step_is_not_a_trend():
    def run(grids):
        ctl = control.Controller(settings(overdrive=False))
        ctl.on, ctl.setpoint_a = True, 12.0
        for k, grid in enumerate(grids):
            d = ctl.step(k * 1000, situation(current_a=10.0, grid_w=grid, grid_seq=k + 1))
        return d

    ramp = run([-100, -50, 0])  # 50 W/s less surplus: 150 W ahead (tau 2 s + 1 s)
    assert "falling: 150 W ahead" in ramp.reason
    assert ramp.setpoint_a == control.floor_tenth((watts(10.0) - 0 - 3 - 150) * EFF / V)
    step = run([-100, 0, 0])
    assert "falling" not in step.reason
    noise = run([-100, -95, -90])
    assert "falling" not in noise.reason


def test_below_the_minimum_switches_off_or_holds():
    ctl = control.Controller(settings(disable_delay_s=0))
    ctl.on, ctl.setpoint_a = True, 3.0
    d = ctl.step(0, situation(current_a=3.0, grid_w=100))
    assert d.charging is False and d.reason.startswith("off:")
    # 50 W short: the minimum is held until the import reaches 400 W*s (8 readings)
    ctl = control.Controller(settings(off_after_ws=400, disable_delay_s=60))
    ctl.on, ctl.setpoint_a = True, 3.0
    stored = dict(switch_is_stored=True, current_a=3.0, grid_w=50)
    decisions = [ctl.step(k * 1000, situation(grid_seq=k + 1, **stored)) for k in range(12)]
    offs = [k for k, d in enumerate(decisions) if d.charging is False]
    assert offs and 6 <= offs[0] <= 8, [d.reason for d in decisions]
    assert "W*s of import before switching off" in decisions[1].reason
    # readings 2 s apart (a slow meter): each stands for its 2 s of import
    ctl = control.Controller(settings(off_after_ws=400, disable_delay_s=60))
    ctl.on, ctl.setpoint_a = True, 3.0
    slow = [ctl.step(k * 2000, situation(grid_seq=k + 1, **stored)) for k in range(8)]
    assert [d.charging for d in slow].index(False) == 4, [d.reason for d in slow]
    # where switching is free (0x2015 = 0, a plug): off on the first reading
    ctl = control.Controller(settings(off_after_ws=400, disable_delay_s=60))
    ctl.on, ctl.setpoint_a = True, 3.0
    assert ctl.step(0, situation(current_a=3.0, grid_w=50)).charging is False
    # a big shortfall: off on the first reading
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 3.0
    assert ctl.step(0, situation(current_a=3.0, grid_w=900)).charging is False
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 3.0
    d = ctl.step(0, situation(current_a=3.0, grid_w=100, can_switch_off=False))
    assert (d.charging, d.setpoint_a) == (True, 3.0) and "cannot be switched off" in d.reason


def test_switching_on_by_a_stored_write_is_paced():
    """0x0200 may be a flash write: a burst of switch-ons, then about five an hour (150 a
    day, a fifth kept for going down); switching off never waits."""
    ctl = control.Controller(settings(enable_delay_s=0))
    budget = dict(switch_is_stored=True, daily_max=150, writes_left=150)
    t, ons = 0, 0
    for cycle in range(14):
        d = ctl.step(t, situation(charging=False, grid_w=-500, grid_seq=2 * cycle + 1, **budget))
        if d.charging:
            ons += 1
        else:
            assert "stored write" in d.reason
        t += 1000
        d = ctl.step(t, situation(charging=True, current_a=3.0, grid_w=900,
                                  grid_seq=2 * cycle + 2, **budget))
        assert d.charging is False  # off at once, every time
        t += 1000
    assert ons == control.PACE_BURST
    d = ctl.step(t + 15 * 60000, situation(charging=False, grid_w=-500, grid_seq=99, **budget))
    assert d.charging is True  # refilled at 5 an hour
    low = dict(budget, writes_left=25)
    d = control.Controller(settings()).step(0, situation(charging=False, grid_w=-500, **low))
    assert d.charging is False and "budget" in d.reason  # the rest is kept for going down


def test_a_switch_not_confirmed_is_not_described_as_done():
    ctl = control.Controller(settings())
    d = ctl.step(0, situation(charging=False, grid_w=-500))
    assert d.charging is True
    # the charger still reports off (the switch failed): the reason says so, no "at 12 A"
    d = ctl.step(1000, situation(charging=False, grid_w=-500, grid_seq=2))
    assert d.charging is True and "still reports off" in d.reason


def test_a_gx_that_says_it_has_no_value_means_the_minimum_at_once():
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 8.0
    d = ctl.step(0, situation(current_a=8.0, grid_w=-10, grid_failures=1))
    assert not d.safe  # one failed poll is not yet evidence
    d = ctl.step(1000, situation(current_a=8.0, grid_w=-10, grid_failures=2,
                                 grid_error="refused: Modbus TCP is off"))
    assert d.safe and (d.setpoint_a, d.charging) == (3.0, True) and "refused" in d.reason
    d = ctl.step(2000, situation(charging=False, grid_failures=2))
    assert d.safe and d.charging is None  # an off charger is not switched on for it
    d = ctl.step(12000, situation(grid_age_s=11, grid_failures=12))
    assert d.safe and d.charging is False  # stale: the safe state


def test_stale_data_and_lost_link_fail_safe():
    ctl = control.Controller(settings(stale_s=10))
    d = ctl.step(0, situation(grid_age_s=11, grid_error="refused"))
    assert d.safe and d.charging is False and "grid data 11 s old (refused)" in d.reason
    d = ctl.step(0, situation(grid_age_s=None))
    assert d.safe and "no grid data" in d.reason
    d = ctl.step(0, situation(link_up=False))
    assert d.safe and "charger link down" in d.reason
    d = ctl.step(0, situation(link_up=False, can_switch_off=False))
    assert (
        d.safe and (d.charging, d.setpoint_a) == (True, 3.0) and "holding the minimum" in d.reason
    )
    minimum = control.Controller(settings(safe_state="minimum"))
    assert minimum.step(0, situation(grid_age_s=99)).setpoint_a == 3.0
    # and back by itself when the data returns
    d = ctl.step(1000, situation(grid_w=-500, grid_seq=7))
    assert not d.safe


def test_fresh_readings_only():
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 5.0
    first = ctl.step(0, situation(current_a=5.0, grid_w=-300, grid_seq=4))
    same = ctl.step(250, situation(current_a=5.0, grid_w=+900, grid_seq=4))
    assert same is first  # the same reading: nothing new to act on


def test_absorption_does_not_chase_the_limit():
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 6.0
    d = ctl.step(20000, situation(current_a=4.0, state_code=4, grid_w=-800))
    assert d.setpoint_a == 6.0 and "what the battery takes" in d.reason


def test_unknown_charger_behind_a_plug_is_powered_to_learn_it():
    ctl = control.Controller(settings())
    d = ctl.step(0, situation(min_a=None, link_up=False, powered_off=True))
    assert d.charging is True and "learn" in d.reason
    d = ctl.step(1000, situation(min_a=None, link_up=False, powered_off=True))
    assert d.charging is None  # not again for a while
    d = ctl.step(0, situation(min_a=None, link_up=True))
    assert (d.setpoint_a, d.charging) == (None, None)


def test_a_charger_deaf_to_hex_is_switched_off_where_it_can_be():
    ctl = control.Controller(settings())
    d = ctl.step(0, situation(min_a=None, failed_probes=1))
    assert (d.setpoint_a, d.charging, d.safe) == (None, None, False)  # not yet: ask again
    deaf = situation(min_a=None, failed_probes=control.HEX_SILENT_PROBES)
    d = ctl.step(1000, deaf)
    assert (d.charging, d.safe) == (False, True) and "does not answer HEX" in d.reason
    # nothing to switch with (no plug, no charger command known): left as it is
    d = control.Controller(settings()).step(0, situation(
        min_a=None, failed_probes=control.HEX_SILENT_PROBES, can_switch_off=False))
    assert (d.setpoint_a, d.charging) == (None, None)


def test_stored_only_holds_and_rises_after_the_window():
    """Up to the lowest surplus of the last 10 s, once the write budget's interval allows;
    down at once on import; off when even the minimum does not fit."""
    ctl = control.Controller(settings(stored_rise_after_s=10))
    ctl.on = True
    sit = dict(stored_only=True, limit_a=5.0, current_a=5.0, daily_max=150, writes_left=150)
    grids = [-100, -50, -100, -75, -100, -100, -100, -100, -100, -100, -100]
    d = run_steps(ctl, [(k * 1000, dict(sit, grid_w=g)) for k, g in enumerate(grids[:5])])
    assert d[-1].setpoint_a == 5.0 and "a stored write in" in d[-1].reason
    d = run_steps(ctl, [(k * 1000, dict(sit, grid_w=g, grid_seq=20 + k))
                        for k, g in enumerate(grids) if k >= 5])
    lowest = control.floor_tenth((watts(5.0) + 50 - 3) * EFF / V)  # the -50 W reading
    assert d[-1].setpoint_a == lowest and "stored write" in d[-1].reason
    # the budget's interval between increases holds it back
    ctl2 = control.Controller(settings(stored_rise_after_s=0))
    d = ctl2.step(0, situation(**dict(sit, grid_w=-300, increase_wait_s=40)))
    assert d.setpoint_a == 5.0 and "in 40 s" in d.reason
    # import: down at once (a stored write), or off when even the minimum does not fit
    d = run_steps(ctl, [(22000, dict(sit, current_a=5.0, limit_a=5.0, grid_w=30, grid_seq=51))])
    assert 3.0 <= d[0].setpoint_a < 5.0 and d[0].charging is True
    d = run_steps(ctl, [(23000, dict(sit, grid_w=400, grid_seq=52))])
    assert d[0].charging is False


def test_a_charger_that_stays_silent_after_power_up_is_not_cycled():
    ctl = control.Controller(settings(enable_delay_s=0))
    ctl.on = False
    d = ctl.step(0, situation(link_up=False, powered_off=True, charging=False, grid_w=-800))
    assert d.charging is True  # surplus: the plug goes on
    d = ctl.step(5000, situation(link_up=False, powered_off=False, grid_w=-800, grid_seq=2))
    assert (d.charging, d.safe) == (None, False) and "starting up" in d.reason
    d = ctl.step(25000, situation(link_up=False, powered_off=False, grid_w=-800, grid_seq=3))
    assert d.safe and d.charging is False  # it never answered: off again
    d = ctl.step(26000, situation(link_up=False, powered_off=True, grid_w=-800, grid_seq=4))
    assert d.charging is False and "did not answer" in d.reason
    d = ctl.step(
        26000 + 300000, situation(link_up=False, powered_off=True, grid_w=-800, grid_seq=5)
    )
    assert d.charging is True  # five minutes later: one more try


def test_a_discharging_house_battery_is_no_surplus():
    # ESS exports 100 W at night from the house battery; the charger draws 6 A
    ess = dict(grid_w=-100, battery_w=-900, current_a=6.0)
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 6.0
    d = ctl.step(0, situation(**ess))
    assert d.charging is False and "discharge is no surplus" in d.reason  # off at once
    # the same without a house battery (or with the guard off): 100 W more to take
    for sit, guard in ((dict(ess, battery_w=None), True), (ess, False)):
        ctl = control.Controller(settings(house_battery_guard=guard))
        ctl.on, ctl.setpoint_a = True, 6.0
        d = ctl.step(20000, situation(**sit))
        assert d.setpoint_a > 6.0 and "house battery" not in d.reason
    # a battery idling at a few watts is not "discharging"; one that charges changes nothing
    for battery in (-20, 500):
        ctl = control.Controller(settings())
        ctl.on, ctl.setpoint_a = True, 6.0
        d = ctl.step(20000, situation(**dict(ess, battery_w=battery)))
        assert d.setpoint_a > 6.0 and ctl.guarded_w == 0


def test_a_grid_value_that_ignores_the_charger_is_frozen():
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 3.0
    t, seq = 0, 1
    for amps in (3.0, 5.0, 7.0, 9.0, 11.0, 12.0):  # the charger rises, the grid does not move
        d = ctl.step(t, situation(grid_w=-500, grid_seq=seq, current_a=amps))
        t, seq = t + 2500, seq + 1
    assert d.safe and "unchanged while the charger's draw moved" in d.reason
    assert d.charging is False
    # switched off, the draw is back where it was: still the same value, still frozen
    for k in range(4):
        d = ctl.step(t + k * 1000, situation(grid_w=-500, grid_seq=seq + k, current_a=3.0))
        assert d.safe and d.charging is False, d.reason
    seq += 4
    # the next reading that moves is a reading again
    d = ctl.step(t, situation(grid_w=-490, grid_seq=seq, current_a=0.0, charging=False))
    assert not d.safe
    # the same value for long, with the charger steady, is a quiet house: not frozen
    ctl = control.Controller(settings())
    ctl.on, ctl.setpoint_a = True, 6.0
    for k in range(10):
        d = ctl.step(k * 2500, situation(grid_w=-3, grid_seq=k + 1, current_a=6.0))
    assert not d.safe


def test_a_deaf_charger_behind_a_plug_is_tried_again_ever_more_rarely():
    ctl = control.Controller(settings())
    deaf = dict(min_a=None, failed_probes=control.HEX_SILENT_PROBES)
    unpowered = dict(min_a=None, link_up=False, powered_off=True)
    t = 0
    d = ctl.step(t, situation(**unpowered))
    waits = []
    for _ in range(4):
        assert d.charging is True and "learn" in d.reason  # powered up at t
        d = ctl.step(t + 5000, situation(min_a=None, link_up=False, link_seen=True))
        assert d.charging is None and "starting up" in d.reason  # booting: not cut at once
        cut = t + 45000  # two failed probes later
        for k in range(2):  # the plug switches a moment later: decided once, not doubled twice
            d = ctl.step(cut + k * 250, situation(**deaf))
            assert d.charging is False and d.safe
        t = cut + 1000
        d = ctl.step(t, situation(**unpowered))
        while d.charging is None:
            t += 10000
            d = ctl.step(t, situation(**unpowered))
        waits.append((t - cut) // 60000)
    assert waits == [10, 20, 40, 60]  # minutes: 5 doubled per deaf power-up, at most an hour
