"""Milliseconds since start that never wrap, on MicroPython and on CPython.

The board's time.ticks_ms() wraps every 2**30 ms (12.4 days) and ticks_diff() is right only for
stamps less than 6.2 days apart: a link silent for a week would read as fresh again, a write
made a week ago as made just now. This module's ticks_ms() adds up the port's wrapping ticks, so
ticks_diff is a plain subtraction at any age; it needs a call at least every 6.2 days (the
firmware calls it every second). Past 12.4 days the values are long ints on the board (a small
allocation per call). ticks_us() is the port's own, wrapping (17.9 min on the ESP32): compare
it only with us_diff(), and only over short spans."""


def since_start(raw_ms, raw_diff):
    """A non-wrapping ticks_ms made of a wrapping one (raw_ms) and its ticks_diff."""
    start = raw_ms()
    state = [start, start]  # the port's last ticks; ours: the same values until its first wrap

    def ticks_ms():
        now = raw_ms()
        state[1] += raw_diff(now, state[0])
        state[0] = now
        return state[1]

    return ticks_ms


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b


try:
    import time

    ticks_ms = since_start(time.ticks_ms, time.ticks_diff)
    ticks_us = time.ticks_us
    us_diff = time.ticks_diff
except AttributeError:  # CPython: a Venus OS service, the tests, the bench

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_us():
        return int(time.monotonic() * 1000000)

    us_diff = ticks_diff
