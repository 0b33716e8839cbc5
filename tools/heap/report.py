"""A run's results as the table bench_heap.py prints (and host_tests/test_heap.py shows when it
fails), and the --find-min trials."""

from __future__ import annotations

from typing import Any

from tools.heap.firmware import firmware_revision
from tools.heap.verdict import why_failed


def kb(n: Any) -> str:
    return "-" if n is None else "%d B (%.1f kB)" % (n, n / 1024)


def table(r: dict[str, Any]) -> str:
    req = r.get("requests", {})
    fl = r.get("flatness", {})
    rev = r.get("revision") or firmware_revision()
    changes = rev["firmware_changes"]
    rows = [
        ("firmware", "%s %s" % (rev["commit"],
                                "+ changes in " + ", ".join(changes) if changes else "(clean)")),
        ("heapsize (-X heapsize)", "%s = %s; total as the GC counts it %s"
         % (r["heapsize"], r["heapsize_b"], kb(r.get("heap_total")))),
        ("run", "%s s after a %s s start-up, simulator at %gx (%.0f min of charger traffic)"
         % (r.get("run_s"), r.get("startup_s"), r["speed"],
            (r.get("run_s") or 0) * r["speed"] / 60)
         if r.get("run_s") is not None else "no run: %s" % r.get("stopped_early")),
        ("result", "RUNS" if r["ok"] else "FAILS: %s" % (r.get("stopped_early") or why_failed(r))),
        ("heap in use after start-up", kb(r.get("heap_after_start"))),
        ("heap in use at the end", kb(r.get("heap_at_end"))),
        ("heap in use, samples min / max", "%s / %s" % (kb(r.get("heap_used_min")),
                                                        kb(r.get("heap_used_max")))),
        ("heap.peak_used (max after gc.collect)", kb(r.get("heap_peak_used"))),
        ("free_heap, lowest seen (uncollected garbage counts)", kb(r.get("free_heap_min_seen"))),
        ("flat: last third - first third <= margin",
         "%s: %+d B over %d samples (%s -> %s B); margin %s B"
         % (fl.get("flat"), fl.get("trend_b") or 0, fl.get("samples", 0),
            fl.get("first_third_mean_b"), fl.get("last_third_mean_b"), fl.get("margin_b"))),
        ("MemoryErrors in the log", r.get("memory_errors")),
        ("tracebacks in the log", r.get("tracebacks")),
        ("task restarts", r.get("task_restarts")),
        ("task failures in the log", ", ".join(
            "%s x%d" % kv for kv in sorted(r.get("task_failures_logged", {}).items())) or "none"),
        ("exit code", "still running" if r.get("exit_code") is None else r["exit_code"]),
        ("charger frames ok / bad / lost", "%s / %s / %s of %s sent (%s frames/s), %s bytes "
         "discarded, %s reconnects" % (r.get("frames_ok"), r.get("frames_bad"),
                                       r.get("frames_lost"), r.get("frames_sent"),
                                       r.get("frames_per_s"), r.get("bytes_discarded"),
                                       r.get("charger_reconnects"))),
        ("commands to the charger / failed", "%s / %s" % (r.get("commands"),
                                                           r.get("command_failures"))),
        ("Venus readings ok / errors", "%s / %s" % (r.get("venus_ok"), r.get("venus_errors"))),
        ("MQTT published / errors / connects",
         "%s / %s / %s (longest block %s ms)" % (r.get("mqtt_published"),
                                                r.get("mqtt_publish_errors"),
                                                r.get("mqtt_connects"),
                                                r.get("mqtt_longest_block_ms"))),
        ("HTTP requests ok / failed", "%s / %s" % (req.get("ok"), req.get("failed"))),
    ]
    for path, c in sorted(req.get("per_path", {}).items()):
        rows.append(("  " + path, "%d ok, %d failed, slowest %d ms"
                     % (c["ok"], c["failed"], c["slowest_ms"])))
    width = max(len(str(k)) for k, _ in rows)
    lines = ["%-*s  %s" % (width, k, val) for k, val in rows]
    samples = r.get("heap_samples") or []
    if samples:
        lines.append("heap in use every 10 s: " + " ".join(str(x) for x in samples))
    for f in req.get("failures", [])[:20]:
        lines.append("failed request at %s s: %s %s" % (f["t_s"], f["path"], f["error"]))
    if r.get("memory_error_log"):
        lines.append("log around the MemoryErrors:")
        lines += ["  " + x for x in r["memory_error_log"][-60:]]
    if not r["ok"]:
        lines.append("log tail (%s):" % r.get("log_path"))
        lines += ["  " + x for x in r.get("log_tail", [])]
    return "\n".join(lines)


def find_min_table(m: dict[str, Any], trial_s: float) -> str:
    """The smallest heapsize found, then every trial on a line."""
    lines = [
        "smallest heapsize that runs %g s with everything active: %s (largest failing:"
        " %s)" % (trial_s, m.get("min_heapsize"), m.get("largest_failing"))
    ]
    for tr in m["trials"]:
        lines.append(
            "  %-6s %-5s %s; heap after start-up %s, peak_used %s"
            % (
                tr["heapsize"],
                "runs" if tr["ok"] else "fails",
                tr["why"],
                tr["heap_after_start"],
                tr["heap_peak_used"],
            )
        )
    return "\n".join(lines)
