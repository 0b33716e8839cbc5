"""tools/bench_live.py: a short run of two cases gives one JSON object with every metric, of
sane types and values. The controller's performance is not asserted here (it is a benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import ROOT, need_tool

NUMBERS = {
    "capture": (0.0, 1.2),
    "import_share": (0.0, 1.0),
    "longest_import_s": (0.0, 120.0),
    "import_s": (0.0, 120.0),
    "belief_longest_s": (0.0, 120.0),
    "firmware_start_s": (4.0, 30.0),
    "sim_max_step_ms": (1.0, 10000.0),
}
COUNTS = {
    "switches",
    "stored_writes",
    "sets_2015",
    "sets_200e",
    "sets_0200",
    "zero_2015_sets",
    "out_of_range",
    "belief_mismatches",
    "status_samples",
    "sim_late_steps",
}
OPTIONAL_SECONDS = {"s_to_minimum", "s_to_tracking"}
CASES = ("steps_mid", "gx_refused")


def test_short_run_json() -> None:
    need_tool("micropython")
    args = [sys.executable, str(ROOT / "tools" / "bench_live.py"), "--short", "--json"]
    for case in CASES:
        args += ["--case", case]
    began = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - began < 90
    data = json.loads(result.stdout)
    assert data["short"] is True and data["wall_s"] > 0
    assert set(data["cases"]) == set(CASES)
    for name, row in data["cases"].items():
        assert row["error"] is None, (name, row["error"])
        for key, (low, high) in NUMBERS.items():
            assert isinstance(row[key], (int, float)), (name, key, row[key])
            assert low <= row[key] <= high, (name, key, row[key])
        for key in COUNTS:
            assert isinstance(row[key], int) and row[key] >= 0, (name, key, row[key])
        for key in OPTIONAL_SECONDS:
            assert row[key] is None or row[key] >= 0, (name, key, row[key])
        assert isinstance(row["out_of_range_sets"], list)
        assert len(row["out_of_range_sets"]) == min(10, row["out_of_range"])
        assert row["status_samples"] >= 20  # the status API answered about once a second
        assert row["dc_wh"] > 0 and row["oracle_dc_wh"] > 0  # surplus, and something charged
    steady = data["cases"]["steps_mid"]
    assert steady["s_to_minimum"] is None and steady["s_to_tracking"] is None  # no fault there
    fault = data["cases"]["gx_refused"]
    assert fault["s_to_minimum"] is not None  # the safe state came, sooner or later
