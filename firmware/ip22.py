"""The Blue Smart IP22's registers on its VE.Direct header: the ids the firmware uses, and how
to decode and encode a register's value. The full table is registers.py, the names of codes and
models ip22text.py; both are read in only when needed.

Sources and confidence are in shared/reference/vedirect-ip22-notes.md (sections 1.5, 3, 4).
Facts the notes mark as unverified (how to switch off, the minimum current, 0x2015) are probed
at run time by the firmware; the table only says how to read and write a register.
"""

import cold
import vedirect

NVM = "nvm"  # every set writes the charger's flash: rate-limit writes
VOLATILE = "volatile"  # link value, lost after ~60 s without refresh
READ_ONLY = "read-only"
WRITABLE = "writable"  # writable, storage not documented

RAW = "raw"  # composite or string value: bytes
TEXT = "text"  # string value

# Registers the firmware reads and writes by id
PRODUCT_ID_REG = 0x0100
DEVICE_MODE = 0x0200
DEVICE_STATE = 0x0201
CAPABILITIES4 = 0x0143
LINK_NETWORK_MODE = 0x200E
LINK_CHARGE_CURRENT_LIMIT = 0x2015
MIN_CURRENT = 0xEDC8
OUTPUTS = 0xEDDE
MAX_CURRENT = 0xEDDF
CHARGE_CURRENT_LIMIT = 0xEDF0

MIN_CURRENT_FRACTION = 0.25  # of rated: four independent hints, no document (notes 4.2)


def min_current(rated_a, reported_a=None):
    """Lowest current limit the charger accepts: its own 0xEDC8 when it reports a positive
    value, else 25 % of rated. No source shows an IP22 accepting 0 A, so 0 counts as unknown."""
    if reported_a is not None and reported_a > 0:
        return reported_a
    return round(rated_a * MIN_CURRENT_FRACTION, 2)


FIRMWARE_USES = (
    PRODUCT_ID_REG,
    DEVICE_MODE,
    DEVICE_STATE,
    CAPABILITIES4,
    LINK_NETWORK_MODE,
    LINK_CHARGE_CURRENT_LIMIT,
    MIN_CURRENT,
    OUTPUTS,
    MAX_CURRENT,
    CHARGE_CURRENT_LIMIT,
)
_known = {}  # the register specs used so far (see spec)


def spec(reg):
    """(name, type, scale, unit, storage, sentinel) of a register, or None. The table is read
    in (registers.py) only for a register not asked about before, and then the specs of all
    the registers the firmware uses are kept at once."""
    known = _known.get(reg)
    if known is None:
        table = cold.load("registers").REGISTERS
        for used in FIRMWARE_USES + (reg,):
            if used in table:
                _known[used] = table[used]
        known = _known.get(reg)
    return known


def register_name(reg):
    known = spec(reg)
    return known[0] if known else None


def decode(reg, data):
    """(value, unit) of a register's raw bytes: scaled number, str, bytes, or None (n/a).

    Scalars are decoded by the width the charger sent (the IP22 sends 0x200D as 2 bytes where
    the MPPT document says 1), with the table's sign and scale."""
    known = spec(reg)
    if known is None:
        raise KeyError("unknown register 0x%04X" % reg)
    _, vtype, scale, unit, _, sentinel = known
    if vtype == RAW:
        return bytes(data), unit
    if vtype == TEXT:
        return bytes(data).split(b"\x00", 1)[0].decode(), unit
    signed = vedirect.TYPES[vtype][1]
    raw = vedirect.unpack_width(data, 0, len(data), signed, sentinel)
    return scaled(raw, scale), unit


def scaled(raw, scale):
    if raw is None or scale == 1:
        return raw
    digits = 0
    step = scale
    while step < 1:
        step *= 10
        digits += 1
    return round(raw * scale, digits)


def encode(reg, value):
    """The raw int to send for a physical value, rounded to the register's resolution.
    Raises ValueError for read-only, unknown or non-scalar registers and out-of-range values."""
    known = spec(reg)
    if known is None:
        raise ValueError("unknown register 0x%04X" % reg)
    name, vtype, scale, _, storage, _ = known
    if storage == READ_ONLY:
        raise ValueError("%s (0x%04X) is read-only" % (name, reg))
    if vtype not in vedirect.TYPES:
        raise ValueError("%s (0x%04X) is not a number" % (name, reg))
    raw = int(round(value / scale))
    vedirect.pack(vtype, raw)  # range check
    return raw


def set_frame(reg, value):
    """The HEX frame that sets `reg` to the physical `value`."""
    raw = encode(reg, value)
    return vedirect.frame_set(reg, spec(reg)[1], raw)
