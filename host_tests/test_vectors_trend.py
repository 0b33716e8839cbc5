"""Test vectors for firmware/trend.py (the chart's history); run by pytest and on the
MicroPython Unix port."""

import trend


def make(points=4):
    return trend.Trend((("grid_w", 1), ("setpoint_a", 10)), points)


def test_empty_history_has_empty_series():
    assert make().lists() == {"grid_w": [], "setpoint_a": []}


def test_values_come_back_oldest_first_with_their_scale():
    t = make()
    t.add((-350, 6.4))
    t.add((None, None))
    t.add((120.4, 12.05))
    assert t.lists() == {"grid_w": [-350, None, 120], "setpoint_a": [6.4, None, 12.0]}


def test_a_full_history_drops_the_oldest_and_never_grows():
    t = make(points=3)
    for i in range(7):
        t.add((i, i / 10))
    assert t.lists() == {"grid_w": [4, 5, 6], "setpoint_a": [0.4, 0.5, 0.6]}
    assert [len(c) for c in t.columns] == [3, 3]


def test_out_of_range_values_are_clamped_not_wrapped():
    t = make()
    t.add((50000, -4000.0))
    assert t.lists() == {"grid_w": [32767], "setpoint_a": [-3276.7]}
