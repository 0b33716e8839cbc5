"""Whether a run passed: the heap flat (allowing for the chart's history filling up), and every
part working with nothing lost, failed or restarted."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

FLAT_MARGIN_B = 1024  # the last third's mean may exceed the first third's by this much
LOST_FRAMES_TOLERANCE = 2  # a frame cut by the final silence, one cut by the first connect


HISTORY_COST_SCRIPT = """
import gc, json
for line in open(%(path)r):
    gc.collect()
    before = gc.mem_alloc()
    h = json.loads(line)
    t = {}
    for key in ("grid_w", "charger_w", "setpoint_a"):
        t[key] = []
        for x in h[key]:
            t[key].append(x)  # grown by append, as app.sample() does
    h = x = None
    gc.collect()
    print(gc.mem_alloc() - before)
    t = None
"""


def history_cost(histories: list[dict[str, Any]], micropython: str) -> list[int] | None:
    """The heap the chart's three series take on the Unix port, for each /api/history answer:
    the lists built as app.sample() builds them (append from empty), the values as they are
    (small ints need no heap, floats do)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "histories.jsonl"
        data.write_text("".join(json.dumps(h) + "\n" for h in histories))
        script = Path(tmp) / "cost.py"
        script.write_text(HISTORY_COST_SCRIPT % {"path": str(data)})
        out = subprocess.run([micropython, "-X", "heapsize=1M", str(script)],
                             capture_output=True, text=True, timeout=30)
    try:
        return [int(x) for x in out.stdout.split()]
    except ValueError:
        return None


def flatness(
    samples: list[tuple[float, int]],
    histories: list[tuple[float, dict[str, Any]]] = (),  # type: ignore[assignment]
    micropython: str | None = None,
) -> dict[str, Any]:
    """Flat: mean(last third) - mean(first third) of the heap samples <= FLAT_MARGIN_B plus
    what the chart's history (bounded: HISTORY_POINTS per series, full after 30 min) grew by
    between the middles of the two thirds, measured on the Unix port."""
    out: dict[str, Any] = {"flat": None, "trend_b": None, "samples": len(samples),
                           "margin_b": FLAT_MARGIN_B, "history_growth_b": None}
    if len(samples) < 3:
        return out
    third = len(samples) // 3
    first = sum(u for _, u in samples[:third]) / third
    last = sum(u for _, u in samples[-third:]) / third
    trend = last - first
    growth = 0
    if histories and micropython:
        def at(t: float) -> dict[str, Any]:
            return min(histories, key=lambda th: abs(th[0] - t))[1]

        h1 = at(samples[third // 2][0])
        h2 = at(samples[-third + third // 2][0])
        costs = history_cost([h1, h2], micropython)
        if costs:
            growth = max(0, costs[1] - costs[0])
            out["history_points"] = [len(h1["grid_w"]), len(h2["grid_w"])]
            out["history_growth_b"] = growth
    margin = FLAT_MARGIN_B + growth
    out.update(
        flat=trend <= margin,
        trend_b=round(trend),
        first_third_mean_b=round(first),
        last_third_mean_b=round(last),
        margin_b=margin,
    )
    return out


def passed(r: dict[str, Any]) -> bool:
    """Ran: no MemoryError, no restart, no failed request, no exit, every part working, no
    frame lost (within the tolerance)."""
    return bool(
        not r.get("stopped_early")
        and r.get("exit_code") is None
        and r.get("memory_errors") == 0
        and r.get("task_restarts") == 0
        and r.get("requests", {}).get("failed", 1) == 0
        and (r.get("frames_in_run") or 0) > 0
        and (r.get("venus_ok_in_run") or 0) > 0
        and (r.get("mqtt_published_in_run") or 0) > 0
        and r.get("frames_lost") is not None
        and abs(r["frames_lost"]) <= LOST_FRAMES_TOLERANCE
    )


def why_failed(r: dict[str, Any]) -> str:
    """What passed() found missing, for the table and the --find-min trials."""
    reasons = []
    if r.get("memory_errors"):
        reasons.append("%d MemoryError" % r["memory_errors"])
    if r.get("task_restarts"):
        reasons.append("%d task restarts" % r["task_restarts"])
    if r.get("requests", {}).get("failed"):
        reasons.append("%d requests failed" % r["requests"]["failed"])
    if r.get("frames_lost") is None or abs(r["frames_lost"]) > LOST_FRAMES_TOLERANCE:
        reasons.append("frames lost: %s" % r.get("frames_lost"))
    for key in ("frames_in_run", "venus_ok_in_run", "mqtt_published_in_run"):
        if not r.get(key):
            reasons.append("no " + key)
    return ", ".join(reasons) or "?"
