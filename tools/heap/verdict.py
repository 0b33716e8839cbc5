"""Whether a run passed: the heap flat, and every part working with nothing lost, failed or
restarted."""

from __future__ import annotations

from typing import Any

FLAT_MARGIN_B = 1024  # the last third's mean may exceed the first third's by this much
LOST_FRAMES_TOLERANCE = 2  # a frame cut by the final silence, one cut by the first connect


def flatness(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """Flat: mean(last third) - mean(first third) of the heap samples <= FLAT_MARGIN_B. Nothing
    may grow: even the chart's history is allocated whole at start (firmware/trend.py)."""
    out: dict[str, Any] = {"flat": None, "trend_b": None, "samples": len(samples),
                           "margin_b": FLAT_MARGIN_B}
    if len(samples) < 3:
        return out
    third = len(samples) // 3
    first = sum(u for _, u in samples[:third]) / third
    last = sum(u for _, u in samples[-third:]) / third
    trend = last - first
    out.update(
        flat=trend <= FLAT_MARGIN_B,
        trend_b=round(trend),
        first_third_mean_b=round(first),
        last_third_mean_b=round(last),
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
        and (
            bool(r.get("left_out")) if r.get("core") else (r.get("mqtt_published_in_run") or 0) > 0
        )
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
    if r.get("core") and not r.get("left_out"):
        reasons.append("MQTT not said to be left out")
    keys = ("frames_in_run", "venus_ok_in_run")
    for key in keys + (() if r.get("core") else ("mqtt_published_in_run",)):
        if not r.get(key):
            reasons.append("no " + key)
    return ", ".join(reasons) or "?"


def run_problems(r: dict[str, Any]) -> list[str]:
    """What every heap test refuses in a run: stopping early, exiting, a MemoryError, a task
    restart (each test adds its own checks to these)."""
    problems = []
    if r.get("stopped_early"):
        problems.append("stopped early: %s" % r["stopped_early"])
    if r.get("exit_code") is not None:
        problems.append("the firmware exited with %s" % r["exit_code"])
    if r["memory_errors"]:
        problems.append("%d MemoryError lines in the log" % r["memory_errors"])
    if r.get("task_restarts") != 0 or r["task_failures_logged"]:
        problems.append("task restarts: %s %s" % (r.get("task_restarts"),
                                                  r["task_failures_logged"]))
    return problems
