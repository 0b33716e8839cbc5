"""One run of the whole firmware under -X heapsize against the simulator, a mosquitto and the
Browser: start-up, the run itself, and the figures collected at the end."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tools.heap.browser import Browser
from tools.heap.firmware import build, micropython_path, parse_size
from tools.heap.frametap import FrameTap
from tools.heap.verdict import flatness, passed
from tools.mosquitto import Mosquitto, free_port
from tools.sim.__main__ import build_world, make_parser
from tools.sim.serve import Background

SETTLE_TIMEOUT_S = 60.0


def memory_error_lines(log: str, context: int = 12) -> list[str]:
    """The log around each MemoryError (the traceback before it, the line itself)."""
    lines = log.splitlines()
    out: list[str] = []
    shown = -1
    for i, line in enumerate(lines):
        if "MemoryError" in line or "memory allocation failed" in line:
            start = max(i - context, shown + 1)
            if start > shown + 1 and out:
                out.append("...")
            out.extend(lines[start : i + 1])
            shown = i
    return out


def run(
    heap: str = "192K",
    seconds: float = 600,
    speed: float = 10,
    broker: Mosquitto | None = None,
    workdir: Path | None = None,
    micropython: str | None = None,
    fw_lib: tuple[Path, Path] | None = None,
    scenario: str = "clouds",
    stop_on_failure: bool = False,
    progress: Callable[[str], None] | None = None,
    trace: bool = False,
    core: bool = False,
) -> dict[str, Any]:
    """The firmware at -X heapsize=`heap` for `seconds` after start-up with the page polled.
    `broker`: a running mosquitto (else one is started in `workdir`). `stop_on_failure`: end
    the run at the first MemoryError, task restart, failed request or exit (for --find-min).
    `core`: MQTT is configured, and the heap is expected to be too small for it: the firmware
    must say it left MQTT out and run the rest."""
    say = progress or (lambda text: None)
    mp = micropython or micropython_path()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench_heap_"))
    workdir.mkdir(parents=True, exist_ok=True)
    fw, lib = fw_lib or build(workdir / "build")
    page_size = (fw / "static" / "index.html").stat().st_size
    own_broker = None
    if broker is None:
        own_broker = broker = Mosquitto(workdir / "mosquitto")
        broker.start()
    result: dict[str, Any] = {
        "heapsize": heap,
        "heapsize_b": parse_size(heap),
        "speed": speed,
        "trace": trace,
        "core": core,
    }
    sim_args = make_parser().parse_args(
        ["--scenario", scenario, "--speed", str(speed), "--soc", "0.3"]
    )
    proc: subprocess.Popen[bytes] | None = None
    log_cut: int | None = None
    browser = Browser(0)
    log_path = workdir / "firmware.log"
    try:
        with Background(build_world(sim_args), speed=speed) as sim:
            tap = FrameTap(sim)
            venus_host, venus_port = sim.endpoints["venus"].rsplit(":", 1)
            config = {
                "control": {"mode": "auto"},
                "venus": {"host": venus_host, "port": int(venus_port)},
                "mqtt": {"host": broker.host, "port": broker.port, "update_s": 1},
            }
            (workdir / "config.json").write_text(json.dumps(config))
            state = workdir / "state.json"
            if state.exists():
                state.unlink()
            port = free_port()
            browser = Browser(port, page_size)
            args = [mp, "-X", "heapsize=" + heap]
            entry = fw / ("main_trace.py" if trace else "main.py")
            args += [str(entry), "--config", str(workdir / "config.json")]
            args += ["--uart", sim.endpoints["charger"], "--http-host", "127.0.0.1"]
            args += ["--http-port", str(port), "--state", str(state)]
            env = dict(os.environ, MICROPYPATH="%s:.frozen" % lib)
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
                try:
                    result.update(
                        _observe(proc, browser, port, seconds, tap, log_path, say,
                                 stop_on_failure, core)
                    )
                finally:  # stopped while the simulator still runs
                    browser.stop()
                    log_cut = log_path.stat().st_size
                    _stop(proc)
    finally:
        browser.stop()
        if proc is not None:
            _stop(proc)
        if own_broker is not None:
            own_broker.stop()
    whole = log_path.read_bytes() if log_path.exists() else b""
    cut = len(whole) if log_cut is None else log_cut
    # what the firmware printed after our SIGINT (its shutdown) is not part of the run
    log = whole[:cut].decode(errors="replace")
    shutdown = whole[cut:].decode(errors="replace")
    result["shutdown_log"] = shutdown.splitlines()[-20:]
    result["memory_errors_at_shutdown"] = shutdown.count("MemoryError")
    result["exit_code"] = result.get("exit_code")
    result["memory_errors"] = sum(
        1 for line in log.splitlines() if "MemoryError" in line or "memory allocation" in line
    )
    result["memory_error_log"] = memory_error_lines(log)
    result["tracebacks"] = log.count("Traceback")
    failed_tasks: dict[str, int] = {}
    for m in re.finditer(r"task (\w+) failed: (\w+)", log):
        key = "%s: %s" % m.groups()
        failed_tasks[key] = failed_tasks.get(key, 0) + 1
    result["task_failures_logged"] = failed_tasks
    result["log_tail"] = log.splitlines()[-25:]
    result["log_path"] = str(log_path)
    result["ok"] = passed(result)
    return result


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as on the Unix port by hand (the firmware saves its counters), then kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _observe(
    proc: subprocess.Popen[bytes],
    browser: Browser,
    port: int,
    seconds: float,
    tap: FrameTap,
    log_path: Path,
    say: Callable[[str], None],
    stop_on_failure: bool,
    core: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {"exit_code": None, "stopped_early": None, "left_out": None}
    t_start = time.monotonic()

    def exited() -> bool:
        if proc.poll() is not None:
            out["exit_code"] = proc.returncode
            return True
        return False

    def failing() -> str | None:
        if exited():
            return "the firmware exited with %s" % proc.returncode
        log = log_path.read_text(errors="replace")
        if "MemoryError" in log or "memory allocation failed" in log:
            return "MemoryError in the log"
        st = browser.last_status()
        if st and st["counters"]["task_restarts"]:
            return "task restarts"
        if browser.failed:
            return "failed HTTP requests"
        return None

    # up: /api/status answers
    while True:
        if stop_on_failure and "MemoryError" in log_path.read_text(errors="replace"):
            out["stopped_early"] = "MemoryError before serving /api/status"
            out["startup_s"] = None
            return out
        if exited() or time.monotonic() - t_start > SETTLE_TIMEOUT_S:
            out["stopped_early"] = "never served /api/status"
            out["startup_s"] = None
            return out
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/api/status")
            conn.getresponse().read()
            conn.close()
            break
        except OSError:
            time.sleep(0.1)
    out["serving_after_s"] = round(time.monotonic() - t_start, 1)
    browser.start()

    # settled: charger probed, grid readings, MQTT connected and publishing
    settled_at = None
    while settled_at is None:
        reason = failing() if stop_on_failure else (None if not exited() else "exited")
        if reason:
            out["stopped_early"] = "during start-up: " + reason
            return _finish(out, browser, tap, None, None)
        if time.monotonic() - t_start > SETTLE_TIMEOUT_S:
            out["stopped_early"] = "did not settle within %.0f s" % SETTLE_TIMEOUT_S
            return _finish(out, browser, tap, None, None)
        st = browser.last_status()
        if st:
            out["left_out"] = st.get("left_out")
        publishing = bool(
            st and st["mqtt"] and st["mqtt"].get("connected") and st["mqtt"].get("published", 0)
        )
        if (
            st
            and st["charger"]["max_a"] is not None
            and st["grid"]["power_w"] is not None
            and (bool(st.get("left_out")) if core else publishing)
        ):
            settled_at = st["uptime_s"]
        time.sleep(0.5)
    # the first housekeeping round (gc.collect, heap figures) after settling
    while True:
        st = browser.last_status()
        if st and st["uptime_s"] >= (settled_at // 10 + 1) * 10 + 1:
            break
        if exited():
            out["stopped_early"] = "exited during start-up"
            return _finish(out, browser, tap, None, None)
        time.sleep(0.5)
    start = st
    t0 = time.monotonic()
    out["startup_s"] = round(t0 - t_start, 1)
    out["heap_after_start"] = start["heap"]["used"]
    say(
        "started in %.0f s, heap in use %d B; running %.0f s"
        % (out["startup_s"], start["heap"]["used"], seconds)
    )
    next_report = t0 + 60
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        if stop_on_failure:
            reason = failing()
            if reason:
                out["stopped_early"] = reason
                break
        elif exited():
            out["stopped_early"] = "the firmware exited with %s" % proc.returncode
            break
        if time.monotonic() >= next_report:
            next_report += 60
            st = browser.last_status()
            if st:
                say(
                    "%4.0f s: heap %d B used (peak %d), free now %d B, %d frames, %d published,"
                    " %d requests failed"
                    % (
                        time.monotonic() - t0,
                        st["heap"]["used"],
                        st["heap"]["peak_used"],
                        st["free_heap"],
                        st["counters"]["frames_ok"],
                        (st["mqtt"] or {}).get("published", 0),
                        sum(browser.failed.values()),
                    )
                )
    out["run_s"] = round(time.monotonic() - t0, 1)
    return _finish(out, browser, tap, start, t0)


def _finish(
    out: dict[str, Any],
    browser: Browser,
    tap: FrameTap,
    start: dict[str, Any] | None,
    t0: float | None,
) -> dict[str, Any]:
    """Stop polling, silence the line, compare frames, collect the figures."""
    browser.stop()
    alive = out["exit_code"] is None
    end = None
    if alive:
        tap.silence()
        time.sleep(1.5)  # what was on the wire reaches the firmware and is parsed
        end = browser.get("/api/status")
    sent = tap.counts()
    end = end or browser.last_status()
    out["requests"] = browser.totals()
    with browser.lock:
        statuses = list(browser.statuses)
    window = [s for t, s in statuses if t0 is not None and t >= t0]
    timed = [(t, s["heap"]["used"]) for t, s in statuses
             if t0 is not None and t >= t0 and s["heap"]["used"] is not None]
    used = [u for _, u in timed]
    free = [s["free_heap"] for _, s in statuses if s.get("free_heap") is not None]
    out["heap_samples"] = _per_round(window)
    out["heap_used_min"] = min(used) if used else None
    out["heap_used_max"] = max(used) if used else None
    out["flatness"] = flatness(timed)
    if end:
        c = end["counters"]
        total = (end["heap"]["used"] or 0) + (end["heap"]["free"] or 0)
        out["heap_at_end"] = end["heap"]["used"]
        out["heap_peak_used"] = end["heap"]["peak_used"]
        out["heap_total"] = total or None
        out["free_heap_min_seen"] = min(free) if free else None
        out["task_restarts"] = c["task_restarts"]
        out["frames_ok"] = c["frames_ok"]
        out["frames_bad"] = c["frames_bad"]
        out["bytes_discarded"] = c["bytes_discarded"]
        out["charger_reconnects"] = c["reconnects"]
        out["commands"] = c["commands"]
        out["confirmed"] = c["confirmed"]
        out["left_out"] = end.get("left_out")
        out["command_failures"] = c["failures"]
        sent_frames = sent["text_ok"] + sent["hex_ok"]
        out["frames_sent"] = sent_frames
        out["frames_lost"] = sent_frames - c["frames_ok"] - c["frames_bad"] if alive else None
        if start is not None and t0 is not None and out.get("run_s"):
            rate = (c["frames_ok"] - start["counters"]["frames_ok"]) / out["run_s"]
            out["frames_per_s"] = round(rate, 1)
        m = end.get("mqtt") or {}
        out["mqtt_published"] = m.get("published")
        out["mqtt_publish_errors"] = m.get("publish_errors")
        out["mqtt_connects"] = m.get("connects")
        out["mqtt_failures"] = m.get("failures")
        out["mqtt_longest_block_ms"] = m.get("longest_block_ms")
        g = end.get("grid") or {}
        out["venus_ok"] = g.get("ok")
        out["venus_errors"] = g.get("errors")
        out["control_steps"] = end["control"].get("steps")
        out["control_errors"] = end["control"].get("errors")
        if start is not None:
            out["mqtt_published_in_run"] = m.get("published", 0) - (start.get("mqtt") or {}).get(
                "published", 0
            )
            out["venus_ok_in_run"] = (g.get("ok") or 0) - (start["grid"].get("ok") or 0)
            out["frames_in_run"] = c["frames_ok"] - start["counters"]["frames_ok"]
    return out


def _per_round(window: list[dict[str, Any]]) -> list[int]:
    """heap.used once per housekeeping round (it changes only every 10 s)."""
    seen: dict[int, int] = {}
    for s in window:
        if s["heap"]["used"] is not None:
            seen.setdefault(s["uptime_s"] // 10, s["heap"]["used"])
    return [seen[k] for k in sorted(seen)]
