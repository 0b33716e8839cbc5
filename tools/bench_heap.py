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
after start-up) is at most FLAT_MARGIN_B (1 kB) above the mean of the first third, plus what the
chart's history grew by in between: it is bounded (180 points per series, full after 30 min) but
fills during a shorter run, so its cost is measured on the Unix port from the /api/history
answers (lists grown by append as app.sample() grows them) and allowed for.

--find-min bisects, in 8K steps, the smallest -X heapsize at which a shorter run (--trial-s,
everything active) has no MemoryError, no task restart, no failed HTTP request, and every part
working (frames, Venus readings, MQTT publishes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.build import FIRMWARE, compile_mpy, firmware_sources, stage_libs  # noqa: E402
from tools.mosquitto import Mosquitto, free_port  # noqa: E402
from tools.sim import v  # noqa: E402  (firmware/vedirect.py on CPython)
from tools.sim.__main__ import build_world, make_parser  # noqa: E402
from tools.sim.serve import Background  # noqa: E402

BUILD = ROOT / "build" / "heap"
FLAT_MARGIN_B = 1024  # the last third's mean may exceed the first third's by this much
STEP = 8 * 1024  # --find-min resolution
LOST_FRAMES_TOLERANCE = 2  # a frame cut by the final silence, one cut by the first connect
STATUS_EVERY_S = 1.0
HISTORY_EVERY_S = 10.0
RELOAD_EVERY_S = 60.0
HTTP_TIMEOUT_S = 5.0
SETTLE_TIMEOUT_S = 60.0


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise ValueError("a heap size like 192K, 1M or 200000: %r" % text)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def size_arg(n: int) -> str:
    return "%dK" % (n // 1024) if n % 1024 == 0 else str(n)


# -- the build, as on the board -----------------------------------------------------------------


def build(dest: Path = BUILD) -> tuple[Path, Path]:
    """firmware/*.py -> dest/fw/*.mpy (main.py stays source: the entry point), the page in
    dest/fw/static/, microdot and umqtt.simple as .mpy in dest/lib. Returns (fw, lib)."""
    fw = dest / "fw"
    if fw.exists():
        shutil.rmtree(fw)
    fw.mkdir(parents=True)
    for source in firmware_sources():
        if source.name == "main.py":
            shutil.copy(source, fw / "main.py")
        else:
            compile_mpy(source, fw / (source.stem + ".mpy"))
    shutil.copytree(FIRMWARE / "static", fw / "static")
    (fw / "main_trace.py").write_text(TRACE_MAIN)
    lib = stage_libs(dest / "lib", compiled=True)
    return fw, lib


# --trace: the same firmware, entered through this wrapper, which prints the traceback of an
# exception that ends a supervised task (app.py logs only its type and message) and re-raises
# it, so the supervisor counts and restarts as always; and samples the live heap (gc.collect()
# every 20 ms, which changes the timing) during the first 30 s to find the start-up peak.
TRACE_MAIN = """import sys
import app

_supervise = app.App.supervise


def supervise(self, name, make):
    async def traced():
        try:
            return await make()
        except Exception as err:
            print("traceback of task", name)
            sys.print_exception(err)
            raise

    return _supervise(self, name, traced)


app.App.supervise = supervise
_run = app.App.run


async def sample_startup(seconds=30):
    # the live heap (after gc.collect()) every 20 ms during start-up, and its peak
    import asyncio
    import gc
    from ticks import ticks_diff, ticks_ms

    t0 = ticks_ms()
    peak = at = 0
    while ticks_diff(ticks_ms(), t0) < seconds * 1000:
        gc.collect()
        used = gc.mem_alloc()
        if used > peak:
            peak, at = used, ticks_diff(ticks_ms(), t0)
        await asyncio.sleep_ms(20)
    print("trace: live heap peak in the first %d s: %d B at %d ms" % (seconds, peak, at))


async def run(self):
    import asyncio

    asyncio.create_task(sample_startup())
    await _run(self)


app.App.run = run
import main  # noqa: E402,F401  (runs the firmware with sys.argv)
"""


def firmware_revision() -> dict[str, Any]:
    """Which firmware was measured: the commit and the firmware files changed since."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
            return out.stdout.rstrip("\n")
        except OSError:
            return ""

    changed = git("status", "--porcelain", "--", "firmware")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "firmware_changes": [line[3:] for line in changed.splitlines()],
    }


# -- the browser --------------------------------------------------------------------------------


class Browser:
    """The status page open in a browser: two connections' worth of polling (status on one,
    the chart and reloads on the other, so they overlap as in a browser). Every request is
    counted per path; a failure is an exception, a status other than 200, or a body that is
    not complete (JSON that does not parse, a page that does not end in </html>)."""

    def __init__(self, port: int, page_size: int | None = None) -> None:
        self.port = port
        self.page_size = page_size
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.failures: list[dict[str, Any]] = []
        self.slowest_ms: dict[str, float] = {}
        self.statuses: list[tuple[float, dict[str, Any]]] = []  # (monotonic, /api/status)
        self.histories: list[tuple[float, dict[str, Any]]] = []  # (monotonic, /api/history)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = time.monotonic()

    def get(self, path: str) -> Any:
        t = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise ValueError("HTTP %d: %r" % (resp.status, body[:200]))
            if path.startswith("/api/"):
                result: Any = json.loads(body)
            else:
                if not body.rstrip().endswith(b"</html>"):
                    raise ValueError("page cut short at %d bytes" % len(body))
                if self.page_size is not None and len(body) != self.page_size:
                    raise ValueError("page of %d bytes, not %d" % (len(body), self.page_size))
                result = body
        except Exception as err:  # noqa: BLE001 (every kind of failure is a finding)
            with self.lock:
                self.failed[path] = self.failed.get(path, 0) + 1
                self.failures.append(
                    {
                        "t_s": round(t - self.t0, 1),
                        "path": path,
                        "error": "%s: %s" % (type(err).__name__, err),
                    }
                )
            return None
        finally:
            conn.close()
        ms = (time.monotonic() - t) * 1000
        with self.lock:
            self.ok[path] = self.ok.get(path, 0) + 1
            self.slowest_ms[path] = max(self.slowest_ms.get(path, 0.0), ms)
            if path == "/api/status":
                self.statuses.append((time.monotonic(), result))
            elif path == "/api/history":
                self.histories.append((time.monotonic(), result))
        return result

    def load(self, settings: bool = False) -> None:
        """What opening (or reloading) the page fetches."""
        self.get("/")
        self.get("/api/history")
        if settings:
            self.get("/api/schema")
            self.get("/api/config")

    def _every(self, period: float, fn: Callable[[], None]) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            fn()
            next_t = max(next_t + period, time.monotonic())  # like setInterval: no catching up
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def _chart(self) -> None:
        last_reload = time.monotonic()
        next_t = time.monotonic() + HISTORY_EVERY_S
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t = max(next_t + HISTORY_EVERY_S, time.monotonic())
            if time.monotonic() - last_reload >= RELOAD_EVERY_S - 0.5:
                last_reload = time.monotonic()
                self.load(settings=True)
            else:
                self.get("/api/history")

    def start(self) -> "Browser":
        self.load()
        for target in (
            lambda: self._every(STATUS_EVERY_S, lambda: self.get("/api/status")),
            self._chart,
        ):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(HTTP_TIMEOUT_S + 2)

    def last_status(self) -> dict[str, Any] | None:
        with self.lock:
            return self.statuses[-1][1] if self.statuses else None

    def totals(self) -> dict[str, Any]:
        with self.lock:
            paths = sorted(set(self.ok) | set(self.failed))
            return {
                "ok": sum(self.ok.values()),
                "failed": sum(self.failed.values()),
                "per_path": {
                    p: {
                        "ok": self.ok.get(p, 0),
                        "failed": self.failed.get(p, 0),
                        "slowest_ms": round(self.slowest_ms.get(p, 0.0)),
                    }
                    for p in paths
                },
                "failures": list(self.failures),
            }


# -- the charger's frames, counted where they leave the simulator --------------------------------


class FrameTap:
    """Parses (with firmware/vedirect.py on CPython) exactly the bytes the simulator hands to
    the firmware's socket; at the end the line is silenced and the two counts compared."""

    def __init__(self, sim: Background) -> None:
        self.sim = sim
        self.parser = v.Parser()
        self.bytes = 0

        def install() -> None:
            inst = sim.installation
            assert inst is not None
            original = inst._to_host

            def to_host(data: bytes) -> None:
                if inst._writers:  # a firmware is connected: these bytes reach it
                    self.bytes += len(data)
                    for _ in self.parser.feed(data, int(time.monotonic() * 1000)):
                        pass
                original(data)

            inst._to_host = to_host  # type: ignore[method-assign]

        sim.call(install)

    def counts(self) -> dict[str, int]:
        return self.sim.call(lambda: dict(self.parser.counters(), bytes=self.bytes))

    def silence(self) -> None:
        def mute() -> None:
            self.sim.world.charger.faults.silent_until = self.sim.now() + 1e9

        self.sim.call(mute)


# -- one run ------------------------------------------------------------------------------------


def micropython_path() -> str:
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if beside.exists() else (shutil.which("micropython") or "micropython")


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
) -> dict[str, Any]:
    """The firmware at -X heapsize=`heap` for `seconds` after start-up with the page polled.
    `broker`: a running mosquitto (else one is started in `workdir`). `stop_on_failure`: end
    the run at the first MemoryError, task restart, failed request or exit (for --find-min)."""
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
                                 stop_on_failure, mp)
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
    micropython: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {"exit_code": None, "stopped_early": None}
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
        if (
            st
            and st["charger"]["max_a"] is not None
            and st["grid"]["power_w"] is not None
            and st["mqtt"]
            and st["mqtt"].get("connected")
            and st["mqtt"].get("published", 0) > 0
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
    return _finish(out, browser, tap, start, t0, micropython)


def _finish(
    out: dict[str, Any],
    browser: Browser,
    tap: FrameTap,
    start: dict[str, Any] | None,
    t0: float | None,
    micropython: str | None = None,
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
    with browser.lock:
        histories = list(browser.histories)
    out["flatness"] = flatness(timed, histories, micropython)
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


# -- the smallest heap ----------------------------------------------------------------------------


def find_min(
    seconds: float = 60,
    speed: float = 10,
    low: int = 64 * 1024,
    high: int = 192 * 1024,
    ceiling: int = 1024 * 1024,
    progress: Callable[[str], None] | None = None,
    workdir: Path | None = None,
    fw_lib: tuple[Path, Path] | None = None,
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
        )
        why = r.get("stopped_early") or ("ok" if r["ok"] else _why(r))
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


def _why(r: dict[str, Any]) -> str:
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


# -- what the heap holds --------------------------------------------------------------------------

BUILTIN_MODULES = ("gc", "sys", "os", "time", "json", "select", "socket", "struct", "binascii",
                   "hashlib", "errno", "asyncio")
NOT_IMPORTED = {"main", "bootstrap"}  # entry points: they run the firmware when imported
IMPORT_RE = re.compile(r"^\s*(?:import\s+(\w+)|from\s+(\w+)\s+import\s+(\w+))", re.M)


def import_order(fw: Path) -> list[str]:
    """The firmware's modules (and microdot, umqtt.simple) dependencies first, so that each
    import's heap delta is that module's own cost."""
    names = {p.stem for p in FIRMWARE.glob("*.py")} - NOT_IMPORTED
    deps: dict[str, set[str]] = {}
    for name in names:
        found = set()
        for m in IMPORT_RE.finditer((FIRMWARE / (name + ".py")).read_text()):
            mod = m.group(1) or m.group(2)
            if mod == "umqtt":
                found.add("umqtt.simple")
            elif mod in names or mod == "microdot":
                found.add(mod)
        deps[name] = found - {name}
    deps["microdot"] = set()
    deps["umqtt.simple"] = set()
    order: list[str] = []

    def visit(n: str, path: tuple[str, ...] = ()) -> None:
        if n in order or n in path:
            return
        for d in sorted(deps.get(n, ())):
            visit(d, path + (n,))
        order.append(n)

    for n in sorted(deps):
        visit(n)
    return order


BREAKDOWN_SCRIPT = """
import gc, sys
sys.path.insert(0, %(fw)r)
gc.collect()
print("base", gc.mem_alloc())
def step(name, fn):
    gc.collect()
    a = gc.mem_alloc()
    try:
        r = fn()
        err = ""
    except Exception as e:
        r = None
        err = "%%s: %%s" %% (type(e).__name__, e)
    gc.collect()
    print("step", name, gc.mem_alloc() - a, err)
    return r
if %(per_module)r:  # each module on its own, dependencies first
    for name in %(builtins)r + %(order)r:
        step("import " + name, lambda: __import__(name))
import board, config, app
cfg = step("config.load", lambda: config.load(%(config)r))
hw = step("board.make", lambda: board.make(cfg, %(uart)r))
a = step("App(...)", lambda: app.App(cfg, hw, %(state)r, "127.0.0.1", 8080, %(config)r))
step("import web", lambda: __import__("web"))  # what web_task loads first
gc.collect()
print("total", gc.mem_alloc())
print("modules", " ".join(sorted(sys.modules)))
"""


def _breakdown_pass(fw: Path, lib: Path, workdir: Path, micropython: str | None,
                    per_module: bool) -> dict[str, Any]:
    script = workdir / ("breakdown_%s.py" % ("modules" if per_module else "firmware"))
    script.write_text(BREAKDOWN_SCRIPT % {
        "fw": str(fw), "builtins": list(BUILTIN_MODULES), "order": import_order(fw),
        "config": str(workdir / "config.json"), "uart": "socket://127.0.0.1:9",
        "state": str(workdir / "state.json"), "per_module": per_module,
    })
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % lib)
    out = subprocess.run([micropython or micropython_path(), "-X", "heapsize=4M", str(script)],
                         capture_output=True, text=True, env=env, cwd=workdir, timeout=60)
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"steps": steps, "modules": [], "output": out.stdout[-2000:] +
                              out.stderr[-2000:]}
    for line in out.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("base", "total"):
            result[word] = int(rest)
        elif word == "modules":
            result["modules"] = rest.split()
        elif word == "step":
            m = re.match(r"(.+?) (-?\d+) ?(.*)$", rest)  # "import x 1234 [error]"
            if m:
                steps.append({"what": m.group(1), "bytes": int(m.group(2)),
                              "error": m.group(3) or None})
    return result


def breakdown(fw: Path, lib: Path, config: dict[str, Any], micropython: str | None = None,
              workdir: Path | None = None) -> dict[str, Any]:
    """What the heap holds before the tasks run, on the Unix port with a large heap: each
    module's import on its own (dependencies first), then config.load, board.make, App(...)
    and `import web`. A second process does what the firmware does (import app, App(...),
    import web): its total is the figure, its sys.modules says which modules this
    configuration loads (the others are listed, not counted)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench_heap_bd_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))
    real = _breakdown_pass(fw, lib, workdir, micropython, per_module=False)
    each = _breakdown_pass(fw, lib, workdir, micropython, per_module=True)
    loaded = set(real["modules"])
    steps = []
    for st in each["steps"]:
        name = st["what"][len("import "):] if st["what"].startswith("import ") else None
        st["loaded"] = name is None or name in loaded or name in BUILTIN_MODULES
        steps.append(st)
    return {
        "base": real.get("base"),
        "total": real.get("total"),
        "steps": steps,
        "not_loaded": [s["what"][7:] for s in steps if not s["loaded"]],
        "error": None if real.get("total") else real["output"],
    }


# -- output ---------------------------------------------------------------------------------------


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
        ("result", "RUNS" if r["ok"] else "FAILS: %s" % (r.get("stopped_early") or _why(r))),
        ("heap in use after start-up", kb(r.get("heap_after_start"))),
        ("heap in use at the end", kb(r.get("heap_at_end"))),
        ("heap in use, samples min / max", "%s / %s" % (kb(r.get("heap_used_min")),
                                                        kb(r.get("heap_used_max")))),
        ("heap.peak_used (max after gc.collect)", kb(r.get("heap_peak_used"))),
        ("free_heap, lowest seen (uncollected garbage counts)", kb(r.get("free_heap_min_seen"))),
        ("flat: last third - first third <= margin",
         "%s: %+d B over %d samples (%s -> %s B); margin %s B = %d + the chart history's "
         "growth %s B (points %s)"
         % (fl.get("flat"), fl.get("trend_b") or 0, fl.get("samples", 0),
            fl.get("first_third_mean_b"), fl.get("last_third_mean_b"), fl.get("margin_b"),
            FLAT_MARGIN_B, fl.get("history_growth_b"), fl.get("history_points"))),
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


def breakdown_table(b: dict[str, Any]) -> str:
    if not b.get("total"):
        return "heap breakdown failed: %s" % b.get("error")
    lines = ["what the heap holds before the tasks start (Unix port, after gc.collect()):"]
    lines.append("  %-30s %7d B" % ("the interpreter at start", b.get("base", 0)))
    for st in b["steps"]:
        if st["loaded"] and (st["bytes"] or st["error"]):
            lines.append("  %-30s %7d B%s" % (st["what"], st["bytes"],
                                              "  (" + st["error"] + ")" if st["error"] else ""))
    lines.append("  %-30s %7d B" % ("total before the tasks run", b["total"]))
    if b["not_loaded"]:
        lines.append(
            "  not imported before the tasks run (later, or not with this config): "
            + ", ".join("%s %d B" % (s["what"][7:], s["bytes"]) for s in b["steps"]
                        if not s["loaded"])
        )
    return "\n".join(lines)


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
    out["breakdown"] = breakdown(*fw_lib, config, workdir=args.workdir / "breakdown")
    if not quiet:
        print(breakdown_table(out["breakdown"]))
    if not args.skip_run:
        say("heapsize %s for %g min" % (args.heap, args.minutes))
        r = run(
            args.heap,
            args.minutes * 60,
            args.speed,
            workdir=args.workdir / "run",
            fw_lib=fw_lib,
            progress=say,
            trace=args.trace,
        )
        r["revision"] = out["revision"]
        out["run"] = r
        if not quiet:
            print(table(r))
    if args.find_min:
        say("bisecting the smallest heapsize (%g s per trial)" % args.trial_s)
        m = find_min(
            args.trial_s,
            args.speed,
            high=parse_size(args.heap),
            progress=say,
            workdir=args.workdir / "find-min",
            fw_lib=fw_lib,
        )
        out["find_min"] = m
        if not quiet:
            print(
                "smallest heapsize that runs %g s with everything active: %s (largest failing:"
                " %s)" % (args.trial_s, m.get("min_heapsize"), m.get("largest_failing"))
            )
            for tr in m["trials"]:
                print(
                    "  %-6s %-5s %s; heap after start-up %s, peak_used %s"
                    % (
                        tr["heapsize"],
                        "runs" if tr["ok"] else "fails",
                        tr["why"],
                        tr["heap_after_start"],
                        tr["heap_peak_used"],
                    )
                )
        if args.verify_min and m.get("min_heapsize"):
            say("heapsize %s (the smallest found) for %g min" % (m["min_heapsize"], args.minutes))
            v = run(
                m["min_heapsize"],
                args.minutes * 60,
                args.speed,
                workdir=args.workdir / "run-min",
                fw_lib=fw_lib,
                progress=say,
                trace=args.trace,
            )
            v["revision"] = out["revision"]
            out["run_at_min"] = v
            if not quiet:
                print(table(v))
    out["wall_s"] = round(time.monotonic() - t, 1)
    if quiet:
        print(json.dumps(out))
    ok = out.get("run", {"ok": True})["ok"] and (
        not args.find_min or out["find_min"].get("min_heapsize")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
