"""tools/bench.py: any profile of the documented format gives one JSON object with every row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

KEYS = {
    "surplus_used_kwh",
    "capture_ratio",
    "grid_import_kwh",
    "import_share",
    "export_left_kwh",
    "stored_writes",
    "set_commands",
    "switches",
    "step_response_s",
}


def test_profile_json(tmp_path: Path) -> None:
    csv = tmp_path / "hour.csv"
    rows = ["t_s,pv_w,load_w"]
    for minute in range(0, 61, 5):  # a sunny hour with a cloud and a kettle
        pv = 300.0 if 20 <= minute < 30 else 1100.0
        load = 2300.0 if minute == 45 else 300.0
        rows.append("%d,%s,%s" % (minute * 60, pv, load))
    csv.write_text("\n".join(rows) + "\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--profile", str(csv), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"volatile", "stored_only"}
    for variant, table in data.items():
        assert set(table) == {"oracle", "original_script", "original_service", "ours"}
        for name, row in table.items():
            assert KEYS <= set(row), (variant, name)
        assert table["oracle"]["capture_ratio"] == 1.0
        ours = table["ours"]
        assert ours["import_share"] < table["original_script"]["import_share"]
        assert ours["capture_ratio"] > 0.8
        assert table["original_script"]["stored_writes"] > 50  # every 30 s while exporting
    assert data["volatile"]["ours"]["stored_writes"] == 0
    assert data["stored_only"]["ours"]["stored_writes"] <= 150  # the daily budget


def test_bad_profile_exits_2(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("time,pv\n1,2\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--profile", str(csv), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "missing column" in result.stderr


def test_physical_limit_lies_between_the_oracle_and_ours() -> None:
    """The physical limit (perfect knowledge, no latency, the real time constant) on a cloudy
    hour: it imports more than the instant oracle and no more than our controller."""
    sys.path.insert(0, str(ROOT))
    from tools import bench

    def hour(t: float) -> tuple[float, float]:
        return (300.0 if int(t // 120) % 2 else 1200.0), 300.0  # a cloud edge every 2 min

    rows = {
        n: bench.run(hour, 0, 3600, n, bench.VOLATILE)
        for n in ("oracle", "physical_limit", "ours")
    }
    share = {n: m.grid_import_kwh / m.charger_draw_kwh for n, m in rows.items()}
    assert share["oracle"] < share["physical_limit"] <= share["ours"] * 1.05
    assert rows["physical_limit"].surplus_used_kwh >= rows["ours"].surplus_used_kwh
    assert bench.step_response("physical_limit", bench.VOLATILE) > 3.0  # the 2 s time constant
