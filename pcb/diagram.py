"""Block diagram as SVG, drawn from the netlist.

SKiDL's own SVG of this board is a heap of overlapping boxes and net labels, so this module draws
the picture a reviewer wants: six blocks at hand-chosen places, and between them exactly the nets
that the netlist says cross from one block to another (a block is the set of references in
`adapter.BLOCKS`). Positions are hand-made; every line and label comes from the circuit, so the
picture cannot drift from the design. GND is listed, not drawn (it joins every board-side block).
"""

from __future__ import annotations

from html import escape

from skidl import Circuit

from . import checks

WIDTH, HEIGHT = 1040, 720
BARRIER_X = 350
# block -> (x, y, w, h, title, lines of text); the isolator's lines are (side 1, side 2) pairs.
LAYOUT = {
    "header": (15, 300, 175, 140, "IP22 header J1 (2x3)",
               ("2 GND  3 TX  6 3.3V", "5 RX  4 spikes (TP1)", "1 not fitted",
                "R6 1k, R7 100R")),
    "isolator": (270, 300, 160, 140, "U2 ADuM1201",
                 (("VIB >", "> VOB"), ("VOA <", "< VIA"), ("VDD1", "VDD2"), ("GND1", "GND2"))),
    "usb": (470, 50, 170, 130, "USB-C J3", ("U4 USBLC6 ESD", "CC1/CC2 5k1 to GND",
                                           "D3 SS16 OR-ing")),
    "input": (470, 560, 170, 130, "DC input J2", ("F1 1 A fuse", "D1 SMBJ36A TVS",
                                                   "D2 SS16 reverse block")),
    "esp": (720, 50, 300, 200, "U3 ESP32-S3-MINI-1-N4R2", ("UART1: IO18 RX, IO17 TX",
                                                             "IO1 VSENSE (1M/68k)",
                                                             "IO10 LED, IO0 BOOT, EN RC",
                                                             "straps IO3/45/46 left open",
                                                             "IO19/20 USB D-/D+")),
    "buck": (720, 520, 300, 140, "U1 LMR36510 buck", ("4.2-65 V in, 1 A sync",
                                                        "L1 22 uH, FB 100k/43k",
                                                        "-> +3V3 (3.33 V)")),
}
SKIP_NETS = {"GND"}


def _block_of(blocks: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {ref: name for name, refs in blocks.items() for ref in refs}


def links(circuit: Circuit, blocks: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], list]:
    """(block, block) -> names of the nets joining them; the hub is the block with most pins."""
    where = _block_of(blocks)
    missing = sorted(p.ref for p in circuit.parts if p.ref not in where)
    if missing:
        raise ValueError("parts in no block: " + ", ".join(missing))
    out: dict[tuple[str, str], list] = {}
    for net in checks.nets(circuit):
        if net.name in SKIP_NETS:
            continue
        count: dict[str, int] = {}
        for pin in net.pins:
            count[where[pin.part.ref]] = count.get(where[pin.part.ref], 0) + 1
        if len(count) < 2:
            continue
        hub = max(sorted(count), key=lambda b: count[b])
        for other in sorted(count):
            if other != hub:
                out.setdefault(tuple(sorted((hub, other))), []).append(net.name)
    return out


def _centre(name: str) -> tuple[float, float]:
    x, y, w, h = LAYOUT[name][:4]
    return x + w / 2, y + h / 2


def _label_point(a: str, b: str) -> tuple[float, float]:
    """Middle of the part of the a-b line that lies outside both boxes."""
    (x1, y1), (x2, y2) = _centre(a), _centre(b)
    dx, dy = abs(x2 - x1) or 1e-9, abs(y2 - y1) or 1e-9

    def leave(name: str) -> float:
        w, h = LAYOUT[name][2:4]
        return min(w / 2 / dx, h / 2 / dy)

    t = (leave(a) + 1 - leave(b)) / 2
    return x1 + (x2 - x1) * t, y1 + (y2 - y1) * t


def svg(circuit: Circuit, blocks: dict[str, tuple[str, ...]]) -> str:
    """The diagram as a standalone SVG document."""
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">'
             % (WIDTH, HEIGHT, WIDTH, HEIGHT),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="20" y="30" font-size="18" font-weight="bold">IP22 adapter: block diagram'
             ' (generated from the netlist)</text>']
    labels = []
    for (a, b), names in sorted(links(circuit, blocks).items()):
        (x1, y1), (x2, y2) = _centre(a), _centre(b)
        parts.append('<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#335" '
                     'stroke-width="2"/>' % (x1, y1, x2, y2))
        labels.append((*_label_point(a, b), sorted(names)))
    for name, (x, y, w, h, title, lines) in LAYOUT.items():
        side = "#fde8d8" if name == "header" else "#e3eefb"
        parts.append('<rect x="%d" y="%d" width="%d" height="%d" rx="8" fill="%s" '
                     'stroke="#223" stroke-width="1.5"/>' % (x, y, w, h, side))
        parts.append('<text x="%d" y="%d" font-weight="bold">%s</text>'
                     % (x + 8, y + 20, escape(title)))
        for i, line in enumerate(lines):
            cells = line if isinstance(line, tuple) else (line,)
            for k, cell in enumerate(cells):
                parts.append('<text x="%d" y="%d">%s</text>'
                             % (x + 8 + k * w / 2, y + 42 + 19 * i, escape(cell)))
        refs = " ".join(blocks[name])
        parts.append('<text x="%d" y="%d" font-size="10" fill="#555">%s</text>'
                     % (x + 8, y + h - 8, escape(refs if len(refs) < w / 5.6 else
                                                   "%d parts" % len(blocks[name]))))
    for x, y, names in labels:
        h = 16 * len(names) + 4
        w = 8 * max(len(n) for n in names) + 8
        parts.append('<rect x="%.0f" y="%.0f" width="%d" height="%d" fill="white" '
                     'stroke="#335" stroke-width="0.5"/>' % (x - w / 2, y - h / 2, w, h))
        for i, n in enumerate(names):
            parts.append('<text x="%.0f" y="%.0f" text-anchor="middle" font-size="12" '
                         'font-family="monospace">%s</text>'
                         % (x, y - h / 2 + 15 + 16 * i, escape(n)))
    parts.append('<line x1="%d" y1="45" x2="%d" y2="%d" stroke="#c00" stroke-width="2" '
                 'stroke-dasharray="8,5"/>' % (BARRIER_X, BARRIER_X, HEIGHT - 30))
    notes = (("#c00", "isolation barrier (dashed):"), ("#c00", "left = charger logic ground"),
             ("#222", "right = GND = battery minus,"), ("#222", "common to all blue blocks"),
             ("#222", "lines: nets between blocks"))
    for i, (colour, text) in enumerate(notes):
        parts.append('<text x="20" y="%d" fill="%s">%s</text>' % (560 + 18 * i, colour, text))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
