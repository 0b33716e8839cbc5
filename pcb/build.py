"""One command for every output: `./dev pcb` (= python -m pcb.build) writes into pcb/out/:

  adapter.net          KiCad netlist (import into Pcbnew: File > Import > Netlist)
  adapter.xml          KiCad XML netlist (for BOM tools)
  bom.csv              grouped BOM: reference, qty, value, footprint, manufacturer part, LCSC, DNP
  block_diagram.svg    block diagram drawn from the netlist (pcb/block_diagram.svg is its copy
                       for pcb/README.md; --docs refreshes it)
  checks.txt           ERC and design-rule report

The checks run first; a failing design still gets its report written, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import adapter, bom, checks, diagram
from ._skidl import skidl

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DOC_SVG = HERE / "block_diagram.svg"


def build(out: Path = OUT, fault: str | None = None) -> tuple[checks.Report, dict[str, Path]]:
    """Build the circuit, check it and write every output; (report, name -> path)."""
    out.mkdir(parents=True, exist_ok=True)
    circuit = adapter.build(fault)
    report = checks.run_all(circuit)
    files = {name: out / name for name in
             ("adapter.net", "adapter.xml", "bom.csv", "block_diagram.svg", "checks.txt")}
    files["checks.txt"].write_text(report.summary() + "\n")
    files["adapter.net"].write_text(str(circuit.generate_netlist(tool=skidl.KICAD8,
                                                                 do_backup=False)))
    files["adapter.xml"].write_text(circuit.generate_xml(tool=skidl.KICAD8))
    files["bom.csv"].write_text(bom.to_csv(circuit))
    if fault is None:
        files["block_diagram.svg"].write_text(diagram.svg(circuit, adapter.BLOCKS))
    else:
        del files["block_diagram.svg"]
    return report, files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./dev pcb", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="output directory (default pcb/out)")
    ap.add_argument("--fault", choices=adapter.FAULTS, help="build a deliberately broken variant")
    ap.add_argument("--docs", action="store_true", help="also refresh pcb/block_diagram.svg")
    args = ap.parse_args(argv)
    report, files = build(args.out, args.fault)
    print(report.summary())
    bom_lines = len(files["bom.csv"].read_text().splitlines()) - 1
    print("wrote %s (%d BOM lines)" % (", ".join(str(p) for p in files.values()), bom_lines))
    if args.docs and "block_diagram.svg" in files:
        shutil.copyfile(files["block_diagram.svg"], DOC_SVG)
        print("updated", DOC_SVG)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
