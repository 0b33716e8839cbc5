"""Names for the IP22's codes and models: charger states (CS), errors (ERR), off reasons (OR)
and product ids. About 10 kB of tables on the board's heap, so the firmware reads them in only
when a code changes (cold.py) and keeps the names it found."""

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
    """The charger's own 0xEDDF when it reports a positive value, else the PID table's
    rating, else None (0 A would make every limit 0)."""
    if reported_a is not None and reported_a > 0:
        return reported_a
    known = PRODUCTS.get(pid) if pid is not None else None
    return float(known[2]) if known else None
