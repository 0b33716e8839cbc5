"""Millisecond ticks on MicroPython (wrapping, compare with ticks_diff) and on CPython."""

try:
    from time import ticks_add, ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython: a Venus OS service, the tests, the bench
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_us():
        return int(time.monotonic() * 1000000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b
