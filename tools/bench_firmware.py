#!/usr/bin/env python3
"""Firmware benchmark on the MicroPython Unix port, compiled as it goes on the board (.mpy):
size of the firmware, heap in use after start-up and after 10 minutes of charger traffic
(the simulator at 10x speed for 60 s), and the CPU share of the link and of the whole firmware.

    .venv/bin/python tools/bench_firmware.py [--seconds 60] [--speed 10] [--heapsize 256K]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.build import compile_mpy, firmware_sources, stage_libs  # noqa: E402
from tools.sim.__main__ import build_world, make_parser  # noqa: E402
from tools.sim.serve import Background  # noqa: E402

BENCH = ROOT / "build" / "bench"
TICK_S = os.sysconf("SC_CLK_TCK")


def build() -> tuple[Path, dict[str, int]]:
    """firmware/*.py -> build/bench/fw/*.mpy (main.py stays source: it is the entry point)."""
    fw = BENCH / "fw"
    if fw.exists():
        shutil.rmtree(fw)
    fw.mkdir(parents=True)
    sizes = {}
    for source in firmware_sources():
        if source.name == "main.py":
            shutil.copy(source, fw / "main.py")
            sizes["main.py"] = source.stat().st_size
            continue
        target = fw / (source.stem + ".mpy")
        compile_mpy(source, target)
        sizes[target.name] = target.stat().st_size
    lib = stage_libs(BENCH / "lib", compiled=True)
    for mpy in sorted((lib / "microdot").glob("*.mpy")):
        sizes["lib/microdot/" + mpy.name] = mpy.stat().st_size
    return fw, sizes


def cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime + stime


def status(port: int) -> dict:
    with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % port, timeout=5) as resp:
        return json.load(resp)


def run(seconds: float, speed: float, heapsize: str) -> dict:
    fw, _ = build()
    sim_args = make_parser().parse_args(["--scenario", "steady", "--speed", str(speed)])
    micropython = str(Path(sys.executable).parent / "micropython")
    config = BENCH / "config.json"
    config.write_text(json.dumps({"control": {"mode": "manual", "manual_current_a": 8.0}}))
    port = 18000 + os.getpid() % 1000
    with Background(build_world(sim_args), speed=speed) as sim:
        env = dict(os.environ, MICROPYPATH="%s:.frozen" % (BENCH / "lib"))
        args = [micropython, "-X", "heapsize=" + heapsize, str(fw / "main.py"), "--config"]
        args += [str(config), "--uart", sim.endpoints["charger"], "--http-host", "127.0.0.1"]
        args += ["--http-port", str(port), "--state", str(BENCH / "state.json")]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(100):
                try:
                    status(port)
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(11)  # probed, settled, and one housekeeping gc.collect() later
            start = status(port)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            samples = []
            while time.monotonic() - t0 < seconds:
                time.sleep(min(10, seconds))
                samples.append(status(port)["heap"]["used"])
            end = status(port)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        finally:
            proc.terminate()
            proc.wait(5)
    wall = t1 - t0
    link_ms = end["counters"]["link_busy_ms"] - start["counters"]["link_busy_ms"]
    frames = end["counters"]["frames_ok"] - start["counters"]["frames_ok"]
    return {
        "heap_after_start": start["heap"]["used"],
        "heap_after_run": end["heap"]["used"],
        "heap_peak": end["heap"]["peak_used"],
        "heap_samples": samples,
        "traffic_minutes": wall * speed / 60,
        "frames": frames,
        "frames_bad": end["counters"]["frames_bad"],
        "link_cpu_percent": 100 * link_ms / 1000 / wall,
        "process_cpu_percent": 100 * (cpu1 - cpu0) / wall,
        "wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--speed", type=float, default=10)
    ap.add_argument("--heapsize", default="256K", help="the Unix port's GC heap (-X heapsize)")
    args = ap.parse_args()
    _, sizes = build()
    fw_total = sum(v for k, v in sizes.items() if k.endswith(".mpy") and "/" not in k)
    lib_total = sum(v for k, v in sizes.items() if k.startswith("lib/"))
    print(
        "firmware as .mpy: %d bytes (%s)"
        % (fw_total, ", ".join("%s %d" % (k, v) for k, v in sorted(sizes.items()) if "/" not in k))
    )
    print("microdot as .mpy: %d bytes; main.py (source) %d bytes" % (lib_total, sizes["main.py"]))
    r = run(args.seconds, args.speed, args.heapsize)
    print(
        "run: %.0f s at %gx = %.1f min of charger traffic, %d frames (%d bad), heap %s"
        % (
            r["wall_s"],
            args.speed,
            r["traffic_minutes"],
            r["frames"],
            r["frames_bad"],
            args.heapsize,
        )
    )
    print(
        "heap in use after start-up %d B, after the run %d B (growth %+d B), peak %d B"
        % (
            r["heap_after_start"],
            r["heap_after_run"],
            r["heap_after_run"] - r["heap_after_start"],
            r["heap_peak"],
        )
    )
    print("heap in use every 10 s: %s" % " ".join(str(x) for x in r["heap_samples"]))
    print(
        "CPU: link parsing %.2f %% of one core, whole firmware process %.2f %% (x86_64 host)"
        % (r["link_cpu_percent"], r["process_cpu_percent"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
