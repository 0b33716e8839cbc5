#!/usr/bin/env python3
"""Heap benchmark: the whole firmware (charger link, Venus poller, controller, HTTP, MQTT),
compiled to .mpy as on the board, on the MicroPython Unix port with a small GC heap
(`-X heapsize`), with the status page polled as a browser does. Reports the heap after
start-up and at the end, the samples' range and trend, the peak, MemoryErrors, task restarts,
charger frames (and any lost), MQTT publishes and every HTTP request that failed.

    .venv/bin/python -m tools.bench_heap [--heap 192K] [--minutes 10] [--find-min] [--json]

The installation: the simulator (tools/sim) at --speed (10x: the charger's frames ten times as
fast, ~240 frames/s) with passing clouds, its Venus on Modbus TCP, control mode auto, MQTT
against a real mosquitto publishing every second with Home Assistant discovery and commands on.
The browser: GET / and /api/status and /api/history at load, /api/status every second,
/api/history every 10 s, and every minute a reload that also opens the settings
(/, /api/schema, /api/config). The heap figures are the firmware's own (/api/status: `heap.used`
is gc.mem_alloc() after the gc.collect() the housekeeping task does every 10 s, `free_heap` is
gc.mem_free() at the moment of the request).

"Flat": the mean of the last third of the heap samples (`heap.used` from every status poll
after start-up) is at most FLAT_MARGIN_B (1 kB) above the mean of the first third. Nothing is
allowed to grow: the chart's history is allocated whole at start (firmware/trend.py).

--find-min bisects, in 8K steps, the smallest -X heapsize at which a shorter run (--trial-s,
everything active) has no MemoryError, no task restart, no failed HTTP request, and every part
working (frames, Venus readings, MQTT publishes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The parts live in tools/heap/; their names stay importable from here (host_tests/test_heap.py
# uses run, table and LOST_FRAMES_TOLERANCE).
from tools.heap.breakdown import (  # noqa: E402
    BREAKDOWN_SCRIPT,
    BUILTIN_MODULES,
    IMPORT_RE,
    NOT_IMPORTED,
    breakdown,
    breakdown_table,
    import_order,
    modules_alone,
    modules_table,
)
from tools.heap.browser import (  # noqa: E402
    HISTORY_EVERY_S,
    HTTP_TIMEOUT_S,
    RELOAD_EVERY_S,
    STATUS_EVERY_S,
    Browser,
)
from tools.heap.find_min import STEP, find_min  # noqa: E402
from tools.heap.firmware import (  # noqa: E402
    BUILD,
    TRACE_MAIN,
    build,
    firmware_revision,
    micropython_path,
    parse_size,
    size_arg,
)
from tools.heap.frametap import FrameTap  # noqa: E402
from tools.heap.report import find_min_table, kb, table  # noqa: E402
from tools.heap.run import SETTLE_TIMEOUT_S, memory_error_lines, run  # noqa: E402
from tools.heap.verdict import (  # noqa: E402
    FLAT_MARGIN_B,
    LOST_FRAMES_TOLERANCE,
    flatness,
    passed,
    why_failed,
)

__all__ = [
    "BREAKDOWN_SCRIPT",
    "BUILD",
    "BUILTIN_MODULES",
    "FLAT_MARGIN_B",
    "HISTORY_EVERY_S",
    "HTTP_TIMEOUT_S",
    "IMPORT_RE",
    "LOST_FRAMES_TOLERANCE",
    "NOT_IMPORTED",
    "RELOAD_EVERY_S",
    "ROOT",
    "SETTLE_TIMEOUT_S",
    "STATUS_EVERY_S",
    "STEP",
    "TRACE_MAIN",
    "Browser",
    "FrameTap",
    "breakdown",
    "breakdown_table",
    "build",
    "find_min",
    "find_min_table",
    "firmware_revision",
    "flatness",
    "import_order",
    "kb",
    "main",
    "memory_error_lines",
    "micropython_path",
    "parse_size",
    "passed",
    "run",
    "size_arg",
    "table",
    "why_failed",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heap", default="192K", help="-X heapsize of the Unix port (192K)")
    ap.add_argument("--minutes", type=float, default=10, help="run length after start-up")
    ap.add_argument("--speed", type=float, default=10, help="simulator speed (10x)")
    ap.add_argument(
        "--find-min",
        action="store_true",
        help="also bisect the smallest heapsize (8K steps) with shorter runs",
    )
    ap.add_argument(
        "--trial-s", type=float, default=60, help="--find-min: seconds per trial after start-up"
    )
    ap.add_argument("--skip-run", action="store_true", help="with --find-min: only that")
    ap.add_argument(
        "--verify-min",
        action="store_true",
        help="with --find-min: then run --minutes at the smallest heapsize found",
    )
    ap.add_argument(
        "--trace",
        action="store_true",
        help="print the traceback of every exception that ends a task (a wrapper around main)",
    )
    ap.add_argument(
        "--bits32",
        action="store_true",
        help="also the breakdown on a 32-bit MicroPython (the webassembly port, from npm)",
    )
    ap.add_argument(
        "--core",
        action="store_true",
        help="a heap below the full set's: the firmware must leave MQTT out and run the core",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--workdir", type=Path, default=BUILD, help="build, logs (build/heap)")
    args = ap.parse_args()
    quiet = args.json

    def say(text: str) -> None:
        print(text, file=sys.stderr if quiet else sys.stdout, flush=True)

    out: dict[str, Any] = {"revision": firmware_revision()}
    t = time.monotonic()
    say("building into %s" % args.workdir)
    fw_lib = build(args.workdir / "build")
    config = {
        "control": {"mode": "auto"},
        "venus": {"host": "127.0.0.1", "port": 502},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "update_s": 1},
    }
    # the core's breakdown: MQTT not configured (with --core the run leaves it out by itself)
    parts = {k: v for k, v in config.items() if k != "mqtt" or not args.core}
    out["breakdown"] = breakdown(*fw_lib, parts, workdir=args.workdir / "breakdown")
    if args.bits32:
        out["breakdown_32"] = breakdown(
            *fw_lib, parts, workdir=args.workdir / "breakdown32", bits32=True
        )
    out["modules"] = modules_alone(*fw_lib, args.workdir / "modules")
    if args.bits32:
        out["modules_32"] = modules_alone(*fw_lib, args.workdir / "modules", bits32=True)
    if not quiet:
        print(breakdown_table(out["breakdown"], out.get("breakdown_32")))
        print(modules_table(out["modules"], out.get("modules_32")))
    def run_for_minutes(heap: str, name: str) -> dict[str, Any]:
        r = run(heap, args.minutes * 60, args.speed, workdir=args.workdir / name,
                fw_lib=fw_lib, progress=say, trace=args.trace, core=args.core)
        r["revision"] = out["revision"]
        if not quiet:
            print(table(r))
        return r

    if not args.skip_run:
        say("heapsize %s for %g min" % (args.heap, args.minutes))
        out["run"] = run_for_minutes(args.heap, "run")
    if args.find_min:
        say("bisecting the smallest heapsize (%g s per trial)" % args.trial_s)
        m = find_min(
            args.trial_s,
            args.speed,
            high=parse_size(args.heap),
            progress=say,
            workdir=args.workdir / "find-min",
            fw_lib=fw_lib,
            core=args.core,
        )
        out["find_min"] = m
        if not quiet:
            print(find_min_table(m, args.trial_s))
        if args.verify_min and m.get("min_heapsize"):
            say("heapsize %s (the smallest found) for %g min" % (m["min_heapsize"], args.minutes))
            out["run_at_min"] = run_for_minutes(m["min_heapsize"], "run-min")
    out["wall_s"] = round(time.monotonic() - t, 1)
    if quiet:
        print(json.dumps(out))
    ok = out.get("run", {"ok": True})["ok"] and (
        not args.find_min or out["find_min"].get("min_heapsize")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
