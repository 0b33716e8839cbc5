"""firmware/ticks.py: milliseconds that never wrap, made of the ESP32's ticks_ms, which wraps
every 2**30 ms (12.4 days) and whose ticks_diff is wrong past 6.2 days. Run by pytest and on the
MicroPython Unix port (whose own ticks wrap only after 2**62 ms: the ESP32's clock is modelled)."""

import ticks

PERIOD = 1 << 30  # the ESP32 port's ticks period, ms
DAY = 24 * 3600 * 1000


class Esp32Clock:
    """time.ticks_ms and time.ticks_diff as on the board."""

    def __init__(self, start=PERIOD - 5000):
        self.raw = start

    def advance(self, ms):
        self.raw = (self.raw + ms) % PERIOD

    def ticks_ms(self):
        return self.raw

    def ticks_diff(self, a, b):
        return ((a - b + PERIOD // 2) & (PERIOD - 1)) - PERIOD // 2


def test_the_port_s_own_diff_is_wrong_for_a_week_old_stamp():
    clock = Esp32Clock()
    then = clock.ticks_ms()
    clock.advance(7 * DAY)
    assert clock.ticks_diff(clock.ticks_ms(), then) < 0  # what the firmware used to see


def test_a_week_old_stamp_is_a_week_old():
    clock = Esp32Clock()
    now_ms = ticks.since_start(clock.ticks_ms, clock.ticks_diff)
    then = now_ms()
    for _ in range(7 * 24):  # called every hour (the firmware: every second)
        clock.advance(3600 * 1000)
        now_ms()
    assert ticks.ticks_diff(now_ms(), then) == 7 * DAY


def test_the_same_values_as_the_port_until_its_first_wrap_then_on_without_a_jump():
    clock = Esp32Clock(start=1234)
    now_ms = ticks.since_start(clock.ticks_ms, clock.ticks_diff)
    assert now_ms() == 1234
    last = now_ms()
    for step in (1, 999, 3 * DAY, 3 * DAY, 3 * DAY, 3 * DAY, 3 * DAY, 17):
        clock.advance(step)
        now = now_ms()
        assert now - last == step
        last = now
    assert last == 1234 + 1 + 999 + 15 * DAY + 17  # past two of the port's wraps


def test_ages_and_deadlines_are_plain_arithmetic():
    assert ticks.ticks_diff(ticks.ticks_add(PERIOD * 3, 250), PERIOD * 3) == 250
    a = ticks.ticks_ms()
    assert ticks.ticks_diff(ticks.ticks_ms(), a) >= 0
