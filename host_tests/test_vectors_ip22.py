"""Test vectors for firmware/ip22.py; run by pytest and on the MicroPython Unix port."""

import ip22
import ip22text
import registers
import vedirect as v


def test_decode_scaled_values():
    cases = [
        (0xED8D, b"\x40\x0b", 28.8, "V"),
        (0xED8C, b"\x7a\x1c\x00\x00", 7.29, "A"),
        (0xED8F, b"\x49\x00", 7.3, "A"),
        (0xEDDB, b"\xe2\x09", 25.3, "C"),
        (0xEDF0, b"\x96\x00", 15.0, "A"),
        (0x2007, b"\xbb\x0b\x00\x00", 3.003, "s"),
        (0x2042, b"\x32\x00", 0.5, "h"),
        (0x0120, b"\x38\x00\x00\x00", 56, "s"),
        (0xEE16, b"\xff\xff", None, "V"),
        (0x2013, b"\xff\xff\xff\x7f", None, "A"),
        (0xED8F, b"\xf6\xff", -1.0, "A"),
    ]
    for reg, raw, value, unit in cases:
        assert ip22.decode(reg, raw) == (value, unit), (hex(reg), ip22.decode(reg, raw))


def test_decode_by_the_width_the_charger_sent():
    # the IP22 sends 0x200D as 2 bytes; the MPPT document says un8
    assert ip22.decode(0x200D, b"\x08\x00") == (8, "")
    assert ip22.decode(0x200D, b"\x08") == (8, "")


def test_decode_battery_type_has_no_sentinel():
    assert ip22.decode(0xEDF1, b"\xff") == (255, "")


def test_decode_strings_and_raw():
    assert ip22.decode(0x010A, b"HQ2230XY6XR\x00\x00") == ("HQ2230XY6XR", "")
    assert ip22.decode(0x0100, b"\x00\x34\xa3\xff") == (b"\x00\x34\xa3\xff", "")


def test_encode_rounds_to_the_resolution():
    assert ip22.encode(0xEDF0, 12.5) == 125
    assert ip22.encode(0xEDF0, 12.54) == 125
    assert ip22.encode(0xEDF0, 30) == 300
    assert ip22.set_frame(0xEDF0, 10.0) == b":8F0ED0064000C\n"
    assert ip22.set_frame(0xEDF0, 30.0) == b":8F0ED002C0143\n"
    assert ip22.set_frame(0x2015, 6.0) == b":81520003C00DC\n"


def test_encode_refuses():
    for reg, value in (
        (0xED8D, 1.0),
        (0x1234, 1.0),
        (0x010A, 1.0),
        (0xEDF0, -1.0),
        (0xEDF0, 7000.0),
    ):
        try:
            ip22.encode(reg, value)
        except ValueError:
            continue
        raise AssertionError("0x%04X = %s accepted" % (reg, value))


def test_register_table_shape():
    storages = (ip22.NVM, ip22.VOLATILE, ip22.READ_ONLY, ip22.WRITABLE)
    for reg, spec in registers.REGISTERS.items():
        name, vtype, scale, unit, storage, sentinel = spec
        assert vtype in v.TYPES or vtype in (ip22.RAW, ip22.TEXT), name
        assert storage in storages, name
        assert scale > 0 and isinstance(unit, str), name
        assert registers.BY_NAME[name] == reg
    assert registers.REGISTERS[0xEDF0][4] == ip22.NVM
    assert registers.REGISTERS[0x2015][4] == ip22.VOLATILE


def test_products():
    assert ip22text.product(0xA334) == ("Blue Smart IP22 24/12 (1)", 24, 12, 1)
    assert ip22text.product(0xA332)[1:3] == (24, 8)
    assert ip22text.product(0xA330)[1:3] == (12, 30)
    assert ip22text.product(0xA336)[1:] == (24, 16, 1)
    assert ip22text.product(0xA335)[3] == 3
    assert ip22text.product(0xA389) is None
    for pid, (_, volts, amps, outputs) in ip22text.PRODUCTS.items():
        assert volts in (12, 24) and amps in (8, 12, 15, 16, 20, 30) and outputs in (1, 3), pid
        assert pid & 1 == (outputs == 3), pid


def test_min_current_rule():
    assert ip22.min_current(12) == 3.0
    assert ip22.min_current(30) == 7.5
    assert ip22.min_current(15) == 3.75
    assert ip22.min_current(8) == 2.0
    assert ip22.min_current(30, 5.0) == 5.0  # the charger's own 0xEDC8 wins
    assert ip22.min_current(50, 12.5) == 12.5
    assert ip22.min_current(12, 0) == 3.0  # 0 is not a credible minimum: fall back
    assert ip22.min_current(12, None) == 3.0


def test_code_names():
    assert ip22text.state_name(3) == "bulk"
    assert ip22text.state_name(4) == "absorption"
    assert ip22text.state_name(245) == "starting up"
    assert ip22text.state_name(99) == "state 99"
    assert ip22text.error_name(0) == "no error"
    assert ip22text.error_name(67) == "BMS connection lost"
    assert ip22text.error_name(200) == "error 200"
    assert ip22text.off_reason_names(0) == []
    assert ip22text.off_reason_names(0x0005) == ["no input power", "soft switch"]


def test_rating_and_model_name():
    assert ip22text.rated_current(0xA334) == 12.0
    assert ip22text.rated_current(0xA334, 11.5) == 11.5  # the charger's own 0xEDDF wins
    assert ip22text.rated_current(0xA389) is None and ip22text.rated_current(None) is None
    assert ip22text.rated_current(0xA334, 0.0) == 12.0  # 0 A reported: the table's rating
    assert ip22text.rated_current(0xA389, 0.0) is None
    assert ip22text.model_name(0xA332) == "Blue Smart IP22 24/8 (1)"
    assert ip22text.model_name(0xA389) == "PID 0xA389"


def test_the_register_table_is_read_in_only_for_a_new_register():
    import sys

    sys.modules.pop("registers", None)
    assert ip22.spec(0xEDF0) == registers.REGISTERS[0xEDF0]
    assert "registers" not in sys.modules  # let go again: its heap is free on the board
    assert ip22.register_name(0x2015) == "link_charge_current_limit"
    assert ip22.spec(0x9999) is None
