"""What we know about the Blue Smart IP22 on its VE.Direct header: registers, models, codes.

Sources and confidence are in shared/reference/vedirect-ip22-notes.md (sections 1.5, 3, 4).
Facts the notes mark as unverified (how to switch off, the minimum current, 0x2015) are probed
at run time by the firmware; this table only says how to read and write a register.
"""

import vedirect

NVM = "nvm"  # every set writes the charger's flash: rate-limit writes
VOLATILE = "volatile"  # link value, lost after ~60 s without refresh
READ_ONLY = "read-only"
WRITABLE = "writable"  # writable, storage not documented

RAW = "raw"  # composite or string value: bytes
TEXT = "text"  # string value

# id: (name, type, scale, unit, storage, sentinel)
#   scale: physical = raw * scale; sentinel: the type's "not available" value means None
REGISTERS = {
    0x0100: ("product_id", RAW, 1, "", READ_ONLY, False),
    0x0102: ("app_version", RAW, 1, "", READ_ONLY, False),
    0x010A: ("serial_number", TEXT, 1, "", READ_ONLY, False),
    0x010B: ("model_name", TEXT, 1, "", READ_ONLY, False),
    0x010C: ("description", TEXT, 1, "", READ_ONLY, False),
    0x0120: ("uptime", "un32", 1, "s", READ_ONLY, True),
    0x0140: ("capabilities1", "un32", 1, "", READ_ONLY, False),
    0x0143: ("capabilities4", "un32", 1, "", READ_ONLY, False),
    0x0200: ("device_mode", "un8", 1, "", WRITABLE, True),
    0x0201: ("device_state", "un8", 1, "", READ_ONLY, True),
    0x0206: ("device_function", "un8", 1, "", NVM, True),
    0x0207: ("off_reason", "un32", 1, "", READ_ONLY, False),
    0x1042: ("history_service", RAW, 1, "", READ_ONLY, False),
    0x1043: ("history_user", RAW, 1, "", READ_ONLY, False),
    0x1070: ("history_cycle", RAW, 1, "", READ_ONLY, False),
    0x2001: ("link_voltage_set", "un16", 0.01, "V", VOLATILE, True),
    0x2002: ("link_voltage_sense", "un16", 0.01, "V", VOLATILE, True),
    0x2003: ("link_temperature_sense", "sn16", 0.01, "C", VOLATILE, True),
    0x2007: ("link_elapsed_time", "un32", 0.001, "s", VOLATILE, True),
    0x2008: ("link_absorption_time", "un16", 0.01, "h", VOLATILE, True),
    0x2009: ("link_error_code", "un8", 1, "", VOLATILE, True),
    0x200A: ("link_battery_current", "sn32", 0.001, "A", VOLATILE, True),
    0x200C: ("link_device_state", "un8", 1, "", VOLATILE, True),
    0x200D: ("link_network_info", "un16", 1, "", READ_ONLY, False),
    0x200E: ("link_network_mode", "un8", 1, "", VOLATILE, False),
    0x200F: ("link_network_status", "un8", 1, "", READ_ONLY, False),
    0x2013: ("link_total_charge_current", "sn32", 0.001, "A", VOLATILE, True),
    0x2015: ("link_charge_current_limit", "un16", 0.1, "A", VOLATILE, True),
    0x2042: ("link_absorption_end_time", "un16", 0.01, "h", VOLATILE, True),
    0xE001: ("low_current_mode", "un8", 1, "", NVM, True),
    0xEC15: ("ble_broadcast_registers", "un8", 1, "", READ_ONLY, False),
    0xED8C: ("battery_current_ma", "sn32", 0.001, "A", READ_ONLY, True),
    0xED8D: ("battery_voltage", "sn16", 0.01, "V", READ_ONLY, True),
    0xED8F: ("battery_current", "sn16", 0.1, "A", READ_ONLY, True),
    0xEDC8: ("min_current", "un16", 0.1, "A", READ_ONLY, True),
    0xEDD4: ("charger_custom_state", "un8", 1, "", READ_ONLY, False),
    0xEDD5: ("charger_voltage", "un16", 0.01, "V", READ_ONLY, True),
    0xEDD7: ("charger_current", "sn16", 0.1, "A", READ_ONLY, True),
    0xEDDA: ("charger_error", "un8", 1, "", READ_ONLY, True),
    0xEDDB: ("charger_temperature", "sn16", 0.01, "C", READ_ONLY, True),
    0xEDDE: ("charger_outputs", "un8", 1, "", READ_ONLY, True),
    0xEDDF: ("max_current", "un16", 0.1, "A", READ_ONLY, True),
    0xEDEC: ("battery_temperature", "un16", 0.01, "K", READ_ONLY, True),
    0xEDF0: ("charge_current_limit", "un16", 0.1, "A", NVM, True),
    0xEDF1: ("battery_type", "un8", 1, "", NVM, False),  # 0xFF = user defined, not n/a
    0xEDF6: ("float_voltage", "un16", 0.01, "V", NVM, True),
    0xEDF7: ("absorption_voltage", "un16", 0.01, "V", NVM, True),
    0xEE16: ("voltage_sense_used", "un16", 0.01, "V", READ_ONLY, True),
}

BY_NAME = {spec[0]: reg for reg, spec in REGISTERS.items()}

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

# PID: (model, nominal battery voltage, rated current A, outputs); notes section 4.1 (VBLE
# table, confirmed on real 0xA330, 0xA332, 0xA334, 0xA336 units). Read 0xEDDF/0xEDDE/0xEDC8 at
# run time: the tables in the field disagree, the charger's own registers do not.
PRODUCTS = {
    0xA320: ("Blue Smart IP22 12|15 (1)", 12, 15, 1),
    0xA321: ("Blue Smart IP22 12|15 (3)", 12, 15, 3),
    0xA322: ("Blue Smart IP22 12|20 (1)", 12, 20, 1),
    0xA323: ("Blue Smart IP22 12|20 (3)", 12, 20, 3),
    0xA324: ("Blue Smart IP22 12|30 (1)", 12, 30, 1),
    0xA325: ("Blue Smart IP22 12|30 (3)", 12, 30, 3),
    0xA326: ("Blue Smart IP22 24|8 (1)", 24, 8, 1),
    0xA327: ("Blue Smart IP22 24|8 (3)", 24, 8, 3),
    0xA328: ("Blue Smart IP22 24|12 (1)", 24, 12, 1),
    0xA329: ("Blue Smart IP22 24|12 (3)", 24, 12, 3),
    0xA32A: ("Blue Smart IP22 24|16 (1)", 24, 16, 1),
    0xA32B: ("Blue Smart IP22 24|16 (3)", 24, 16, 3),
    0xA32C: ("Blue Smart IP22 12/15 (1)", 12, 15, 1),
    0xA32D: ("Blue Smart IP22 12/15 (3)", 12, 15, 3),
    0xA32E: ("Blue Smart IP22 12/20 (1)", 12, 20, 1),
    0xA32F: ("Blue Smart IP22 12/20 (3)", 12, 20, 3),
    0xA330: ("Blue Smart IP22 12/30 (1)", 12, 30, 1),
    0xA331: ("Blue Smart IP22 12/30 (3)", 12, 30, 3),
    0xA332: ("Blue Smart IP22 24/8 (1)", 24, 8, 1),
    0xA333: ("Blue Smart IP22 24/8 (3)", 24, 8, 3),
    0xA334: ("Blue Smart IP22 24/12 (1)", 24, 12, 1),
    0xA335: ("Blue Smart IP22 24/12 (3)", 24, 12, 3),
    0xA336: ("Blue Smart IP22 24/16 (1)", 24, 16, 1),
    0xA337: ("Blue Smart IP22 24/16 (3)", 24, 16, 3),
}

MIN_CURRENT_FRACTION = 0.25  # of rated: four independent hints, no document (notes 4.2)

# CS / register 0x0201
STATES = {
    0: "off",
    1: "low power",
    2: "fault",
    3: "bulk",
    4: "absorption",
    5: "float",
    6: "storage",
    7: "equalize",
    11: "power supply",
    244: "sustain",
    245: "starting up",
    246: "repeated absorption",
    247: "recondition",
    248: "battery safe",
    250: "blocked",
    252: "external control",
    255: "not available",
}

# ERR / register 0xEDDA
ERRORS = {
    0: "no error",
    2: "battery voltage too high",
    3: "battery temperature sensor",
    4: "battery temperature sensor",
    5: "battery temperature sensor",
    6: "battery voltage sensor",
    7: "battery voltage sensor",
    8: "battery voltage sensor",
    11: "high ripple voltage",
    14: "battery too cold to charge",
    17: "charger over-temperature",
    18: "charger over-current",
    19: "charger current reversed",
    20: "bulk time limit exceeded",
    21: "current sensor",
    22: "internal temperature sensor",
    23: "internal temperature sensor",
    24: "fan failure",
    26: "terminals overheated",
    27: "short circuit",
    28: "converter issue",
    29: "over-charge protection",
    33: "input voltage too high",
    34: "input current too high",
    38: "input shutdown",
    39: "input shutdown",
    65: "lost communication",
    66: "synchronised charging configuration",
    67: "BMS connection lost",
    68: "network misconfigured",
    116: "calibration data lost",
    117: "invalid firmware",
    119: "settings invalid",
}

# OR / register 0x0207 bits
OFF_REASONS = (
    (0x0001, "no input power"),
    (0x0002, "power switch"),
    (0x0004, "soft switch"),
    (0x0008, "remote input"),
    (0x0010, "internal reason"),
    (0x0020, "pay-as-you-go"),
    (0x0040, "BMS"),
    (0x0080, "engine shutdown"),
    (0x0100, "analysing input voltage"),
    (0x0200, "low battery temperature"),
    (0x0400, "no PV"),
    (0x0800, "low battery"),
    (0x1000, "low mains"),
    (0x2000, "parallel sync"),
    (0x4000, "parallel sync"),
    (0x8000, "active alarm"),
)


def state_name(code):
    return STATES.get(code, "state %s" % code)


def error_name(code):
    return ERRORS.get(code, "error %s" % code)


def off_reason_names(bits):
    return [name for bit, name in OFF_REASONS if bits & bit]


def product(pid):
    """(model, nominal V, rated A, outputs) or None for a PID we do not know."""
    return PRODUCTS.get(pid)


def model_name(pid):
    known = PRODUCTS.get(pid)
    return known[0] if known else "PID 0x%04X" % pid


def rated_current(pid, reported_a=None):
    """The charger's own 0xEDDF when it reports it, else the PID table's rating, else None."""
    if reported_a is not None:
        return reported_a
    known = PRODUCTS.get(pid) if pid is not None else None
    return float(known[2]) if known else None


def min_current(rated_a, reported_a=None):
    """Lowest current limit the charger accepts: its own 0xEDC8 when it reports a positive
    value, else 25 % of rated. No source shows an IP22 accepting 0 A, so 0 counts as unknown."""
    if reported_a is not None and reported_a > 0:
        return reported_a
    return round(rated_a * MIN_CURRENT_FRACTION, 2)


def register_name(reg):
    spec = REGISTERS.get(reg)
    return spec[0] if spec else None


def decode(reg, data):
    """(value, unit) of a register's raw bytes: scaled number, str, bytes, or None (n/a).

    Scalars are decoded by the width the charger sent (the IP22 sends 0x200D as 2 bytes where
    the MPPT document says 1), with the table's sign and scale."""
    spec = REGISTERS.get(reg)
    if spec is None:
        raise KeyError("unknown register 0x%04X" % reg)
    _, vtype, scale, unit, _, sentinel = spec
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
    spec = REGISTERS.get(reg)
    if spec is None:
        raise ValueError("unknown register 0x%04X" % reg)
    name, vtype, scale, _, storage, _ = spec
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
    return vedirect.frame_set(reg, REGISTERS[reg][1], raw)
