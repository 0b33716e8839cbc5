"""The virtual IP22, driven in simulated time: its stream, its answers, its registers, its
faults. Minutes of charger time run in fractions of a second."""

from __future__ import annotations

from typing import Any

import pytest
import vedirect as v
from tools.sim.charger import ChargerOptions, VirtualIP22
from tools.sim.physics import Battery

import ip22
import ip22text

STEP = 0.02


class Run:
    """A charger, a clock and a parser on the receiving end."""

    def __init__(self, charger: VirtualIP22 | None = None) -> None:
        self.c = charger or VirtualIP22()
        self.t = 0.0
        self.parser = v.Parser()
        self.blocks: list[tuple[float, dict[str, str]]] = []
        self.frames: list[tuple[float, str]] = []
        self.bytes = 0
        self.quiet_since = 0.0
        self.longest_quiet = 0.0

    def advance(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t += STEP
            out = self.c.poll(self.t)
            self.bytes += len(out)
            if out:
                self.longest_quiet = max(self.longest_quiet, self.t - self.quiet_since)
                self.quiet_since = self.t
            for ev in self.parser.feed(out, int(self.t * 1000)):
                if not ev.ok:
                    continue
                if ev.kind == "text":
                    self.blocks.append((self.t, dict(ev.fields())))
                else:
                    self.frames.append((self.t, ev.text()))

    def send(self, frame: bytes) -> None:
        self.c.receive(frame, self.t)

    def request(self, frame: bytes, wait: float = 0.5) -> list[str]:
        """Send `frame`; the non-async frames that came back within `wait` seconds."""
        start = len(self.frames)
        self.send(frame)
        self.advance(wait)
        return [f for _, f in self.frames[start:] if not f.startswith(":A")]

    def asyncs(self, reg: int) -> list[tuple[float, int | None]]:
        out = []
        for t, text in self.frames:
            ev = next(iter(v.Parser().feed((text + "\n").encode(), 0)))
            if ev.code == v.ASYNC and ev.register == reg:
                out.append((t, ev.unpack_sized(False)))
        return out


def answer(frame: str) -> Any:
    return next(iter(v.Parser().feed((frame + "\n").encode(), 0)))


def test_ten_minutes_of_stream_parse_without_a_single_error() -> None:
    r = Run()
    r.advance(600)
    assert r.parser.counters() == {
        "text_ok": len(r.blocks),
        "text_bad": 0,
        "hex_ok": len(r.frames),
        "hex_bad": 0,
        "discarded": 0,
    }
    assert 598 <= len(r.blocks) <= 600
    labels = [list(b) for _, b in r.blocks]
    assert all(x == ["PID", "FWE", "SER#", "V", "I", "T", "ERR", "CS", "HC#"] for x in labels)
    assert 350 < r.bytes / 600 < 600  # the real IP22: ~450 B/s of 1 920
    pairs = r.asyncs(0x2009)
    assert 5900 <= len(pairs) <= 6000  # ten a second


def test_network_mode_goes_networked_after_ten_seconds_and_uptime_counts() -> None:
    r = Run()
    r.advance(20)
    modes = r.asyncs(0x200E)
    first_21 = next(t for t, value in modes if value == 0x21)
    assert 9.9 <= first_21 <= 10.5
    assert {value for t, value in modes if t < 9.9} == {0x01}
    assert {value for t, value in modes if t > 10.5} == {0x21}
    uptimes = [value for _, value in r.asyncs(0x0120)]
    assert uptimes == list(range(1, len(uptimes) + 1))
    assert r.asyncs(0x2001) and r.asyncs(0x200D)  # the link burst at networking


def test_text_values_follow_the_physics() -> None:
    r = Run()
    r.advance(15)
    t, block = r.blocks[-1]
    assert block["PID"] == "0xA334" and block["T"] == "---" and block["CS"] == "3"
    assert int(block["I"]) % 100 == 0 and int(block["V"]) % 10 == 0
    assert abs(int(block["I"]) / 1000 - r.c.physics.current_a) < 0.2
    assert abs(int(block["V"]) / 1000 - r.c.physics.voltage) < 0.05
    assert r.blocks[0][1]["CS"] == "245"  # starting up


@pytest.mark.parametrize("pid", sorted(ip22text.PRODUCTS))
def test_every_model_answers_its_identity(pid: int) -> None:
    r = Run(VirtualIP22(ChargerOptions(model=pid)))
    model, volts, rated, outputs = ip22text.product(pid)
    assert r.request(v.frame_product_id()) == [
        v.frame(v.DONE, v.pack("un16", pid)).decode().strip()
    ]
    assert answer(r.request(v.frame_get(0xEDDF))[0]).unpack("un16") == rated * 10
    assert answer(r.request(v.frame_get(0xEDDE))[0]).unpack("un8") == outputs
    assert answer(r.request(v.frame_get(0xEDC8))[0]).unpack("un16") == rated * 10 // 4
    r.advance(2)
    assert abs(r.c.physics.voltage - volts) < volts * 0.15


def test_ping_app_version_and_unknown_command() -> None:
    r = Run()
    assert r.request(v.frame_ping()) == [":54243CB"]
    assert r.request(v.frame_app_version()) == [":14243CF"]
    assert r.request(v.frame(0x2)) == [":3020050"]  # the document's example


def test_garbled_request_gets_framing_error() -> None:
    r = Run()
    assert r.request(b":7F0ED0072\n") == [":4AAAAFD"]
    assert r.c.counters.bad_requests == 1


def test_get_unknown_and_set_read_only() -> None:
    r = Run(VirtualIP22(ChargerOptions(device_mode="absent")))
    assert r.request(v.frame_get(0x0200)) == [":70002014B"]  # the notes' expected answer
    assert r.request(v.frame_get(0x1234)) == [v.frame(v.GET, b"\x34\x12\x01").decode().strip()]
    reply = answer(r.request(v.frame_set(0xED8D, "sn16", 100))[0])
    assert reply.code == v.SET and reply.flags == v.FLAG_NOT_SUPPORTED


def test_stored_limit_set_is_echoed_and_writes_are_counted() -> None:
    r = Run()
    frame = ip22.set_frame(0xEDF0, 10.0)
    assert r.request(frame) == [frame.decode().strip()]  # echo identical to the request
    r.request(frame)
    r.request(ip22.set_frame(0xEDF0, 7.5))
    assert (r.c.counters.nvm_writes, r.c.counters.nvm_changes) == (3, 2)
    assert answer(r.request(v.frame_get(0xEDF0))[0]).unpack("un16") == 75


def test_below_minimum_reject() -> None:
    r = Run()
    r.request(ip22.set_frame(0xEDF0, 10.0))
    assert r.request(ip22.set_frame(0xEDF0, 2.0)) == [":8F0ED04640008"]  # flags 4, 10.0 A kept
    assert r.request(ip22.set_frame(0xEDF0, 12.5)) == [":8F0ED04640008"]  # above the rating too
    assert r.c.stored_limit == 100 and r.c.counters.nvm_writes == 1


def test_below_minimum_clamp() -> None:
    r = Run(VirtualIP22(ChargerOptions(below_min="clamp")))
    reply = answer(r.request(ip22.set_frame(0xEDF0, 2.0))[0])
    assert reply.flags == 0 and reply.unpack("un16") == 30  # 3.0 A stored and echoed
    assert r.c.stored_limit == 30 and r.c.counters.nvm_changes == 1


def test_current_follows_the_limit_with_the_time_constant() -> None:
    r = Run(VirtualIP22(battery=Battery(soc=0.3)))
    r.advance(15)  # 3 s start-up, then six time constants
    assert r.c.physics.current_a == pytest.approx(12.0, abs=0.1)
    r.request(ip22.set_frame(0xEDF0, 6.0), wait=0.02)
    r.advance(2.0)  # one time constant: 63 % of the way
    assert r.c.physics.current_a == pytest.approx(12 - 6 * 0.632, abs=0.3)
    r.advance(10)
    assert r.c.physics.current_a == pytest.approx(6.0, abs=0.05)


def test_volatile_limit_with_network_mode_and_its_60_s_fallback() -> None:
    r = Run(VirtualIP22(battery=Battery(soc=0.3)))
    r.advance(12)
    assert r.request(v.frame_set(0x200E, "un8", 0x05))
    assert r.request(ip22.set_frame(0x2015, 4.0)) == [":81520002800F0"]
    r.advance(15)
    assert r.c.effective_limit_raw(r.t) == 40
    assert r.c.physics.current_a == pytest.approx(4.0, abs=0.1)
    assert r.c.counters.nvm_writes == 0  # the volatile path never touches flash
    for _ in range(3):  # refreshed every 25 s: holds
        r.advance(25)
        r.request(v.frame_set(0x200E, "un8", 0x05), wait=0.02)
        r.request(ip22.set_frame(0x2015, 4.0), wait=0.02)
    assert r.c.effective_limit_raw(r.t) == 40
    r.advance(61)  # no refresh: back to 0xEDF0
    assert r.c.effective_limit_raw(r.t) == 120
    assert answer(r.request(v.frame_get(0x2015))[0]).unpack("un16") is None
    r.advance(10)
    assert r.c.physics.current_a > 11


def test_volatile_limit_is_capped_by_the_stored_one_and_zero_stops() -> None:
    r = Run()
    r.request(ip22.set_frame(0xEDF0, 5.0))
    r.request(v.frame_set(0x200E, "un8", 0x05))
    r.request(ip22.set_frame(0x2015, 10.0))
    assert r.c.effective_limit_raw(r.t) == 50
    r.request(ip22.set_frame(0x2015, 0.0))
    r.advance(15)
    assert r.c.physics.current_a == 0


def test_volatile_path_absent() -> None:
    r = Run(VirtualIP22(ChargerOptions(volatile="absent")))
    assert answer(r.request(v.frame_get(0x2015))[0]).flags == v.FLAG_UNKNOWN_ID
    assert answer(r.request(ip22.set_frame(0x2015, 4.0))[0]).flags == v.FLAG_UNKNOWN_ID


def test_device_mode_off_and_on() -> None:
    r = Run()
    r.advance(10)
    assert r.request(v.frame_set(0x0200, "un8", 4)) == [":80002000447"]
    r.advance(3)
    assert r.c.physics.current_a == 0 and r.blocks[-1][1]["CS"] == "0"
    assert r.asyncs(0x0207)[-1][1] == 0x04  # off reason: soft switch
    assert answer(r.request(v.frame_set(0x0200, "un8", 2))[0]).flags == v.FLAG_PARAMETER_ERROR
    r.request(v.frame_set(0x0200, "un8", 1))
    r.advance(1)
    assert r.c.physics.current_a == 0  # the start-up delay
    r.advance(10)
    assert r.c.physics.current_a > 5 and r.blocks[-1][1]["CS"] == "3"


def test_device_mode_absent_says_so_in_capabilities() -> None:
    r = Run(VirtualIP22(ChargerOptions(device_mode="absent")))
    assert answer(r.request(v.frame_set(0x0200, "un8", 4))[0]).flags == v.FLAG_UNKNOWN_ID
    assert answer(r.request(v.frame_get(0x0143))[0]).unpack("un32") & 0x01


def test_no_min_register() -> None:
    r = Run(VirtualIP22(ChargerOptions(min_register=False)))
    assert answer(r.request(v.frame_get(0xEDC8))[0]).flags == v.FLAG_UNKNOWN_ID


def test_fault_corrupt_and_drop_are_seen_and_survived() -> None:
    r = Run()
    r.c.faults.corrupt = 0.002
    r.c.faults.drop = 0.002
    r.advance(120)
    p = r.parser
    assert r.c.counters.bytes_corrupted > 50 and r.c.counters.bytes_dropped > 50
    assert p.text_bad + p.hex_bad > 20
    # a 104-byte block survives 0.4 % bad bytes with (1 - 0.004) ** 104 = 66 %
    assert 0.5 * 120 < len(r.blocks) < 0.8 * 120
    r.c.faults.corrupt = r.c.faults.drop = 0
    bad = p.text_bad + p.hex_bad
    r.advance(30)
    assert p.text_bad + p.hex_bad <= bad + 1


def test_fault_silence() -> None:
    r = Run()
    r.advance(5)
    r.c.faults.silent_until = r.t + 4
    blocks = len(r.blocks)
    r.advance(4)
    assert len(r.blocks) == blocks
    r.advance(3)
    assert r.longest_quiet >= 3.9 and len(r.blocks) >= blocks + 2


def test_fault_no_replies_and_slow_replies() -> None:
    r = Run()
    r.c.faults.no_replies = True
    assert r.request(v.frame_ping(), wait=2) == []
    r.c.faults.no_replies = False
    r.c.faults.reply_delay_s = 1.5
    assert r.request(v.frame_ping(), wait=1.4) == []
    r.advance(0.3)
    assert r.frames[-1][1] == ":54243CB" or ":54243CB" in [f for _, f in r.frames[-12:]]


def test_fault_text_pause_after_hex() -> None:
    r = Run()
    r.c.faults.text_pause_s = 4
    r.advance(5)
    before = len(r.blocks)
    r.request(v.frame_ping(), wait=3.5)
    assert len(r.blocks) == before  # text stopped, HEX goes on
    assert r.frames[-1][0] > r.t - 0.2
    r.advance(3)
    assert len(r.blocks) >= before + 2


def test_fault_reboot() -> None:
    r = Run()
    r.request(ip22.set_frame(0xEDF0, 8.0))
    r.advance(20)
    r.request(v.frame_set(0x200E, "un8", 0x05))
    r.request(ip22.set_frame(0x2015, 4.0))
    r.c.reboot(r.t)
    start = r.t
    r.advance(3)
    modes = [value for t, value in r.asyncs(0x200E) if t > start]
    assert set(modes) == {0x01}
    uptimes = [value for t, value in r.asyncs(0x0120) if t > start]
    assert uptimes[0] in (0, 1) and r.c.link.active_limit(r.t) is None
    assert r.c.stored_limit == 80  # flash survives
    assert r.blocks[-1][1]["CS"] == "245"


def test_ac_draw_and_efficiency() -> None:
    r = Run(VirtualIP22(battery=Battery(soc=0.3)))
    r.advance(15)
    ph = r.c.physics
    assert ph.ac_w == pytest.approx(ph.output_w / 0.93 + ph.no_load_w, rel=0.01)
    r.request(ip22.set_frame(0xEDF0, 3.0))
    r.advance(15)
    assert ph.output_w / (ph.ac_w - ph.no_load_w) < 0.90  # worse at a quarter load


def test_stages_bulk_absorption_float() -> None:
    c = VirtualIP22(battery=Battery(soc=0.85, capacity_ah=20))
    c.physics.absorption_h = 0.05
    r = Run(c)
    seen = []
    for _ in range(30):
        r.advance(20)
        seen.append(r.blocks[-1][1]["CS"])
    assert "3" in seen and "4" in seen and "5" in seen
    assert seen.index("3") < seen.index("4") < seen.index("5")
    assert c.physics.voltage == pytest.approx(27.6, abs=0.2)  # float, 13.8 V per 12 V


def test_lifepo4_battery() -> None:
    b = Battery(nominal_v=24, chemistry="lifepo4", soc=0.5)
    assert b.cells == 8 and 26.0 < b.ocv() < 26.7
    with pytest.raises(ValueError):
        Battery(chemistry="nickel")
