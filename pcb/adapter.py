"""The adapter board's circuit (hardware-notes.md section 5), built into a fresh SKiDL Circuit.

Blocks, in the order below:
  header   IP22 2x3 header -> ADuM1201 side 1 (powered from header pin 6), series resistors
  power    DC in -> fuse -> TVS / reverse diode -> LMR36510 buck -> +3V3; USB VBUS OR-ed in
  esp      ESP32-S3-MINI-1-N4R2, BOOT strap, EN RC + reset, LED, VSENSE divider
  usb      USB-C receptacle, CC pull-downs, USBLC6 ESD array

`build(fault=...)` can inject one deliberate mistake so the tests can prove each check bites.
"""

from __future__ import annotations

from . import _skidl  # noqa: F401  (quiet import first)
from skidl import Circuit, Net, Pin

from .parts import (
    ADUM1201, BUTTON, C0603, C0805, C1206, C1210, CHARGER, DC_IN, DIODE_SMA, ESP32_S3_MINI_1,
    FUSE, IP22_HEADER, L_6X6, LED_0603, LMR36510, R0603, TESTPOINT, TVS_SMB, USB_C, USBLC6,
    place,
)

FAULTS = ("gnd_tie", "zero_ohm_bridge", "no_decoupling", "uart_swap", "no_footprint")

# The block each reference belongs to: the block diagram is drawn from these and the netlist.
BLOCKS = {
    "header": ("J1", "R6", "R7", "R8", "C7", "TP1"),
    "isolator": ("U2", "C8"),
    "input": ("J2", "F1", "D1", "D2"),
    "buck": ("U1", "L1", "C1", "C2", "C3", "C4", "C5", "C6", "R1", "R2", "R3", "R4", "R5"),
    "esp": ("U3", "C9", "C10", "C11", "C12", "R9", "R10", "R11", "R12", "R15", "R16", "R17",
            "D4", "SW1", "SW2", "TP2", "TP3", "TP4", "TP5", "TP6", "TP7"),
    "usb": ("J3", "U4", "R18", "R19", "R20", "C13", "D3"),
}


def _power_net(circuit: Circuit, name: str) -> Net:
    """A net fed from outside the symbols' view (connector, inductor): tell ERC it is driven."""
    net = Net(name, circuit=circuit)
    net.drive = Pin.drives.POWER
    return net


def build(fault: str | None = None) -> Circuit:
    """The whole board in a new Circuit; `fault` (one of FAULTS) breaks it on purpose."""
    if fault is not None and fault not in FAULTS:
        raise ValueError("unknown fault %r (known: %s)" % (fault, ", ".join(FAULTS)))
    c = Circuit()
    c.no_files = True  # outputs are written by pcb.build, not as a side effect
    c.track_src = False  # no "SKiDL Line" fields: the netlist stays stable across edits
    net = lambda name: Net(name, circuit=c)  # noqa: E731

    gnd, v3 = _power_net(c, "GND"), _power_net(c, "+3V3")
    gnd_chg, v3_chg = _power_net(c, "GND_CHG"), _power_net(c, "+3V3_CHG")
    vin, vbus = _power_net(c, "VIN"), _power_net(c, "VBUS")

    # --- header side: everything here is on the charger's ground ------------------------------
    j1 = place(c, IP22_HEADER, "J1", "IP22 header 2x3", domain=CHARGER,
               mpn="IDC box header 2x3 2.54 mm")
    u2 = place(c, ADUM1201, "U2", "ADuM1201ARZ", mpn="ADuM1201ARZ-RL7", lcsc="C660256")
    c7 = place(c, C0603, "C7", "100n", domain=CHARGER, mpn="CL10B104KB8NNNC", lcsc="C1591")
    r6 = place(c, R0603, "R6", "1k", domain=CHARGER, mpn="0603WAF1001T5E", lcsc="C21190")
    r7 = place(c, R0603, "R7", "100R", domain=CHARGER, mpn="0603WAF1000T5E", lcsc="C22775")
    r8 = place(c, R0603, "R8", "100k", domain=CHARGER, dnp=True, mpn="0603WAF1003T5E",
               lcsc="C25803", description="optional RX idle pull-up")
    tp1 = place(c, TESTPOINT, "TP1", "SPIKES", domain=CHARGER)
    chg_tx, chg_rx = net("CHG_TX"), net("CHG_RX")
    iso_vib, iso_voa = net("ISO_VIB"), net("ISO_VOA")
    j1["1"] += c.NC
    gnd_chg += j1["2"], u2["GND1"], c7[2]
    v3_chg += j1["6"], u2["VDD1"], c7[1], r8[1]
    chg_tx += j1["3"], r6[1]
    iso_vib += r6[2], u2["VIB"]
    chg_rx += j1["5"], r7[2], r8[2]
    iso_voa += r7[1], u2["VOA"]
    net("CHG_SPIKES").connect(j1["4"], tp1[1])
    gnd += u2["GND2"]
    v3 += u2["VDD2"]

    # --- power: charger DC output -> fuse -> TVS / SS16 -> buck -> +3V3 ------------------------
    j2 = place(c, DC_IN, "J2", "DC in", mpn="B2B-PH-K-S", lcsc="C131337")
    f1 = place(c, FUSE, "F1", "1A fast 63V", mpn="Littelfuse 0466001.NR")
    d1 = place(c, TVS_SMB, "D1", "SMBJ36A", mpn="SMBJ36A")
    d2 = place(c, DIODE_SMA, "D2", "SS16", mpn="SS16", lcsc="C5262487")
    d3 = place(c, DIODE_SMA, "D3", "SS16", mpn="SS16", lcsc="C5262487")
    u1 = place(c, LMR36510, "U1", "LMR36510ADDAR", mpn="LMR36510ADDAR", lcsc="C1858393")
    l1 = place(c, L_6X6, "L1", "22u 1.5A", mpn="SRN6045TA-220M", lcsc="C2044314")
    c1 = place(c, C1210, "C1", "4.7u 100V X7R", mpn="GRM32ER72A475KA35L")
    c2 = place(c, C0603, "C2", "100n 100V", mpn="CL10B104KC8NNNC")
    c3 = place(c, C0603, "C3", "1u", mpn="CL10A105KB8NNNC", lcsc="C15849")
    c4 = place(c, C0603, "C4", "100n", mpn="CL10B104KB8NNNC", lcsc="C1591")
    c5 = place(c, C1206, "C5", "22u 10V", mpn="CL31A226KPHNNNE")
    c6 = place(c, C1206, "C6", "22u 10V", mpn="CL31A226KPHNNNE")
    r1 = place(c, R0603, "R1", "100k", mpn="0603WAF1003T5E", lcsc="C25803")
    r2 = place(c, R0603, "R2", "13k", dnp=True, mpn="0603WAF1302T5E", lcsc="C22797",
               description="optional UVLO divider: 13k ~10.7 V, 5.6k ~23 V")
    r3 = place(c, R0603, "R3", "100k", mpn="0603WAF1003T5E", lcsc="C25803")
    r4 = place(c, R0603, "R4", "100k", mpn="0603WAF1003T5E", lcsc="C25803")
    r5 = place(c, R0603, "R5", "43k", mpn="0603WAF4302T5E", lcsc="C23172")
    vbat_in, vbat_f = net("VBAT_IN"), net("VBAT_F")
    gnd += j2["BAT-"], d1["A"], u1["PGND"], u1["PAD"], c1[2], c2[2], c3[2], c5[2], c6[2], r5[2]
    gnd += r2[2]
    vbat_in += j2["BAT+"], f1[1]
    vbat_f += f1[2], d1["K"], d2["A"]
    vin += d2["K"], d3["K"], c1[1], c2[1], r1[1], u1["VIN"]
    net("BUCK_EN").connect(r1[2], r2[1], u1["EN"])
    net("BUCK_PG").connect(u1["PG"], r3[1])
    net("BUCK_FB").connect(u1["FB"], r4[2], r5[1])
    net("BUCK_VCC").connect(u1["VCC"], c3[1])
    net("BUCK_BOOT").connect(u1["BOOT"], c4[1])
    net("BUCK_SW").connect(u1["SW"], c4[2], l1[1])
    v3 += l1[2], c5[1], c6[1], r3[2], r4[1]

    # --- ESP32-S3-MINI-1-N4R2 ------------------------------------------------------------------
    # Straps: GPIO0 = BOOT (10k pull-up + button). GPIO3, GPIO45 and GPIO46 stay unconnected: their
    # internal defaults are the safe levels (GPIO45 pulled down = 3.3 V flash/PSRAM supply, which
    # this module needs; GPIO46 pulled down, as both SPI boot and download mode want; GPIO3 is
    # only read when an eFuse selects JTAG by strap). Nothing on the board may drive them.
    u3 = place(c, ESP32_S3_MINI_1, "U3", "ESP32-S3-MINI-1-N4R2", mpn="ESP32-S3-MINI-1-N4R2")
    c8 = place(c, C0603, "C8", "100n", mpn="CL10B104KB8NNNC", lcsc="C1591")
    c9 = place(c, C0805, "C9", "10u", mpn="CL21A106KAYNNNE", lcsc="C15850")
    c10 = place(c, C0603, "C10", "100n", mpn="CL10B104KB8NNNC", lcsc="C1591")
    c11 = place(c, C0603, "C11", "1u", mpn="CL10A105KB8NNNC", lcsc="C15849")
    c12 = place(c, C0603, "C12", "100n", mpn="CL10B104KB8NNNC", lcsc="C1591")
    r9 = place(c, R0603, "R9", "100R", mpn="0603WAF1000T5E", lcsc="C22775")
    r10 = place(c, R0603, "R10", "100R", mpn="0603WAF1000T5E", lcsc="C22775")
    r11, r12 = (place(c, R0603, "R%d" % n, "10k", mpn="0603WAF1002T5E", lcsc="C25804")
                for n in (11, 12))
    r15 = place(c, R0603, "R15", "1k", mpn="0603WAF1001T5E", lcsc="C21190")
    r16 = place(c, R0603, "R16", "1M", mpn="0603WAF1004T5E", lcsc="C22935")
    r17 = place(c, R0603, "R17", "68k", mpn="0603WAF6802T5E", lcsc="C23231")
    d4 = place(c, LED_0603, "D4", "green", mpn="KT-0603G", lcsc="C12624")
    sw1 = place(c, BUTTON, "SW1", "BOOT", mpn="TS-1187A-B-A-B", lcsc="C318884")
    sw2 = place(c, BUTTON, "SW2", "RESET", mpn="TS-1187A-B-A-B", lcsc="C318884")
    gnd += u3["GND"], c8[2], c9[2], c10[2], c11[2], c12[2], r17[2], d4["K"], sw1[2], sw2[2]
    v3 += u3["3V3"], c8[1], c9[1], c10[1], r11[1], r12[1]
    # UART1 through the isolator on its IO MUX pins: VOB -> 100R -> GPIO18 RX, GPIO17 TX -> 100R
    # -> VIA. Neither is a strap, USB or flash/PSRAM pin, and UART0 (TXD0/RXD0) keeps the ROM log.
    iso_vob, iso_via = net("ISO_VOB"), net("ISO_VIA")
    esp_rxd, esp_txd = net("ESP_CHG_RXD"), net("ESP_CHG_TXD")
    iso_vob += u2["VOB"], r9[1]
    iso_via += u2["VIA"], r10[2]
    esp_rxd += r9[2]
    esp_txd += r10[1]
    rx_io, tx_io = ("IO17", "IO18") if fault == "uart_swap" else ("IO18", "IO17")
    esp_rxd += u3[rx_io]
    esp_txd += u3[tx_io]
    net("ESP_EN").connect(u3["EN"], r11[2], c11[1], sw2[1])
    net("ESP_IO0_BOOT").connect(u3["IO0"], r12[2], sw1[1])
    net("ESP_IO10_LED").connect(u3["IO10"], r15[1])
    net("LED_A").connect(r15[2], d4["A"])
    vbat_f += r16[1]
    net("VSENSE").connect(u3["IO1"], r16[2], r17[1], c12[1])  # ADC1 (ADC2 is busy with WiFi)
    for n, io in enumerate(("IO2", "IO4", "IO6", "IO7", "RXD0", "TXD0"), start=2):
        tp = place(c, TESTPOINT, "TP%d" % n, io)
        net("ESP_" + io).connect(u3[io], tp[1])

    # --- USB-C: D+/D- to the S3's native USB (GPIO20/GPIO19), VBUS OR-ed into VIN via D3 ------
    j3 = place(c, USB_C, "J3", "USB-C 16P", mpn="TYPE-C-31-M-12", lcsc="C165948")
    u4 = place(c, USBLC6, "U4", "USBLC6-2SC6", mpn="USBLC6-2SC6", lcsc="C7519")
    r18 = place(c, R0603, "R18", "5k1", mpn="0603WAF5101T5E", lcsc="C23186")
    r19 = place(c, R0603, "R19", "5k1", mpn="0603WAF5101T5E", lcsc="C23186")
    r20 = place(c, R0603, "R20", "0R", mpn="0603WAF0000T5E", lcsc="C21189")
    c13 = place(c, C0603, "C13", "100n", mpn="CL10B104KB8NNNC", lcsc="C1591")
    gnd += j3["GND"], j3["SHIELD"], u4["GND"], r18[2], r19[2], c13[2]
    vbus += j3["VBUS"], u4["VBUS"], c13[1], r20[1]
    net("VBUS_PROT").connect(r20[2], d3["A"])
    net("USB_DP").connect(j3["D+"], u4["IO2"], u3["IO20"])
    net("USB_DM").connect(j3["D-"], u4["IO1"], u3["IO19"])
    net("USB_CC1").connect(j3["CC1"], r18[1])
    net("USB_CC2").connect(j3["CC2"], r19[1])
    j3["SBU1"] += c.NC
    j3["SBU2"] += c.NC
    # Every module pin not wired above is left open: the straps GPIO3/45/46 (see above), and
    # IO26, which is the PSRAM's chip select inside the -N4R2 and must stay unconnected.
    for pin in u3.pins:
        if not pin.is_connected():
            pin += c.NC

    _inject(c, fault, gnd=gnd, gnd_chg=gnd_chg, c7=c7)
    return c


def _inject(c: Circuit, fault: str | None, **nets) -> None:
    """The deliberate mistakes the tests use to show that each check fails when it should."""
    if fault == "gnd_tie":  # a wire from header GND to board GND: the classic ground loop
        nets["gnd"] += nets["gnd_chg"]
    elif fault == "zero_ohm_bridge":  # the same loop hidden in a board-side 0R link
        link = place(c, R0603, "R99", "0R")
        nets["gnd"] += link[1]
        nets["gnd_chg"] += link[2]
    elif fault == "no_decoupling":  # isolator side 1 loses its only capacitor
        c7 = nets["c7"]
        for pin in c7.pins:
            pin.disconnect()
        c -= c7
    elif fault == "no_footprint":
        c.parts[0].footprint = ""
