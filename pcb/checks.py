"""The board's rules, as functions the test suite and the build command both run.

* `erc`: SKiDL's electrical rule check (pin-type conflicts, undriven power pins, floating pins).
* `isolation`: no net may hold pins from both sides of the ADuM1201. Every part says which side
  it is on (`domain`); the isolator says it per pin. A ground tie, a 0R link or a cap across the
  barrier all put both domains on one net.
* `decoupling`: every IC supply pin shares its net with a capacitor whose other end is on ground.
  Net-level only: placement next to the pin is the layout's job.
* `uart`: the firmware's default UART pins (firmware/schema.py, one source of truth) are the ones
  the netlist routes through the isolator: RX from the charger's TX, TX into the charger's RX.
* `fields`: every part has a footprint and a value (the BOM and the layout need both).
Each returns a list of problems (empty = pass) with the net and pin names a reviewer needs.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._skidl import ERC_MESSAGES, erc_logger
from skidl import Circuit, Part, Pin
from skidl.net import NCNet

from .parts import BOARD, CHARGER

ROOT = Path(__file__).resolve().parent.parent
GROUND_PIN = re.compile(r"^(P?GND\d*|PAD|EP)$")
# ESP32-S3 pins the charger UART must not use: straps, USB D-/D+, UART0 (ROM boot messages),
# the flash/PSRAM bus (GPIO26-32; 33-37 too on octal parts, kept free so that stays an option).
STRAP_GPIO = {0: "BOOT strap", 3: "strapping (JTAG source)", 45: "strapping (VDD_SPI voltage)",
              46: "strapping (boot mode, ROM log)"}
USB_GPIO = {19: "USB D-", 20: "USB D+"}
FLASH_GPIO = {**{n: "flash/PSRAM" for n in range(26, 33)},
              **{n: "octal flash/PSRAM" for n in range(33, 38)}}
RESERVED_GPIO = {**STRAP_GPIO, **USB_GPIO, **FLASH_GPIO,
                 43: "UART0 TX (boot messages)", 44: "UART0 RX (console)"}


@dataclass(frozen=True)
class ElectricalNet:
    """One electrically connected net: all its segment names and all its pins."""

    name: str
    pins: tuple[Pin, ...]


@dataclass
class Report:
    """ERC counts plus the custom rules' problems; `ok` when there are no errors at all."""

    erc_errors: int = 0
    erc_warnings: int = 0
    erc_messages: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.erc_errors == 0 and not any(self.problems.values())

    def summary(self) -> str:
        lines = ["ERC: %d errors, %d warnings" % (self.erc_errors, self.erc_warnings)]
        lines += ["  " + m for m in self.erc_messages]
        for rule, found in self.problems.items():
            lines.append("%s: %s" % (rule, "ok" if not found else "%d problem(s)" % len(found)))
            lines += ["  " + p for p in found]
        return "\n".join(lines)


def pin_label(pin: Pin) -> str:
    return "%s.%s(%s)" % (pin.part.ref, pin.num, pin.name)


def nets(circuit: Circuit) -> list[ElectricalNet]:
    """Distinct electrical nets (merged segments count once), no-connect net excluded."""
    seen: set[frozenset[int]] = set()
    out = []
    for net in circuit.nets:
        if isinstance(net, NCNet):
            continue
        pins = tuple(net.pins)
        key = frozenset(id(p) for p in pins)
        if not pins or key in seen:
            continue
        seen.add(key)
        names = sorted({n.name for n in net.get_nets()})
        out.append(ElectricalNet("=".join(names), pins))
    return sorted(out, key=lambda n: n.name)


def net_of(circuit: Circuit, pin: Pin) -> ElectricalNet | None:
    for net in nets(circuit):
        if any(p is pin for p in net.pins):
            return net
    return None


def erc(circuit: Circuit) -> tuple[int, int, list[str]]:
    """Run SKiDL's ERC; (errors, warnings, messages)."""
    ERC_MESSAGES.records.clear()
    circuit.ERC()
    errors = erc_logger.error.count + erc_logger.bare_error.count
    warnings = erc_logger.warning.count + erc_logger.bare_warning.count
    messages = ["%s: %s" % (lvl, msg.strip()) for lvl, msg in ERC_MESSAGES.records
                if lvl in ("WARNING", "ERROR")]
    return errors, warnings, messages


def domain(pin: Pin) -> str | None:
    return getattr(pin, "domain", None) or getattr(pin.part, "domain", None)


def isolation(circuit: Circuit) -> list[str]:
    """No net may join the charger's side of the isolator to the board's side."""
    problems = []
    if not any(getattr(p, "channels", None) for p in circuit.parts):
        problems.append("no isolator (a part with `channels`) in the circuit")
    for part in circuit.parts:
        if any(domain(pin) not in (CHARGER, BOARD) for pin in part.pins):
            problems.append("%s has no isolation domain (charger/board)" % part.ref)
    for net in nets(circuit):
        sides = {d: [pin_label(p) for p in net.pins if domain(p) == d] for d in (CHARGER, BOARD)}
        if sides[CHARGER] and sides[BOARD]:
            problems.append("net %s crosses the isolation barrier: charger side %s, board side %s"
                            % (net.name, ", ".join(sorted(sides[CHARGER])[:6]),
                               ", ".join(sorted(sides[BOARD])[:6])))
    return problems


def _is_ground(net: ElectricalNet) -> bool:
    return any(p.func == Pin.types.PWRIN and GROUND_PIN.match(p.name) for p in net.pins)


def decoupling(circuit: Circuit) -> list[str]:
    """Every IC supply pin's net carries a fitted capacitor to a ground net."""
    all_nets = nets(circuit)
    where = {id(p): n for n in all_nets for p in n.pins}
    problems = []
    for part in circuit.parts:
        if part.ref_prefix != "U":
            continue
        for pin in part.pins:
            if pin.func != Pin.types.PWRIN or GROUND_PIN.match(pin.name):
                continue
            net = where.get(id(pin))
            if net is None:
                problems.append("%s is not connected" % pin_label(pin))
                continue
            caps = [p.part for p in net.pins if p.part.ref_prefix == "C" and not p.part.dnp]
            if not any(_is_ground(where[id(other)]) for cap in caps for other in cap.pins
                       if id(other) in where and where[id(other)] is not net):
                problems.append("supply pin %s (net %s) has no decoupling capacitor to ground"
                                % (pin_label(pin), net.name))
    return problems


def _reach(circuit: Circuit, pin: Pin) -> list[Pin]:
    """Pins on `pin`'s net, plus those one fitted series resistor further on."""
    where = {id(p): n for n in nets(circuit) for p in n.pins}
    first = where.get(id(pin))
    if first is None:
        return []
    found = list(first.pins)
    for p in first.pins:
        part = p.part
        if part.ref_prefix == "R" and not part.dnp and len(part.pins) == 2 and p is not pin:
            other = part.pins[1] if part.pins[0] is p else part.pins[0]
            found += where[id(other)].pins if id(other) in where else []
    return found


def _find(circuit: Circuit, test) -> Part | None:
    return next((p for p in circuit.parts if test(p)), None)


def uart(circuit: Circuit, uart_cfg: dict) -> list[str]:
    """GPIO<rx> hears the charger's TX and GPIO<tx> drives the charger's RX, via the isolator."""
    esp = _find(circuit, lambda p: p.name.startswith("ESP32"))
    iso = _find(circuit, lambda p: getattr(p, "channels", None))
    hdr = _find(circuit, lambda p: p.name.startswith("IP22_Header"))
    if not (esp and iso and hdr):
        return ["ESP32 module, isolator or IP22 header missing"]
    problems = []
    for key in ("rx", "tx"):
        gpio = uart_cfg[key]
        if gpio in RESERVED_GPIO:
            problems.append("firmware uart.%s = GPIO%d is reserved (%s)"
                            % (key, gpio, RESERVED_GPIO[gpio]))
    if uart_cfg.get("id") == 0:
        problems.append("firmware uart.id = 0 shares UART0 with the ROM's boot messages")
    channels = {iso[i]: iso[o] for i, o in iso.channels.items()}  # input pin -> output pin
    paths = (("rx", "TX", "charger TX"), ("tx", "RX", "charger RX"))
    for key, hdr_name, what in paths:
        gpio = "IO%d" % uart_cfg[key]
        try:
            esp_pin = esp[gpio]
        except Exception:  # noqa: BLE001  (SKiDL raises several kinds for a missing pin)
            esp_pin = None
        if not isinstance(esp_pin, Pin):
            problems.append("firmware uart.%s = GPIO%d: no such pin on %s"
                            % (key, uart_cfg[key], esp.ref))
            continue
        near = [p for p in _reach(circuit, esp_pin) if p.part is iso and domain(p) == BOARD]
        if key == "rx":  # ESP <- VOx ... VIx <- header TX
            ok = any(out is p and _hits(circuit, inp, hdr, hdr_name)
                     for p in near for inp, out in channels.items())
        else:  # ESP -> VIx ... VOx -> header RX
            ok = any(inp is p and _hits(circuit, out, hdr, hdr_name)
                     for p in near for inp, out in channels.items())
        if not ok:
            problems.append("firmware uart.%s = GPIO%d (%s) is not wired through %s to the %s "
                            "(header pin %s); it sits on net %s"
                            % (key, uart_cfg[key], pin_label(esp_pin), iso.ref, what,
                               hdr[hdr_name].num, getattr(net_of(circuit, esp_pin), "name", "-")))
    return problems


def _hits(circuit: Circuit, pin: Pin, hdr: Part, hdr_name: str) -> bool:
    return any(p is hdr[hdr_name] for p in _reach(circuit, pin))


def fields(circuit: Circuit) -> list[str]:
    """Every part needs a footprint (for layout) and a value (for the BOM and assembly)."""
    problems = []
    for part in circuit.parts:
        if not getattr(part, "footprint", ""):
            problems.append("%s (%s) has no footprint" % (part.ref, part.name))
        if not str(getattr(part, "value", "") or ""):
            problems.append("%s (%s) has no value" % (part.ref, part.name))
    return problems


def firmware_uart() -> dict:
    """The UART defaults from firmware/schema.py (what config.defaults() returns), loaded by path:
    schema.py imports nothing, while config.py imports firmware modules that are not on the path
    here."""
    spec = importlib.util.spec_from_file_location("_fw_schema", ROOT / "firmware" / "schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {key: leaf[1] for key, leaf in module.SCHEMA["uart"].items()}


def run_all(circuit: Circuit, uart_cfg: dict | None = None) -> Report:
    """Every rule on one circuit; the firmware's UART defaults unless `uart_cfg` is given."""
    errors, warnings, messages = erc(circuit)
    return Report(errors, warnings, messages, {
        "isolation": isolation(circuit),
        "decoupling": decoupling(circuit),
        "uart": uart(circuit, uart_cfg if uart_cfg is not None else firmware_uart()),
        "fields": fields(circuit),
    })
