"""The adapter board (pcb/): the clean design passes ERC and our rules, each deliberately broken
variant fails the rule it breaks, the UART pins agree with the firmware's defaults, and one
command writes the netlist, BOM and block diagram."""

from __future__ import annotations

import csv
import sys

import pytest

from conftest import FIRMWARE, ROOT

from pcb import adapter, bom, build, checks

import config  # firmware/config.py, on sys.path via conftest

# one worker runs the whole file: its tests share a module-scoped firmware/fixture
pytestmark = pytest.mark.xdist_group("test_pcb")


@pytest.fixture(scope="module")
def clean():
    return adapter.build()


@pytest.fixture(scope="module")
def clean_report(clean):
    return checks.run_all(clean, config.defaults()["uart"])


def test_clean_design_passes_erc_and_all_rules(clean_report):
    assert clean_report.erc_errors == 0, clean_report.summary()
    assert clean_report.erc_warnings == 0, clean_report.summary()
    assert clean_report.ok, clean_report.summary()


def test_ground_tie_across_the_barrier_fails_isolation():
    report = checks.run_all(adapter.build("gnd_tie"))
    assert not report.ok
    found = report.problems["isolation"]
    assert len(found) == 1 and "crosses the isolation barrier" in found[0], found
    assert "J1.2(GND)" in found[0] and "charger side" in found[0] and "board side" in found[0]


def test_zero_ohm_link_across_the_barrier_fails_isolation():
    found = checks.isolation(adapter.build("zero_ohm_bridge"))
    assert found and "GND_CHG crosses the isolation barrier" in found[0], found


def test_missing_decoupling_cap_fails():
    found = checks.decoupling(adapter.build("no_decoupling"))
    assert found == ["supply pin U2.1(VDD1) (net +3V3_CHG) has no decoupling capacitor to ground"]


def test_every_ic_supply_pin_is_decoupled(clean):
    assert checks.decoupling(clean) == []


def test_uart_pins_match_firmware_defaults(clean):
    uart = config.defaults()["uart"]
    assert checks.firmware_uart() == uart  # the build command reads the same file
    assert checks.uart(clean, uart) == []
    # and the netlist really routes them: GPIO<rx> hears header pin 3, GPIO<tx> drives pin 5
    esp = next(p for p in clean.parts if p.ref == "U3")
    assert checks.net_of(clean, esp["IO%d" % uart["rx"]]).name == "ESP_CHG_RXD"
    assert checks.net_of(clean, esp["IO%d" % uart["tx"]]).name == "ESP_CHG_TXD"


def test_uart_check_catches_a_firmware_pin_change(clean):
    moved = dict(config.defaults()["uart"], rx=6, tx=7)
    found = checks.uart(clean, moved)
    assert len(found) == 2 and "uart.rx = GPIO6" in found[0] and "uart.tx = GPIO7" in found[1]
    assert checks.uart(clean, dict(moved, rx=20, tx=21))[0].startswith("firmware uart.rx = GPIO20")


def test_swapped_uart_wiring_fails():
    found = checks.uart(adapter.build("uart_swap"), config.defaults()["uart"])
    assert len(found) == 2 and "not wired through U2 to the charger TX" in found[0], found


def test_every_part_has_footprint_and_value(clean):
    assert checks.fields(clean) == []
    broken = checks.fields(adapter.build("no_footprint"))
    assert broken == ["J1 (IP22_Header_2x03) has no footprint"]


def test_design_facts_from_the_notes(clean):
    """Pin-level facts from hardware-notes.md that a refactor must not lose."""
    pins = {(p.part.ref, p.num): n.name for n in checks.nets(clean) for p in n.pins}
    assert pins[("J1", "2")] == "GND_CHG" and pins[("J1", "6")] == "+3V3_CHG"
    assert pins[("J1", "3")] == "CHG_TX" and pins[("J1", "5")] == "CHG_RX"
    assert pins[("J1", "4")] == "CHG_SPIKES" and ("J1", "1") not in pins  # not fitted
    assert pins[("U2", "1")] == "+3V3_CHG" and pins[("U2", "8")] == "+3V3"
    assert pins[("U3", "23")] == "USB_DM" and pins[("U3", "24")] == "USB_DP"
    values = {p.ref: p.value for p in clean.parts}
    assert (values["R6"], values["R7"], values["R9"], values["R10"]) == (
        "1k",
        "100R",
        "100R",
        "100R",
    )
    assert values["U1"] == "LMR36510ADDAR" and values["D1"] == "SMBJ36A"
    assert values["D2"] == values["D3"] == "SS16"
    # every part sits in exactly one block of the diagram
    refs = [r for block in adapter.BLOCKS.values() for r in block]
    assert sorted(refs) == sorted(p.ref for p in clean.parts)


def _module(circuit):
    return next(p for p in circuit.parts if p.ref == "U3")


def test_module_is_the_s3_mini_1_n4r2(clean):
    """The module, and the pad numbers the netlist hands to layout (datasheet pin table)."""
    u3 = _module(clean)
    assert u3.name == "ESP32-S3-MINI-1" and u3.value == "ESP32-S3-MINI-1-N4R2"
    assert u3.fields["MPN"] == "ESP32-S3-MINI-1-N4R2"
    assert u3.footprint == "RF_Module:ESP32-S2-MINI-1"  # KiCad's land pattern for S2/S3 MINI-1
    pad = {p.name: p.num for p in u3.pins if p.name != "GND"}
    assert len(u3.pins) == 65
    assert sorted(int(p.num) for p in u3.pins if p.name == "GND") == [1, 2, 42, 43, *range(46, 66)]
    assert (pad["3V3"], pad["EN"], pad["IO0"], pad["IO3"], pad["IO45"], pad["IO46"]) == (
        "3", "45", "4", "7", "41", "44")
    assert (pad["IO17"], pad["IO18"], pad["IO19"], pad["IO20"]) == ("21", "22", "23", "24")
    assert (pad["TXD0"], pad["RXD0"]) == ("39", "40")


def test_usb_lands_on_gpio19_and_gpio20(clean):
    """The S3's native USB: D- is GPIO19, D+ is GPIO20, both through the ESD array."""
    u3 = _module(clean)
    for io, name, conn in (("IO19", "USB_DM", "D-"), ("IO20", "USB_DP", "D+")):
        net = checks.net_of(clean, u3[io])
        assert net is not None and net.name == name, (io, net)
        on = {(p.part.ref, p.name) for p in net.pins}
        assert ("J3", conn) in on and any(ref == "U4" for ref, _ in on), on


def test_strap_pins_carry_only_the_boot_circuit(clean):
    """GPIO3/45/46 stay open (their internal defaults are the safe levels); GPIO0 has only
    the BOOT button and its pull-up."""
    u3 = _module(clean)
    for io in ("IO3", "IO45", "IO46"):
        assert checks.net_of(clean, u3[io]) is None, io  # on the no-connect net
    net = checks.net_of(clean, u3["IO0"])
    assert net is not None
    assert sorted(p.part.ref for p in net.pins) == ["R12", "SW1", "U3"]
    r12 = next(p for p in clean.parts if p.ref == "R12")
    assert r12.value == "10k" and "+3V3" in {checks.net_of(clean, p).name for p in r12.pins}
    # IO26 is the PSRAM's chip select inside the -N4R2: open too
    assert checks.net_of(clean, u3["IO26"]) is None


def test_uart_pins_avoid_straps_usb_and_flash():
    uart = config.defaults()["uart"]
    assert uart["id"] == 1 and (uart["tx"], uart["rx"]) == (17, 18)
    bad = {0, 3, 45, 46, 19, 20, 43, 44, *range(26, 33), *range(33, 38)}
    assert not {uart["tx"], uart["rx"]} & bad
    assert not {uart["tx"], uart["rx"]} & set(checks.RESERVED_GPIO)
    assert bad <= set(checks.RESERVED_GPIO)  # the check knows every one of them
    found = checks.uart(adapter.build(), dict(uart, rx=46, tx=33))
    assert "GPIO46 is reserved" in found[0] and "GPIO33 is reserved" in found[1], found


def test_build_writes_netlist_bom_and_diagram(tmp_path):
    report, files = build.build(tmp_path)
    assert report.ok, report.summary()
    net = files["adapter.net"].read_text()
    assert net.startswith("(export") and '(ref "U3")' in net and '(name "CHG_TX")' in net
    with files["bom.csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == bom.COLUMNS
    for col in ("Reference", "Value", "Footprint", "Manufacturer part", "LCSC"):
        assert col in rows[0]
    by_ref = {ref: row for row in rows for ref in row["Reference"].split()}
    assert by_ref["U3"]["Manufacturer part"] == "ESP32-S3-MINI-1-N4R2"
    assert by_ref["U2"]["LCSC"] == "C660256"
    assert by_ref["R8"]["DNP"] == "DNP"
    assert sum(int(r["Qty"]) for r in rows) == len(adapter.build().parts)
    svg = files["block_diagram.svg"].read_text()
    assert svg.startswith("<svg") and "isolation barrier" in svg and "ISO_VOB" in svg
    assert "checks.txt" in files and "ERC: 0 errors" in files["checks.txt"].read_text()
    # the copy pcb/README.md shows is the generated one
    assert (ROOT / "pcb" / "block_diagram.svg").read_text() == svg, "run ./dev pcb --docs"


def test_build_of_broken_variant_exits_nonzero(tmp_path):
    assert build.main(["--out", str(tmp_path), "--fault", "gnd_tie"]) == 1
    assert "crosses the isolation barrier" in (tmp_path / "checks.txt").read_text()
    assert FIRMWARE.exists() and str(FIRMWARE) in sys.path
