"""Every part of the board, defined in code.

Why in code: SKiDL can read KiCad symbol libraries, but that needs a KiCad install (and its
environment variables) on every machine that runs the tests. The board uses ~20 distinct parts;
writing their pins down is shorter than depending on an installation, and it puts the pin numbers
we rely on in review. Pinouts: ADuM1201, LMR36510 and USBLC6-2SC6 as in KiCad's libraries (read
from SKiDL's converted copies); ESP32-S3-MINI-1 from Espressif's module pin table.

Each part carries the fields the checks and the BOM need: `value`, `footprint`, `MPN`, `LCSC`,
`DNP`, and `domain`: which side of the isolation barrier it lives on ("charger" = the IP22's
logic ground, "board" = battery minus). The isolator itself has a domain per pin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _skidl  # noqa: F401  (quiet import first)
from skidl import SKIDL, Circuit, Part, Pin

T = Pin.types
CHARGER = "charger"
BOARD = "board"

# (number, name, function); the isolator adds a fourth element: the pin's domain.
PinDef = tuple


@dataclass(frozen=True)
class PartDef:
    """A part type: symbol name, reference prefix, footprint and pins."""

    name: str
    prefix: str
    footprint: str
    pins: tuple[PinDef, ...]
    description: str = ""
    extra: dict = field(default_factory=dict)


def _two(name: str, prefix: str, footprint: str) -> PartDef:
    """A two-terminal passive (pins 1 and 2)."""
    return PartDef(name, prefix, footprint, (("1", "1", T.PASSIVE), ("2", "2", T.PASSIVE)))


R0603 = _two("R", "R", "Resistor_SMD:R_0603_1608Metric")
R0805 = _two("R", "R", "Resistor_SMD:R_0805_2012Metric")
C0603 = _two("C", "C", "Capacitor_SMD:C_0603_1608Metric")
C0805 = _two("C", "C", "Capacitor_SMD:C_0805_2012Metric")
C1206 = _two("C", "C", "Capacitor_SMD:C_1206_3216Metric")
C1210 = _two("C", "C", "Capacitor_SMD:C_1210_3225Metric")
FUSE = _two("Fuse", "F", "Fuse:Fuse_1206_3216Metric")
L_6X6 = _two("L", "L", "Inductor_SMD:L_Bourns_SRN6045TA")
DIODE_SMA = PartDef("D_Schottky", "D", "Diode_SMD:D_SMA",
                    (("1", "K", T.PASSIVE), ("2", "A", T.PASSIVE)))
TVS_SMB = PartDef("D_TVS", "D", "Diode_SMD:D_SMB",
                  (("1", "K", T.PASSIVE), ("2", "A", T.PASSIVE)))
LED_0603 = PartDef("LED", "D", "LED_SMD:LED_0603_1608Metric",
                   (("1", "K", T.PASSIVE), ("2", "A", T.PASSIVE)))
BUTTON = _two("SW_Push", "SW", "Button_Switch_SMD:SW_Push_1P1T_XKB_TS-1187A")
TESTPOINT = PartDef("TestPoint", "TP", "TestPoint:TestPoint_Pad_D1.5mm",
                    (("1", "1", T.PASSIVE),))

# The IP22's 6-pin header has pin 1 not fitted; our end of the ribbon is a 2x3 box header whose
# pin 1 goes nowhere. Names are the charger's view: TX = charger out, RX = into the charger.
IP22_HEADER = PartDef(
    "IP22_Header_2x03", "J", "Connector_IDC:IDC-Header_2x03_P2.54mm_Vertical",
    (("1", "NF", T.NOCONNECT), ("2", "GND", T.PASSIVE), ("3", "TX", T.PASSIVE),
     ("4", "SPIKES", T.PASSIVE), ("5", "RX", T.PASSIVE), ("6", "3V3", T.PASSIVE)),
    "to the IP22's internal VE.Direct header (pin 1 not fitted)",
)
DC_IN = PartDef(
    "DC_In_2pin", "J", "Connector_JST:JST_PH_B2B-PH-K_1x02_P2.00mm_Vertical",
    (("1", "BAT+", T.PASSIVE), ("2", "BAT-", T.PASSIVE)),
    "DC supply from the charger's output terminals",
)
USB_C = PartDef(
    "USB_C_Receptacle_USB2.0_16P", "J", "Connector_USB:USB_C_Receptacle_HRO_TYPE-C-31-M-12",
    (("A1", "GND", T.PASSIVE), ("A4", "VBUS", T.PASSIVE), ("A5", "CC1", T.BIDIR),
     ("A6", "D+", T.BIDIR), ("A7", "D-", T.BIDIR), ("A8", "SBU1", T.BIDIR),
     ("A9", "VBUS", T.PASSIVE), ("A12", "GND", T.PASSIVE), ("B1", "GND", T.PASSIVE),
     ("B4", "VBUS", T.PASSIVE), ("B5", "CC2", T.BIDIR), ("B6", "D+", T.BIDIR),
     ("B7", "D-", T.BIDIR), ("B8", "SBU2", T.BIDIR), ("B9", "VBUS", T.PASSIVE),
     ("B12", "GND", T.PASSIVE), ("S1", "SHIELD", T.PASSIVE)),
    "flashing and REPL over the S3's native USB",
)
LMR36510 = PartDef(
    "LMR36510ADDA", "U",
    "Package_SO:Texas_HTSOP-8-1EP_3.9x4.9mm_P1.27mm_EP2.95x4.9mm_Mask2.4x3.1mm_ThermalVias",
    (("1", "PGND", T.PWRIN), ("2", "VIN", T.PWRIN), ("3", "EN", T.INPUT),
     ("4", "PG", T.OPENCOLL), ("5", "FB", T.INPUT), ("6", "VCC", T.PWROUT),
     ("7", "BOOT", T.PASSIVE), ("8", "SW", T.OUTPUT), ("9", "PAD", T.PWRIN)),
    "4.2-65 V 1 A synchronous buck",
)
# Channel A runs side 2 -> side 1 (VIA -> VOA), channel B side 1 -> side 2 (VIB -> VOB).
ADUM1201 = PartDef(
    "ADuM1201AR", "U", "Package_SO:SOIC-8_3.9x4.9mm_P1.27mm",
    (("1", "VDD1", T.PWRIN, CHARGER), ("2", "VOA", T.OUTPUT, CHARGER),
     ("3", "VIB", T.INPUT, CHARGER), ("4", "GND1", T.PWRIN, CHARGER),
     ("5", "GND2", T.PWRIN, BOARD), ("6", "VOB", T.OUTPUT, BOARD),
     ("7", "VIA", T.INPUT, BOARD), ("8", "VDD2", T.PWRIN, BOARD)),
    "dual-channel digital isolator (1 fwd / 1 rev)",
    {"channels": {"VIA": "VOA", "VIB": "VOB"}},
)
USBLC6 = PartDef(
    "USBLC6-2SC6", "U", "Package_TO_SOT_SMD:SOT-23-6",
    (("1", "IO1", T.PASSIVE), ("2", "GND", T.PWRIN), ("3", "IO2", T.PASSIVE),
     ("4", "IO2", T.PASSIVE), ("5", "VBUS", T.PWRIN), ("6", "IO1", T.PASSIVE)),
    "USB ESD protection",
)


def _esp32_s3_mini_1_pins() -> tuple[PinDef, ...]:
    """ESP32-S3-MINI-1 module pads 1-65, following the "Pin Definitions" table of Espressif's
    ESP32-S3-MINI-1 & MINI-1U datasheet (written from that table; the revision was not at hand),
    and identical pad for pad to KiCad's RF_Module.kicad_sym ESP32-S3-MINI-1 symbol (the copy
    SKiDL 3.0.0 ships). Check it against the footprint's pad numbers before layout.

    GND: 1, 2, 42, 43, 46-65. The chip has no GPIO22-25; GPIO27-32 are its flash/PSRAM bus and
    are not brought out; GPIO26 is, but it is the PSRAM's chip select on the -N4R2. GPIO43/44
    appear as TXD0/RXD0."""
    named = {3: ("3V3", T.PWRIN), 39: ("TXD0", T.BIDIR), 40: ("RXD0", T.BIDIR),
             41: ("IO45", T.BIDIR), 44: ("IO46", T.BIDIR), 45: ("EN", T.INPUT)}
    named.update({4 + n: ("IO%d" % n, T.BIDIR) for n in range(22)})  # pads 4-25: IO0-IO21
    ios = (26, 47, 33, 34, 48, 35, 36, 37, 38, 39, 40, 41, 42)  # pads 26-38, in this order
    named.update({26 + i: ("IO%d" % n, T.BIDIR) for i, n in enumerate(ios)})
    named.update({n: ("GND", T.PWRIN) for n in (1, 2, 42, 43, *range(46, 66))})
    return tuple((str(n), *named[n]) for n in range(1, 66))


# The footprint is KiCad's ESP32-S2-MINI-1: KiCad's own ESP32-S3-MINI-1 symbol points at it (the
# S2 and S3 MINI-1 share the 15.4 x 20.5 mm, 65-pad land pattern) and its library has no
# separate S3 footprint, so this name resolves in a stock KiCad.
ESP32_S3_MINI_1 = PartDef(
    "ESP32-S3-MINI-1", "U", "RF_Module:ESP32-S2-MINI-1", _esp32_s3_mini_1_pins(),
    "ESP32-S3 WiFi/BLE module, 4 MB flash, 2 MB quad PSRAM (-N4R2), PCB antenna",
)


def place(circuit: Circuit, pdef: PartDef, ref: str, value: str, *, domain: str = BOARD,
          mpn: str = "", lcsc: str = "", dnp: bool = False, footprint: str | None = None,
          description: str = "") -> Part:
    """Add one instance of `pdef` to `circuit` with its BOM fields and barrier domain."""
    pins = []
    for spec in pdef.pins:
        pin = Pin(num=spec[0], name=spec[1], func=spec[2])
        pin.domain = spec[3] if len(spec) > 3 else domain
        pins.append(pin)
    part = Part(tool=SKIDL, name=pdef.name, dest="NETLIST", circuit=circuit,
                ref_prefix=pdef.prefix, ref=ref, tag=ref, footprint=footprint or pdef.footprint,
                pins=pins, description=description or pdef.description, **pdef.extra)
    part.value = value
    part.domain = domain
    part.fields.update({"MPN": mpn, "LCSC": lcsc})
    if dnp:
        part.fields["DNP"] = "DNP"
    part.dnp = dnp
    return part
