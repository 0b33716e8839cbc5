"""The smallest -X heapsize at which the firmware runs with everything active: a bisection
over short runs, each with its own broker and simulator."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from tools.heap.firmware import build, size_arg
from tools.heap.run import run
from tools.heap.verdict import why_failed

STEP = 8 * 1024  # --find-min resolution


def find_min(
    seconds: float = 60,
    speed: float = 10,
    low: int = 64 * 1024,
    high: int = 192 * 1024,
    ceiling: int = 1024 * 1024,
    progress: Callable[[str], None] | None = None,
    workdir: Path | None = None,
    fw_lib: tuple[Path, Path] | None = None,
    core: bool = False,
) -> dict[str, Any]:
    """Bisect in STEP between `low` (assumed too small; checked) and `high` (raised until it
    runs). Every trial gets its own broker and simulator."""
    say = progress or (lambda text: None)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench_heap_min_"))
    fw_lib = fw_lib or build(workdir / "build")
    trials: dict[int, dict[str, Any]] = {}

    def trial(n: int) -> bool:
        r = run(
            size_arg(n),
            seconds,
            speed,
            workdir=workdir / ("heap-%dK" % (n // 1024)),
            fw_lib=fw_lib,
            stop_on_failure=True,
            core=core,
        )
        why = r.get("stopped_early") or ("ok" if r["ok"] else why_failed(r))
        say("  heapsize %s: %s" % (size_arg(n), "runs" if r["ok"] else "fails (%s)" % why))
        trials[n] = {
            "ok": r["ok"],
            "why": why,
            "heap_after_start": r.get("heap_after_start"),
            "heap_peak_used": r.get("heap_peak_used"),
            "free_heap_min_seen": r.get("free_heap_min_seen"),
            "requests_failed": r.get("requests", {}).get("failed"),
            "memory_error_log": r.get("memory_error_log", [])[-15:],
        }
        return bool(r["ok"])

    while not trial(high):
        low = high
        high *= 2
        if high > ceiling:
            return {"min_heapsize": None, "trials": _trial_list(trials)}
    if low not in trials and trial(low):
        return {"min_heapsize": size_arg(low), "min_heapsize_b": low,
                "trials": _trial_list(trials)}
    while high - low > STEP:
        mid = (low + high) // 2 // STEP * STEP
        if trial(mid):
            high = mid
        else:
            low = mid
    return {"min_heapsize": size_arg(high), "min_heapsize_b": high,
            "largest_failing": size_arg(low), "trial_s": seconds,
            "trials": _trial_list(trials)}


def _trial_list(trials: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(heapsize=size_arg(n), **trials[n]) for n in sorted(trials)]
