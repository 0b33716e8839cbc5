"""BOM as CSV. SKiDL 3 has no BOM writer; grouping identical parts is a few lines here."""

from __future__ import annotations

import csv
import io
import re

from skidl import Circuit

COLUMNS = ("Reference", "Qty", "Value", "Footprint", "Manufacturer part", "LCSC", "DNP",
           "Description")


def _ref_key(ref: str) -> tuple[str, int]:
    m = re.match(r"([A-Z]+)(\d+)$", ref)
    return (m.group(1), int(m.group(2))) if m else (ref, 0)


def rows(circuit: Circuit) -> list[dict[str, str]]:
    """One row per distinct (value, footprint, MPN, LCSC, DNP), references sorted naturally."""
    groups: dict[tuple, list] = {}
    for part in circuit.parts:
        key = (str(part.value), part.footprint, part.fields.get("MPN", ""),
               part.fields.get("LCSC", ""), bool(part.dnp), part.description)
        groups.setdefault(key, []).append(part.ref)
    out = []
    for (value, fp, mpn, lcsc, dnp, desc), refs in groups.items():
        refs.sort(key=_ref_key)
        out.append(dict(zip(COLUMNS, (" ".join(refs), str(len(refs)), value, fp, mpn, lcsc,
                                      "DNP" if dnp else "", desc))))
    return sorted(out, key=lambda r: _ref_key(r["Reference"].split()[0]))


def to_csv(circuit: Circuit) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(circuit))
    return buf.getvalue()
