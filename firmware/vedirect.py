"""VE.Direct codec: a streaming parser for text blocks and HEX frames, HEX frame builders,
and little-endian register value packing.

Pure: no I/O and no clock; the caller passes `now_ms`. Written for MicroPython first: the byte
loop works on preallocated bytearrays and reuses its event objects, so parsing a steady stream
allocates nothing per byte and nothing per frame.

    p = Parser()
    for ev in p.feed(chunk, now_ms):
        if ev.ok and ev.kind == "hex": ...

An event is valid until the next call into the parser (events are reused); copy what you keep
(`TextBlock.fields()`, `HexFrame.raw`, `HexFrame.text()` return fresh objects).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from ticks import ticks_diff


# Limits from Victron's "VE.Direct Protocol" 3.33, "Implementation guidelines".
MAX_LABEL = const(8)
MAX_VALUE = const(32)
MAX_FIELDS = const(22)  # data fields; the Checksum field comes on top
# HEX: 96 decoded bytes (193 hex digits) holds the longest IP22 frame seen (0x1070, 52-byte
# payload, 114 chars) and a 64-byte model-name string with room to spare.
MAX_HEX_BYTES = const(96)
_MAX_HEX_DIGITS = const(193)  # command nibble + 2 * MAX_HEX_BYTES
GAP_MS = const(500)  # a longer silence between two bytes ends any partial frame
# 22 fields of "\r\n" + 8 + "\t" + 32, plus "\r\nChecksum\t" and the checksum byte
_BLOCK_SIZE = const(22 * 43 + 12)
_CHECKSUM_LABEL = b"Checksum"

# Parser states
_IDLE = const(0)  # between frames, hunting for "\r" (text) or ":" (HEX)
_NL = const(1)  # got "\r", expecting "\n"
_LABEL = const(2)
_VALUE = const(3)
_CHECKSUM = const(4)  # the next byte is the checksum, whatever it is
_HEX = const(5)

_TAB = const(9)
_LF = const(10)
_CR = const(13)
_COLON = const(58)

# HEX command / response codes (the first nibble of a frame)
PING = const(0x1)  # host -> device; the device's "done" answer uses the same nibble
DONE = const(0x1)
APP_VERSION = const(0x3)  # host -> device; a device answers an unknown command with 3
UNKNOWN = const(0x3)
PRODUCT_ID = const(0x4)  # host -> device; a device reports a framing error with 4
ERROR = const(0x4)
PING_REPLY = const(0x5)
RESTART = const(0x6)
GET = const(0x7)
SET = const(0x8)
ASYNC = const(0xA)

# Response codes as a device sends them, for logs and the CLI
CODE_NAMES = {
    DONE: "done",
    UNKNOWN: "unknown",
    ERROR: "error",
    PING_REPLY: "ping",
    GET: "get",
    SET: "set",
    ASYNC: "async",
}

# Flags of a get/set answer
FLAG_UNKNOWN_ID = const(0x01)
FLAG_NOT_SUPPORTED = const(0x02)
FLAG_PARAMETER_ERROR = const(0x04)
FLAG_NAMES = (
    (FLAG_UNKNOWN_ID, "unknown id"),
    (FLAG_NOT_SUPPORTED, "not supported"),
    (FLAG_PARAMETER_ERROR, "parameter error"),
)

# Why a frame was dropped
BAD_CHECKSUM = "checksum"
BAD_BYTE = "bad byte"
BAD_FRAMING = "framing"
BAD_LABEL = "label too long"
BAD_VALUE = "value too long"
BAD_FIELDS = "too many fields"
BAD_HEX_DIGIT = "not a hex digit"
BAD_HEX_LENGTH = "too long"
BAD_ODD = "odd number of hex digits"
BAD_SHORT = "too short"
BAD_GAP = "gap"
BAD_INTERRUPTED = "interrupted"


def _hex_values():
    table = bytearray(b"\xff" * 256)
    for i, c in enumerate(b"0123456789ABCDEF"):
        table[c] = i
    for i, c in enumerate(b"abcdef"):
        table[c] = 10 + i
    return bytes(table)


_HEXVAL = _hex_values()  # digit value per byte, 0xFF for anything that is not a hex digit


def flag_names(flags):
    """The flags of a get/set answer in words, e.g. ["parameter error"]."""
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    rest = flags & ~0x07
    if rest:
        names.append("0x%02X" % rest)
    return names


class TextBlock:
    """A text block: checksum-verified fields in the order they were sent."""

    kind = "text"

    def __init__(self):
        self.buf = bytearray(_BLOCK_SIZE)  # the block's bytes, HEX frames taken out
        self.size = 0
        self.ok = False
        self.reason = None

    def fields(self):
        """[(label, value), ...] as str, without the Checksum field."""
        out = []
        raw = bytes(self.buf[: self.size])
        end = raw.rfind(b"\r\nChecksum\t")
        for line in raw[2:end].split(b"\r\n"):
            if b"\t" in line:  # a block of only "Checksum" has none
                label, value = line.split(b"\t", 1)
                out.append((label.decode(), value.decode()))
        return out

    def _find(self, label):
        """(start, end) of the value of `label` in the block buffer, or None; no allocation."""
        buf = self.buf
        size = self.size
        n = len(label)
        i = 0  # at the "\r" of a field
        while i + 3 + n <= size:
            if buf[i + 2 + n] == _TAB:
                k = 0
                while k < n and buf[i + 2 + k] == ord(label[k]):
                    k += 1
                if k == n:
                    start = end = i + 3 + n
                    while end < size and buf[end] != _CR:
                        end += 1
                    return start, end
            i += 2
            while i < size and buf[i] != _CR:
                i += 1
        return None

    def get(self, label, default=None):
        """The value of field `label` as str."""
        span = self._find(label)
        if span is None or label == "Checksum":
            return default
        return bytes(self.buf[span[0] : span[1]]).decode()

    def has(self, label):
        return self._find(label) is not None

    def number(self, label, default=None):
        """The value of field `label` as int ("0x" prefix: hex), without allocating; `default`
        if the field is missing or not a number (the IP22 sends "---" for no temperature)."""
        span = self._find(label)
        if span is None:
            return default
        buf = self.buf
        i, end = span
        sign = 1
        if i < end and buf[i] == 45:  # "-"
            sign = -1
            i += 1
        base = 10
        if end - i > 2 and buf[i] == 48 and buf[i + 1] in (88, 120):  # "0x" or "0X"
            base = 16
            i += 2
        if i == end:
            return default
        value = 0
        while i < end:
            digit = _HEXVAL[buf[i]]
            if digit >= base:
                return default
            value = value * base + digit
            i += 1
        return sign * value


class HexFrame:
    """A HEX frame: `code`, and for get/set/async frames `register`, `flags` and the value."""

    kind = "hex"

    def __init__(self):
        self.buf = bytearray(MAX_HEX_BYTES)  # decoded payload bytes, the check byte last
        self.nbytes = 0
        self.code = 0
        self.size = 0
        self.ok = False
        self.reason = None

    def has_register(self):
        return self.code in (GET, SET, ASYNC)

    @property
    def register(self):
        if self.has_register():
            return self.buf[0] | (self.buf[1] << 8)
        return None

    @property
    def flags(self):
        if self.has_register():
            return self.buf[2]
        return None

    def value_start(self):
        return 3 if self.has_register() else 0

    def value_size(self):
        """Bytes of value (register frames) or payload (others), the check byte excluded."""
        return self.nbytes - 1 - self.value_start()

    @property
    def raw(self):
        start = self.value_start()
        return bytes(self.buf[start : start + self.value_size()])

    def unpack(self, vtype, sentinel=True):
        """The value as an int; `vtype` gives sign and width (see `unpack`)."""
        return unpack(vtype, self.buf, self.value_start(), self.value_size(), sentinel)

    def unpack_sized(self, signed, sentinel=True):
        """The value as an int of whatever width (1, 2 or 4 bytes) the frame carries."""
        return unpack_width(self.buf, self.value_start(), self.value_size(), signed, sentinel)

    def text(self):
        """The frame as sent, without the newline: ":A0920000022"."""
        return ":%X%s" % (self.code, hexstr(self.buf, self.nbytes))


def hexstr(data, n=None):
    """The first n bytes of data as uppercase hex digits."""
    return "".join("%02X" % data[i] for i in range(len(data) if n is None else n))


class Parser:
    """Byte-wise VE.Direct parser. `feed()` takes any chunking and returns an iterator of events.

    Counters: text_ok, text_bad, hex_ok, hex_bad, discarded (bytes not in any valid frame).
    A text block that started out of step (at start-up, or at a resync after an error) and so
    fails its checksum is counted as discarded bytes, not as a bad block.
    """

    def __init__(self):
        self.block = TextBlock()
        self.frame = HexFrame()
        self.text_ok = 0
        self.text_bad = 0
        self.hex_ok = 0
        self.hex_bad = 0
        self.discarded = 0
        self._data = b""
        self._i = 0
        self._end = 0
        self._last_ms = None
        self._state = _IDLE
        self._saved = _IDLE  # text state to resume after a HEX frame
        self._aligned = False  # True once a checksum byte was seen since the last resync
        self._tn = 0  # bytes in the text block buffer
        self._tsum = 0
        self._flen = 0  # length of the label or value being read
        self._nfields = 0
        self._hd = 0  # hex digits read
        self._hhi = 0  # first nibble of the byte being read
        self._pending_hex = False  # a HEX drop to report before reading on (after a gap)
        self._pending_text = None  # (reason, nbytes) of a text-block drop still to report

    def counters(self):
        return {
            "text_ok": self.text_ok,
            "text_bad": self.text_bad,
            "hex_ok": self.hex_ok,
            "hex_bad": self.hex_bad,
            "discarded": self.discarded,
        }

    def pending_bytes(self):
        """Bytes held in a partial frame (for accounting: fed = events + discarded + pending)."""
        n = self._tn
        if self._state == _HEX:
            n += 1 + self._hd
        return n

    def feed(self, data, now_ms=0, size=-1):
        """Parse `data` (the first `size` bytes of it, so a reused read buffer needs no slice)."""
        if self._i < self._end:
            # The caller stopped iterating early (an exception in its loop, say): the rest of
            # the old chunk is lost, so start over cleanly rather than splice two streams.
            self.discarded += self._end - self._i + self.pending_bytes()
            self._i = self._end
            self._reset()
        if self._state != _IDLE and self._last_ms is not None:
            if ticks_diff(now_ms, self._last_ms) > GAP_MS:
                self._drop_partial(BAD_GAP)
        self._last_ms = now_ms
        self._data = data
        self._i = 0
        self._end = len(data) if size < 0 else size
        return self

    def __iter__(self):
        return self

    def _reset(self):
        self._state = _IDLE
        self._saved = _IDLE
        self._tn = 0
        self._aligned = False
        self._pending_hex = False
        self._pending_text = None

    def __next__(self):
        if self._pending_hex:
            self._pending_hex = False
            return self.frame
        if self._pending_text is not None:
            event = self._emit_text_drop()
            if event is not None:
                return event
        data = self._data
        i = self._i
        end = self._end
        st = self._state
        tb = self.block.buf
        tn = self._tn
        ts = self._tsum
        flen = self._flen
        hd = self._hd
        hhi = self._hhi
        hb = self.frame.buf
        event = None
        while i < end:
            b = data[i]
            i += 1
            if st == _HEX:
                v = _HEXVAL[b]
                if v < 16:
                    if hd & 1:
                        hhi = v
                    elif hd:
                        hb[(hd >> 1) - 1] = (hhi << 4) | v
                    else:
                        self.frame.code = v
                    hd += 1
                    if hd > _MAX_HEX_DIGITS:
                        st = _IDLE
                        event = self._drop_hex(BAD_HEX_LENGTH, hd + 1, tn)
                        break
                    continue
                if b == _LF:
                    st = self._saved
                    event = self._end_hex(hd)
                    break
                if b == _CR or b == _COLON:
                    i -= 1  # a resync point: read it again as a new start
                    event = self._drop_hex(BAD_INTERRUPTED, hd + 1, tn)
                else:
                    event = self._drop_hex(BAD_HEX_DIGIT, hd + 2, tn)
                st = _IDLE
                break
            if b == _COLON and st != _CHECKSUM:
                self._saved = st
                if st == _IDLE:
                    tn = 0
                st = _HEX
                hd = 0
                continue
            bad = None  # why the text block in progress is lost, if it is
            if st == _VALUE:
                if 32 <= b < 127:
                    if flen == MAX_VALUE:
                        bad = BAD_VALUE
                    flen += 1
                elif b == _CR:
                    st = _NL
                else:
                    bad = BAD_BYTE
            elif st == _LABEL:
                if 32 < b < 127:
                    if flen == MAX_LABEL:
                        bad = BAD_LABEL
                    flen += 1
                elif b == _TAB and flen:
                    if flen == 8 and self._is_checksum_label(tn):
                        st = _CHECKSUM
                    elif self._nfields == MAX_FIELDS:
                        bad = BAD_FIELDS
                    else:
                        self._nfields += 1
                        st = _VALUE
                    flen = 0
                else:
                    bad = BAD_FRAMING if b == _CR else BAD_BYTE
            elif st == _NL:
                if b == _LF:
                    st = _LABEL
                    flen = 0
                else:
                    bad = BAD_FRAMING
            elif st == _CHECKSUM:
                tb[tn] = b
                st = _IDLE
                event = self._end_text(tn + 1, ts + b)
                tn = 0
                if event is not None:
                    break
                continue
            else:  # _IDLE
                if b == _CR:
                    tb[0] = b
                    tn = 1
                    ts = b
                    self._nfields = 0
                    st = _NL
                else:
                    self.discarded += 1
                continue
            if bad is not None:
                st = _IDLE
                if b == _CR:
                    i -= 1  # a resync point: read it again as the start of a block
                else:
                    tn += 1
                event = self._drop_text(bad, tn)
                tn = 0
                if event is not None:
                    break
                continue
            tb[tn] = b
            tn += 1
            ts += b
        self._i = i
        self._state = st
        # the block buffer only matters while a text block is in progress
        self._tn = tn if st != _IDLE else 0
        self._tsum = ts
        self._flen = flen
        self._hd = hd
        self._hhi = hhi
        if event is None:
            raise StopIteration
        return event

    def _is_checksum_label(self, tn):
        tb = self.block.buf
        start = tn - 8
        for k in range(8):
            if tb[start + k] != _CHECKSUM_LABEL[k]:
                return False
        return True

    def _end_text(self, tn, ts):
        aligned = self._aligned
        self._aligned = True
        self._tn = 0
        blk = self.block
        blk.size = tn
        if ts & 0xFF == 0:
            self.text_ok += 1
            blk.ok = True
            blk.reason = None
            return blk
        self.discarded += tn
        if not aligned:
            return None
        self.text_bad += 1
        blk.ok = False
        blk.reason = BAD_CHECKSUM
        return blk

    def _drop_text(self, reason, nbytes):
        """Drop the text block in progress after an error; resync at the next "\\r" or ":"."""
        self.discarded += nbytes
        self._tn = 0
        aligned = self._aligned
        self._aligned = False
        if not aligned:
            return None
        self.text_bad += 1
        blk = self.block
        blk.ok = False
        blk.reason = reason
        blk.size = nbytes
        return blk

    def _emit_text_drop(self):
        reason, nbytes = self._pending_text
        self._pending_text = None
        return self._drop_text(reason, nbytes)

    def _drop_hex(self, reason, nbytes, tn):
        """Drop a broken HEX frame; a text block it interrupted is lost with it."""
        self.discarded += nbytes
        self.hex_bad += 1
        if self._saved != _IDLE:
            self._pending_text = (reason, tn)
            self._saved = _IDLE
        fr = self.frame
        fr.ok = False
        fr.reason = reason
        fr.nbytes = 0
        fr.size = nbytes
        return fr

    def _end_hex(self, hd):
        fr = self.frame
        fr.size = hd + 2
        nbytes = (hd - 1) >> 1
        fr.nbytes = nbytes
        if not hd & 1:
            return self._bad_hex(fr, BAD_ODD)
        if nbytes == 0 or (fr.has_register() and nbytes < 4):
            return self._bad_hex(fr, BAD_SHORT)
        total = fr.code
        buf = fr.buf
        for k in range(nbytes):
            total += buf[k]
        if total & 0xFF != 0x55:
            return self._bad_hex(fr, BAD_CHECKSUM)
        self.hex_ok += 1
        fr.ok = True
        fr.reason = None
        return fr

    def _bad_hex(self, fr, reason):
        self.hex_bad += 1
        self.discarded += fr.size
        fr.ok = False
        fr.reason = reason
        return fr

    def _drop_partial(self, reason):
        """Called on a silence longer than GAP_MS: whatever was half-read is stale."""
        st = self._state
        self._state = _IDLE
        if st == _HEX:
            self._drop_hex(reason, self._hd + 1, self._tn)
            self._pending_hex = True
        elif self._tn:
            self._pending_text = (reason, self._tn)
        self._tn = 0


# -- value packing --------------------------------------------------------------------------

# width in bytes and signedness per VE.Direct type name
TYPES = {
    "un8": (1, False),
    "sn8": (1, True),
    "un16": (2, False),
    "sn16": (2, True),
    "un32": (4, False),
    "sn32": (4, True),
}


def _not_available(width, signed):
    """The "not available" sentinel of a type: all ones, or the largest positive signed value."""
    top = 1 << (8 * width - 1)
    return top - 1 if signed else 2 * top - 1


def unpack_width(data, start, width, signed, sentinel=True):
    """Little-endian int from data[start:start + width]; the n/a sentinel becomes None."""
    if width not in (1, 2, 4):
        raise ValueError("value of %d bytes" % width)
    value = 0
    for k in range(width - 1, -1, -1):
        value = (value << 8) | data[start + k]
    if sentinel and value == _not_available(width, signed):
        return None
    if signed and value & (1 << (8 * width - 1)):
        value -= 1 << (8 * width)
    return value


def unpack(vtype, data, start=0, size=None, sentinel=True):
    """Decode a register value of type `vtype` ("un16", ...); None for "not available"."""
    width, signed = TYPES[vtype]
    if size is None:
        size = len(data) - start
    if size != width:
        raise ValueError("%s needs %d bytes, got %d" % (vtype, width, size))
    return unpack_width(data, start, width, signed, sentinel)


def pack(vtype, value):
    """Encode an int as `vtype`, little endian; None packs the "not available" sentinel."""
    width, signed = TYPES[vtype]
    if value is None:
        value = _not_available(width, signed)
    else:
        low = -(1 << (8 * width - 1)) if signed else 0
        high = (1 << (8 * width - 1 if signed else 8 * width)) - 1
        if not low <= value <= high:
            raise ValueError("%d does not fit %s" % (value, vtype))
        value &= (1 << (8 * width)) - 1
    out = bytearray(width)
    for k in range(width):
        out[k] = (value >> (8 * k)) & 0xFF
    return bytes(out)


# -- HEX frame builders ---------------------------------------------------------------------


def frame(code, payload=b""):
    """A complete HEX frame, ":" + command nibble + payload + check byte + "\\n", uppercase."""
    check = (0x55 - code - sum(payload)) & 0xFF
    return (":%X%s%02X\n" % (code, hexstr(payload), check)).encode()


def frame_ping():
    return frame(PING)


def frame_app_version():
    return frame(APP_VERSION)


def frame_product_id():
    return frame(PRODUCT_ID)


def frame_get(register):
    return frame(GET, pack("un16", register) + b"\x00")


def frame_set(register, vtype, value):
    """Set `register` to the raw int `value`, packed to the register's width."""
    return frame(SET, pack("un16", register) + b"\x00" + pack(vtype, value))


def frame_set_raw(register, data):
    return frame(SET, pack("un16", register) + b"\x00" + bytes(data))
