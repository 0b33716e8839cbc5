"""Test vectors for firmware/vedirect.py, run twice: by pytest on CPython and by
host_tests/mp_runner.py on the MicroPython Unix port. Plain functions and asserts only, no
pytest features, nothing CPython-only."""

import json

import vedirect as v

DATA = __file__.rsplit("/", 1)[0] + "/data/" if "/" in __file__ else "data/"


def parse(data, chunk=None, now_ms=0):
    """All events of `data` as plain tuples (events are reused by the parser, so copy them)."""
    p = v.Parser()
    out = []
    chunk = chunk or len(data) or 1
    for start in range(0, len(data), chunk):
        for ev in p.feed(data[start : start + chunk], now_ms):
            out.append(snapshot(ev))
    return p, out


def snapshot(ev):
    if ev.kind == "text":
        return ("text", ev.ok, ev.fields() if ev.ok else ev.reason)
    if not ev.ok:
        return ("hex", False, ev.reason)
    return ("hex", True, ev.text())


def block(fields, checksum=None):
    """A text block as the charger sends it; the checksum byte computed unless given."""
    body = b"".join(b"\r\n" + label + b"\t" + value for label, value in fields)
    body += b"\r\nChecksum\t"
    if checksum is None:
        checksum = (-sum(body)) & 0xFF
    return body + bytes([checksum])


def block_with_checksum(target):
    """A valid block whose checksum byte is `target` (e.g. ':' or '\\r'), via a filler field."""
    head = [(b"V", b"12800"), (b"I", b"1500")]
    needed = (-sum(block(head + [(b"PAD", b"")])[:-1]) - target) & 0xFF
    total = needed if needed >= 3 * 0x21 else needed + 256  # three printable bytes: 99..378
    filler = []
    for left in (2, 1, 0):
        c = min(0x7E, total - left * 0x21)
        if c == 0x3A:  # ":" would start a HEX frame
            c -= 1
        filler.append(c)
        total -= c
    fields = head + [(b"PAD", bytes(filler))]
    raw = block(fields)
    assert raw[-1] == target and sum(raw) & 0xFF == 0
    return raw, fields


IP22_BLOCK = (
    b"\r\nPID\t0xA332\r\nFWE\t0342FF\r\nSER#\tHQ2249TNFVM\r\nV\t26870\r\nI\t2000\r\nT\t---"
    b"\r\nERR\t0\r\nCS\t3\r\nHC#\t57825\r\nChecksum\t\x18"
)  # a real IP22 24/8 block (KinDR007/VictronMPPT-ESPHOME issue 160), checksum byte 0x18


# -- HEX builders: every example frame of the notes, section 2.7 --------------------------

BUILT_FRAMES = [
    (v.frame_ping(), b":154\n"),
    (v.frame_app_version(), b":352\n"),
    (v.frame_product_id(), b":451\n"),
    (v.frame(v.RESTART), b":64F\n"),
    (v.frame_get(0x0100), b":70001004D\n"),
    (v.frame_get(0x0102), b":70201004B\n"),
    (v.frame_get(0x010A), b":70A010043\n"),
    (v.frame_get(0x0200), b":70002004C\n"),
    (v.frame_get(0x0201), b":70102004B\n"),
    (v.frame_get(0x0207), b":707020045\n"),
    (v.frame_set(0x0200, "un8", 4), b":80002000447\n"),
    (v.frame_set(0x0200, "un8", 1), b":8000200014A\n"),
    (v.frame_get(0xEDF0), b":7F0ED0071\n"),
    (v.frame_set(0xEDF0, "un16", 60), b":8F0ED003C0034\n"),
    (v.frame_set(0xEDF0, "un16", 100), b":8F0ED0064000C\n"),
    (v.frame_set(0xEDF0, "un16", 120), b":8F0ED007800F8\n"),
    (v.frame_set(0xEDF0, "un16", 300), b":8F0ED002C0143\n"),
    (v.frame_get(0xEDC8), b":7C8ED0099\n"),
    (v.frame_get(0xEDDF), b":7DFED0082\n"),
    (v.frame_get(0xEDDE), b":7DEED0083\n"),
    (v.frame_get(0x2015), b":715200019\n"),
    (v.frame_get(0x200E), b":70E200020\n"),
    (v.frame_set(0x200E, "un8", 5), b":80E2000051A\n"),
    (v.frame_set(0x2015, "un16", 60), b":81520003C00DC\n"),
    (v.frame_set(0x2015, "un16", 0), b":8152000000018\n"),
    (v.frame_set(0x2015, "un16", None), b":8152000FFFF1A\n"),
    (v.frame_set(0x200E, "un8", 0), b":80E2000001F\n"),
    (v.frame_set_raw(0xEDF0, b"\x64\x00"), b":8F0ED0064000C\n"),
]


def test_builders_match_the_documented_frames():
    for built, expected in BUILT_FRAMES:
        assert built == expected, (built, expected)


def test_set_frame_range_is_checked():
    for vtype, value in (("un8", 256), ("un8", -1), ("un16", 65536), ("sn16", 32768)):
        try:
            v.frame_set(0xEDF0, vtype, value)
        except ValueError:
            continue
        raise AssertionError("%s accepted %d" % (vtype, value))


# -- HEX answers: (frame, code, register, flags, raw value hex) ----------------------------

ANSWERS = [
    (b":7F0ED009600DB\n", v.GET, 0xEDF0, 0, "9600"),  # HEX-MPPT example: 15.0 A
    (b":8F0ED0064000C\n", v.SET, 0xEDF0, 0, "6400"),  # set echo, 10.0 A
    (b":8F0ED041E004E\n", v.SET, 0xEDF0, 4, "1E00"),  # parameter error, nearest value 3.0 A
    (b":70002014B\n", v.GET, 0x0200, 1, ""),  # unknown register, no value
    (b":8001004010038\n", v.SET, 0x1000, 4, "0100"),  # BMV: rejected 0, answered with 1
    (b":54243CB\n", v.PING_REPLY, None, None, "4243"),
    (b":51641F9\n", v.PING_REPLY, None, None, "1641"),
    (b":134A37D\n", v.DONE, None, None, "34A3"),  # product id 0xA334
    (b":11641FD\n", v.DONE, None, None, "1641"),
    (b":181A330\n", v.DONE, None, None, "81A3"),  # BMV product id 0xA381
    (b":3020050\n", v.UNKNOWN, None, None, "0200"),
    (b":4AAAAFD\n", v.ERROR, None, None, "AAAA"),
]


def hexstr(data):
    return "".join("%02X" % b for b in data)


def test_answers_decode():
    for raw, code, register, flags, value in ANSWERS:
        p = v.Parser()
        events = list(p.feed(raw, 0))
        assert len(events) == 1, raw
        ev = events[0]
        assert ev.ok and ev.kind == "hex", (raw, ev.reason)
        assert ev.code == code, raw
        assert ev.register == register, raw
        assert ev.flags == flags, raw
        assert hexstr(ev.raw) == value, (raw, ev.raw)
        assert ev.text() + "\n" == raw.decode(), raw


# -- the IP22's async frames (notes section 2.8): (frame, register, type, value) -----------

ASYNC_FRAMES = [
    (b":A0920000022\n", 0x2009, "un8", 0),
    (b":A0E2000011C\n", 0x200E, "un8", 0x01),
    (b":A0E200021FC\n", 0x200E, "un8", 0x21),
    (b":A2001000400000026\n", 0x0120, "un32", 4),
    (b":A16EE00FFFF49\n", 0xEE16, "un16", None),
    (b":A8CED007A1C00003C\n", 0xED8C, "sn32", 7290),
    (b":A8FED00490086\n", 0xED8F, "sn16", 73),
    (b":AD7ED0049003E\n", 0xEDD7, "sn16", 73),
    (b":A8DED00400B86\n", 0xED8D, "sn16", 2880),
    (b":AD5ED00400B3E\n", 0xEDD5, "un16", 2880),
    (b":ADBED00E20998\n", 0xEDDB, "sn16", 2530),
    (b":A0102000444\n", 0x0201, "un8", 4),
    (b":A0702000000000042\n", 0x0207, "un32", 0),
    (b":A0D2000080016\n", 0x200D, "un16", 8),
    (b":A012000400BDF\n", 0x2001, "un16", 2880),
    (b":A0C2000FF20\n", 0x200C, "un8", None),
    (b":A072000BB0B00005E\n", 0x2007, "un32", 3003),
    (b":A082000000023\n", 0x2008, "un16", 0),
    (b":A4220003200B7\n", 0x2042, "un16", 50),
    (b":A132000FFFFFF7F9C\n", 0x2013, "sn32", None),
    (b":A15EC00004A\n", 0xEC15, "un8", 0),
]


def test_async_frames_decode():
    p = v.Parser()
    stream = b"".join(f[0] for f in ASYNC_FRAMES)
    got = []
    for ev in p.feed(stream, 0):
        assert ev.ok and ev.code == v.ASYNC and ev.flags == 0, ev.reason
        got.append((ev.register, ev.unpack(ASYNC_FRAMES[len(got)][2])))
    assert got == [(f[1], f[3]) for f in ASYNC_FRAMES], got
    assert p.hex_ok == len(ASYNC_FRAMES) and p.hex_bad == 0


def test_long_history_frame():
    raw = (
        b":A701000001DEC1000060000000000000000000000000000000000000000000000000000000000000000"
        b"00000000000000400BFFFF00FF0064\n"
    )  # 0x1070, the active charge-cycle record of the capture: 114 characters
    p, events = parse(raw)
    assert events == [("hex", True, raw.decode().strip())]
    ev = list(v.Parser().feed(raw, 0))[0]
    assert ev.register == 0x1070 and ev.value_size() == 52


def test_bad_hex_frames_are_dropped_and_counted():
    cases = [
        (b":A0920000023\n", v.BAD_CHECKSUM),
        (b":A092000002\n", v.BAD_ODD),
        (b":A0G20000022\n", v.BAD_HEX_DIGIT),
        (b":\n", v.BAD_ODD),
        (b":5\n", v.BAD_SHORT),
        (b":A090045\n", v.BAD_SHORT),  # a register frame needs id and flags
        (b":" + b"0" * 300 + b"\n", v.BAD_HEX_LENGTH),
    ]
    for raw, reason in cases:
        p, events = parse(raw + b":A0920000022\n")
        assert events[0] == ("hex", False, reason), (raw, events)
        assert events[-1] == ("hex", True, ":A0920000022"), (raw, events)
        assert p.hex_bad == 1 and p.hex_ok == 1, raw


def test_lowercase_hex_is_accepted():
    p, events = parse(b":a0920000022\n")
    assert events == [("hex", True, ":A0920000022")]


# -- text blocks -------------------------------------------------------------------------


def test_real_ip22_block():
    p, events = parse(IP22_BLOCK + b":A0920000022\n")
    fields = [
        ("PID", "0xA332"),
        ("FWE", "0342FF"),
        ("SER#", "HQ2249TNFVM"),
        ("V", "26870"),
        ("I", "2000"),
        ("T", "---"),
        ("ERR", "0"),
        ("CS", "3"),
        ("HC#", "57825"),
    ]
    assert events == [("text", True, fields), ("hex", True, ":A0920000022")], events
    assert p.text_ok == 1 and p.discarded == 0


def test_block_get_and_number():
    p = v.Parser()
    seen = 0
    for ev in p.feed(IP22_BLOCK, 0):
        seen += 1
        assert ev.get("V") == "26870" and ev.get("T") == "---" and ev.get("SER#") == "HQ2249TNFVM"
        assert ev.get("XX") is None and ev.get("Checksum") is None and ev.get("C") is None
        assert ev.number("V") == 26870 and ev.number("I") == 2000 and ev.number("CS") == 3
        assert ev.number("PID") == 0xA332 and ev.number("HC#") == 57825
        assert ev.number("T") is None and ev.number("T", -1) == -1
        assert ev.number("SER#") is None and ev.number("XX") is None
    assert seen == 1


def test_block_number_signs_and_empty_values():
    raw = block([(b"I", b"-1500"), (b"E", b""), (b"H", b"0x"), (b"X", b"12a")])
    p = v.Parser()
    for ev in p.feed(raw, 0):
        assert ev.number("I") == -1500
        assert ev.number("E") is None and ev.get("E") == ""
        assert ev.number("H") is None and ev.number("X") is None


def test_feed_size_limits_the_bytes_read():
    buf = bytearray(IP22_BLOCK + b":A0920000022\n")
    p = v.Parser()
    events = [snapshot(e) for e in p.feed(buf, 0, len(IP22_BLOCK))]
    assert [e[:2] for e in events] == [("text", True)]
    assert p.pending_bytes() == 0 and p.discarded == 0


def test_checksum_byte_is_taken_unconditionally():
    for target in b":\r\n\t<":
        raw, fields = block_with_checksum(target)
        p, events = parse(raw + b":A0920000022\n" + IP22_BLOCK)
        expect = [(a.decode(), b.decode()) for a, b in fields]
        assert events[0] == ("text", True, expect), (target, events)
        assert events[1] == ("hex", True, ":A0920000022"), (target, events)
        assert events[2][:2] == ("text", True), (target, events)


def test_hex_frame_inside_a_text_field():
    # the HEX bytes stay out of the text checksum; the field reads on after them
    cut = IP22_BLOCK.index(b"26870") + 3
    raw = IP22_BLOCK[:cut] + b":A0920000022\n" + IP22_BLOCK[cut:]
    p, events = parse(raw)
    assert events[0] == ("hex", True, ":A0920000022")
    assert events[1][:2] == ("text", True)
    assert ("V", "26870") in events[1][2]
    assert p.text_ok == 1 and p.hex_ok == 1 and p.discarded == 0


def test_hex_frame_between_fields_and_after_cr():
    for marker in (b"\r\nI\t", b"\r\nCS"):
        cut = IP22_BLOCK.index(marker) + 1  # after the "\r" of that field
        raw = IP22_BLOCK[:cut] + b":A0920000022\n" + IP22_BLOCK[cut:]
        p, events = parse(raw)
        assert [e[:2] for e in events] == [("hex", True), ("text", True)], (marker, events)


def test_bad_checksum_drops_the_block_and_resyncs():
    bad = IP22_BLOCK[:-1] + b"\x19"
    p, events = parse(IP22_BLOCK + bad + IP22_BLOCK)
    assert [e[:2] for e in events] == [("text", True), ("text", False), ("text", True)]
    assert events[1][2] == v.BAD_CHECKSUM
    assert p.text_ok == 2 and p.text_bad == 1 and p.discarded == len(bad)


def test_first_partial_block_is_discarded_quietly():
    tail = IP22_BLOCK[40:]  # the stream starts in the middle of a block
    p, events = parse(tail + IP22_BLOCK)
    assert [e[:2] for e in events] == [("text", True)]
    assert p.text_bad == 0 and p.discarded == len(tail)


def test_block_limits():
    long_label = block([(b"V", b"1"), (b"ABCDEFGHI", b"1")])
    long_value = block([(b"V", b"1" * 33)])
    many = block([(b"F%d" % i, b"1") for i in range(23)])
    ok_limits = block([(b"ABCDEFGH", b"1" * 32)] + [(b"F%d" % i, b"1") for i in range(21)])
    for raw, reason in (
        (long_label, v.BAD_LABEL),
        (long_value, v.BAD_VALUE),
        (many, v.BAD_FIELDS),
    ):
        p, events = parse(IP22_BLOCK + raw + IP22_BLOCK + IP22_BLOCK)
        assert events[0][:2] == ("text", True), events
        assert events[1] == ("text", False, reason), (reason, events)
        assert events[-1][:2] == ("text", True), events  # back in step one block later
        assert p.text_bad == 1, reason
    p, events = parse(ok_limits)
    assert p.text_ok == 1 and len(events[0][2]) == 22


def test_control_and_high_bytes_in_a_value_drop_the_block():
    for bad in (b"\x00", b"\x80", b"\xff", b"\n"):
        raw = IP22_BLOCK.replace(b"26870", b"268" + bad + b"0")
        p, events = parse(IP22_BLOCK + raw + IP22_BLOCK + IP22_BLOCK)
        assert events[1][:2] == ("text", False), (bad, events)
        assert p.text_ok == 3 and p.text_bad == 1, bad


def test_broken_hex_frame_inside_a_block_loses_both():
    cut = IP22_BLOCK.index(b"26870") + 3
    raw = IP22_BLOCK[:cut] + b":A09200X00022\n" + IP22_BLOCK[cut:]
    p, events = parse(IP22_BLOCK + raw + IP22_BLOCK)
    kinds = [e[:2] for e in events]
    assert kinds == [("text", True), ("hex", False), ("text", False), ("text", True)], kinds
    assert p.hex_bad == 1 and p.text_bad == 1 and p.text_ok == 2


def test_gap_resets_a_partial_frame():
    p = v.Parser()
    assert list(p.feed(IP22_BLOCK, 0))  # in step
    half = len(IP22_BLOCK) // 2
    assert list(p.feed(IP22_BLOCK[:half], 1000)) == []
    events = [snapshot(e) for e in p.feed(IP22_BLOCK[half:], 1000 + v.GAP_MS + 1)]
    assert events == [("text", False, v.BAD_GAP)], events
    assert p.text_bad == 1
    events = [snapshot(e) for e in p.feed(IP22_BLOCK, 3000)]
    assert events[0][:2] == ("text", True)
    # a partial HEX frame too
    assert list(p.feed(b":A09200", 4000)) == []
    events = [snapshot(e) for e in p.feed(b"00022\n:A0920000022\n", 4000 + v.GAP_MS + 1)]
    assert events == [("hex", False, v.BAD_GAP), ("hex", True, ":A0920000022")], events


def test_no_gap_within_the_limit():
    p = v.Parser()
    half = len(IP22_BLOCK) // 2
    list(p.feed(IP22_BLOCK[:half], 0))
    events = [snapshot(e) for e in p.feed(IP22_BLOCK[half:], v.GAP_MS)]
    assert events[0][:2] == ("text", True)


def test_abandoned_iteration_restarts_cleanly():
    p = v.Parser()
    it = p.feed(b":A0920000022\n:A0920000022\n" + IP22_BLOCK[:20], 0)
    next(it)  # the caller stops after one event
    events = [snapshot(e) for e in p.feed(IP22_BLOCK + IP22_BLOCK, 0)]
    assert [e[:2] for e in events] == [("text", True), ("text", True)], events
    assert p.discarded == 13 + 20


# -- the real capture --------------------------------------------------------------------


def load_capture():
    with open(DATA + "ip22-24-12-stream.bin", "rb") as f:
        stream = f.read()
    with open(DATA + "ip22-24-12-expected.json") as f:
        expected = json.load(f)
    return stream, expected


def test_capture_decodes_completely():
    stream, expected = load_capture()
    for chunk in (1, 7, 64, 4096):
        p = v.Parser()
        blocks = frames = 0
        for start in range(0, len(stream), chunk):
            for ev in p.feed(stream[start : start + chunk], 0):
                assert ev.ok, (chunk, ev.kind, ev.reason)
                if ev.kind == "text":
                    assert dict(ev.fields()) == expected["blocks"][blocks], (chunk, blocks)
                    blocks += 1
                else:
                    assert ev.text() == expected["hex"][frames], (chunk, frames)
                    frames += 1
        assert (blocks, frames) == (52, 1305), (chunk, blocks, frames)
        assert p.counters() == {
            "text_ok": 52,
            "text_bad": 0,
            "hex_ok": 1305,
            "hex_bad": 0,
            "discarded": 0,
        }, chunk
        assert p.pending_bytes() == 0


def test_capture_field_order_is_the_ip22s():
    stream, _ = load_capture()
    p = v.Parser()
    for ev in p.feed(stream, 0):
        if ev.kind == "text":
            labels = [label for label, _ in ev.fields()]
            assert labels == ["PID", "FWE", "SER#", "V", "I", "T", "ERR", "CS", "HC#"], labels


# -- value packing ------------------------------------------------------------------------

PACKED = [
    ("un8", 0, b"\x00"),
    ("un8", 254, b"\xfe"),
    ("un8", None, b"\xff"),
    ("sn8", -1, b"\xff"),
    ("sn8", -128, b"\x80"),
    ("sn8", None, b"\x7f"),
    ("un16", 0x0B40, b"\x40\x0b"),
    ("un16", None, b"\xff\xff"),
    ("sn16", -2, b"\xfe\xff"),
    ("sn16", -32768, b"\x00\x80"),
    ("sn16", None, b"\xff\x7f"),
    ("un32", 1109027, b"\x23\xec\x10\x00"),
    ("un32", None, b"\xff\xff\xff\xff"),
    ("sn32", -7290, b"\x86\xe3\xff\xff"),
    ("sn32", None, b"\xff\xff\xff\x7f"),
]


def test_pack_unpack():
    for vtype, value, raw in PACKED:
        assert v.pack(vtype, value) == raw, (vtype, value)
        assert v.unpack(vtype, raw) == value, (vtype, raw)


def test_unpack_without_sentinel_and_wrong_size():
    assert v.unpack("un8", b"\xff", sentinel=False) == 255
    assert v.unpack("sn16", b"\xff\x7f", sentinel=False) == 32767
    try:
        v.unpack("un16", b"\x01")
    except ValueError:
        pass
    else:
        raise AssertionError("a 1-byte un16 was accepted")


def test_flag_names():
    assert v.flag_names(0) == []
    assert v.flag_names(1) == ["unknown id"]
    assert v.flag_names(6) == ["not supported", "parameter error"]
    assert v.flag_names(0x81) == ["unknown id", "0x80"]
