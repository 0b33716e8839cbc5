"""What the charger link (firmware/charger.py) makes of the bytes the charger sends: the state
the controller and the page see. Run by pytest and on the MicroPython Unix port."""

import asyncio

import charger
import config
import vedirect as v
from test_vectors_vedirect import block

ASYNC = 0xA  # an async HEX frame: the charger reports a register by itself


def make_link():
    return charger.Link(None, config.defaults()["charger"], log=lambda line: None)


def take(link, data, now):
    link.take(data, len(data), now)


def report(register, payload):
    return v.frame(ASYNC, v.pack("un16", register) + b"\x00" + payload)


FULL = [(b"PID", b"0xA334"), (b"V", b"28800"), (b"I", b"9000"), (b"T", b"21"),
        (b"ERR", b"0"), (b"CS", b"3")]


def test_a_block_tail_that_passes_its_checksum_keeps_the_values_it_lacks():
    link = make_link()
    take(link, block(FULL), 1000)
    take(link, block([(b"ERR", b"0"), (b"CS", b"4")]), 5000)  # V, I and T absent
    s = link.state
    assert (s.voltage_v, s.current_a, s.temperature_c, s.state) == (28.8, 9.0, 21, 4)


def test_no_temperature_sensor_reads_none():
    link = make_link()
    take(link, block(FULL), 1000)
    take(link, block([(b"V", b"28800"), (b"I", b"9000"), (b"T", b"---")]), 5000)
    assert link.state.temperature_c is None


def test_charger_voltage_not_available_is_not_a_negative_voltage():
    link = make_link()
    take(link, block(FULL), 1000)
    take(link, report(0xEDD5, b"\xff\xff"), 1100)  # un16 0xFFFF: n/a
    assert link.state.voltage_v == 28.8
    take(link, report(0xEDD5, v.pack("un16", 2881)), 1200)
    assert link.state.voltage_v == 28.81
    take(link, report(0xED8D, v.pack("sn16", 2879)), 1300)
    assert link.state.voltage_v == 28.79


def test_a_triple_output_charger_reports_the_sum_of_its_outputs():
    link = make_link()
    take(link, block(FULL + [(b"I2", b"3000"), (b"I3", b"2000")]), 1000)
    assert link.state.current_a == 14.0
    take(link, report(0xED8C, v.pack("sn32", 7290)), 1100)  # output 1 only
    assert link.state.current_a == 14.0
    take(link, block(FULL + [(b"I2", b"0"), (b"I3", b"0")]), 2000)
    assert link.state.current_a == 9.0


def test_a_single_output_charger_prefers_the_fresher_hex_current():
    link = make_link()
    take(link, block(FULL), 1000)
    take(link, report(0xED8C, v.pack("sn32", 7290)), 1100)
    take(link, block(FULL), 2000)  # the text lags the HEX value (capture)
    assert link.state.current_a == 7.29


def test_a_week_of_silence_is_a_link_that_is_down():
    link = make_link()
    take(link, block(FULL), 1000)
    assert link.connected(1000 + 2000)
    assert not link.connected(1000 + 7 * 24 * 3600 * 1000)


def mode_after(answer):
    link = make_link()

    async def get_scaled(reg):
        return answer

    link._get_scaled = get_scaled
    asyncio.run(link._read_mode())
    return link.state.charging


def test_the_device_mode_is_on_off_or_unknown_never_guessed():
    assert mode_after(1) is True
    assert mode_after(4) is False
    assert mode_after(0) is False  # off on MPPTs
    assert mode_after(0xFC) is None  # standby
    assert mode_after(None) is None  # no answer, refused or 0xFF n/a


def test_without_a_rating_no_limit_is_ever_sent():
    link = make_link()
    link.state.min_a, link.state.max_a = 3.0, 0.0  # a charger that reported 0 A rated
    assert link.clamp(8.0) is None
    link.state.max_a = 12.0
    assert link.clamp(20.0) == 12.0 and link.clamp(1.0) == 3.0


def test_a_block_of_only_its_checksum_has_no_fields():
    p = v.Parser()
    events = [(ev.ok, ev.fields()) for ev in p.feed(block(FULL) + block([]), 0) if ev.ok]
    assert events[-1] == (True, [])
