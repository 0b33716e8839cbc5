"""Property tests of the VE.Direct parser: garbage never crashes it or fakes a valid frame,
chunking never matters, and valid frames survive the garbage around them."""

from __future__ import annotations

from typing import Any

import vedirect as v
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_vectors_vedirect import block, snapshot

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LABEL_CHARS = [c for c in range(0x21, 0x7F) if c != 0x3A]
VALUE_CHARS = [c for c in range(0x20, 0x7F) if c != 0x3A]

labels = st.lists(st.sampled_from(LABEL_CHARS), min_size=1, max_size=v.MAX_LABEL).map(bytes)
values = st.lists(st.sampled_from(VALUE_CHARS), max_size=v.MAX_VALUE).map(bytes)
fields = st.lists(
    st.tuples(labels.filter(lambda lb: lb != b"Checksum"), values),
    min_size=1,
    max_size=v.MAX_FIELDS,
)


@st.composite
def hex_frames(draw: Any) -> bytes:
    code = draw(st.sampled_from([1, 3, 4, 5, 7, 8, 0xA]))
    if code in (7, 8, 0xA):
        payload = draw(st.binary(min_size=2, max_size=2)) + draw(
            st.binary(min_size=1, max_size=61)
        )
    else:
        payload = draw(st.binary(max_size=8))
    return v.frame(code, payload)


@st.composite
def text_blocks(draw: Any) -> tuple[bytes, list[tuple[str, str]], list[bytes]]:
    """A valid block, possibly with HEX frames inserted anywhere but the checksum slot."""
    fs = draw(fields)
    raw = block(fs)
    inserted = draw(st.lists(hex_frames(), max_size=3))
    # cut points in the plain block, never between "Checksum\t" and its byte
    cuts = sorted(draw(st.integers(0, len(raw) - 2)) for _ in inserted)
    placed = sorted(zip(cuts, inserted), key=lambda cf: cf[0])  # stable: stream order
    for cut, frame in reversed(placed):
        raw = raw[:cut] + frame + raw[cut:]
    # the inserted frames come out in stream order, before the block that holds them
    order = [frame for _, frame in placed]
    return raw, [(a.decode(), b.decode()) for a, b in fs], order


@st.composite
def streams(draw: Any, garbage: st.SearchStrategy[bytes]) -> tuple[bytes, list[Any], int]:
    """Valid items with garbage runs between them; (stream, expected snapshots, garbage runs)."""
    out = b""
    expected: list[Any] = []
    runs = 0
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            raw, fs, inner = draw(text_blocks())
            expected += [("hex", True, f.decode().strip()) for f in inner]
            expected.append(("text", True, fs))
        else:
            raw = draw(hex_frames())
            expected.append(("hex", True, raw.decode().strip()))
        junk = draw(garbage)
        if junk:
            runs += 1
        out += junk + raw
    return out, expected, runs


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points + [len(data)]:
        pieces.append(data[start:p])
        start = p
    return pieces


def run(pieces: list[bytes], times: list[int] | None = None) -> tuple[v.Parser, list[Any]]:
    p = v.Parser()
    events: list[Any] = []
    for k, piece in enumerate(pieces):
        now = times[k] if times else 0
        for ev in p.feed(piece, now):
            check_event(ev)
            events.append(snapshot(ev))
    return p, events


def check_event(ev: Any) -> None:
    """An independent check of every event the parser calls valid."""
    if not ev.ok:
        assert ev.reason
        return
    if ev.kind == "text":
        raw = bytes(ev.buf[: ev.size])
        assert sum(raw) & 0xFF == 0
        assert raw.startswith(b"\r\n") and raw[-12:-1] == b"\r\nChecksum\t"
        fs = ev.fields()
        assert 1 <= len(fs) <= v.MAX_FIELDS
        for label, value in fs:
            assert 1 <= len(label) <= v.MAX_LABEL and len(value) <= v.MAX_VALUE
    else:
        text = ev.text()
        digits = text[1:]
        assert len(digits) % 2 == 1
        total = int(digits[0], 16) + sum(bytes.fromhex(digits[1:]))
        assert total & 0xFF == 0x55
        assert ev.size == len(text) + 1


def accounted(p: v.Parser, events: list[Any], fed: int, sizes: int) -> None:
    assert fed == sizes + p.discarded + p.pending_bytes()


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_random_bytes_never_raise_nor_fake_a_frame(data: bytes, cuts: list[int]) -> None:
    p = v.Parser()
    sizes = 0
    for piece in split(data, cuts):
        for ev in p.feed(piece, 0):
            check_event(ev)
            if ev.ok:
                sizes += ev.size
    accounted(p, [], len(data), sizes)


# Bytes that look like VE.Direct: the alphabet where a parser's edge cases live.
protocolish = st.lists(
    st.sampled_from(list(b"\r\n\t:0123456789ABCDEFChecksumPIDV\x00\xff ")), max_size=400
).map(bytes)


@FUZZ
@given(protocolish, st.lists(st.integers(0, 400), max_size=10), st.lists(st.integers(0, 900)))
def test_protocol_like_noise_with_gaps(data: bytes, cuts: list[int], steps: list[int]) -> None:
    pieces = split(data, cuts)
    times, now = [], 0
    for k in range(len(pieces)):
        now += steps[k] if k < len(steps) else 10
        times.append(now)
    p = v.Parser()
    sizes = 0
    for piece, now in zip(pieces, times):
        for ev in p.feed(piece, now):
            check_event(ev)
            if ev.ok:
                sizes += ev.size
    accounted(p, [], len(data), sizes)


@FUZZ
@given(streams(st.just(b"")), st.lists(st.integers(0, 10_000), max_size=30))
def test_chunking_never_matters(stream: tuple[bytes, list[Any], int], cuts: list[int]) -> None:
    data, expected, _ = stream
    _, whole = run([data])
    _, pieces = run(split(data, cuts))
    assert whole == pieces == expected


# garbage that cannot open a text block or a HEX frame: everything after it must survive
quiet_garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b":", b""))


@FUZZ
@given(streams(quiet_garbage), st.lists(st.integers(0, 10_000), max_size=30))
def test_valid_frames_survive_garbage_between_them(
    stream: tuple[bytes, list[Any], int], cuts: list[int]
) -> None:
    data, expected, _ = stream
    p, events = run(split(data, cuts))
    assert [e for e in events if e[1]] == expected
    assert p.text_ok + p.hex_ok == len(expected)


def lcs(a: list[Any], b: list[Any]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], (prev + 1 if x == y else max(row[j + 1], row[j]))
    return row[-1]


@FUZZ
@given(
    streams(st.binary(max_size=40) | protocolish), st.lists(st.integers(0, 10_000), max_size=30)
)
def test_any_garbage_costs_at_most_the_next_frame(
    stream: tuple[bytes, list[Any], int], cuts: list[int]
) -> None:
    data, expected, runs = stream
    _, events = run(split(data, cuts))
    ok = [e for e in events if e[1]]
    assert lcs(expected, ok) >= len(expected) - runs


@FUZZ
@given(text_blocks())
def test_hex_inside_a_text_field_leaves_the_block_valid(blk: Any) -> None:
    raw, fs, inner = blk
    p, events = run([raw])
    assert events == [("hex", True, f.decode().strip()) for f in inner] + [("text", True, fs)]
    assert p.discarded == 0
