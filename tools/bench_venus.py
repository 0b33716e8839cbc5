#!/usr/bin/env python3
"""The Venus OS service measured as it runs on a GX: venus_os/service.py against the simulated
charger (real time, a text block a second plus the HEX traffic) and the simulated Venus, on a
private dbus-daemon. Two services side by side in one run, one publishing on D-Bus and one
with --no-dbus, so the D-Bus side's cost and the link's frame rate with it on are read against
the same machine at the same time:

  - CPU (utime + stime from /proc, % of one core) and resident memory of each service,
  - the charger link's frames per second (its /api/status counters), and how fast the loop
    answers /api/status meanwhile (a stalled loop would still count its frames, late),
  - D-Bus: ItemsChanged signals per second and paths per signal, as `dbus-monitor` sees them
    (what the GUI and systemcalc receive).

    .venv/bin/python tools/bench_venus.py [--seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.dbus_daemon import DbusDaemon  # noqa: E402
from tools.ports import free_port  # noqa: E402
from tools.sim.charger import ChargerOptions, VirtualIP22  # noqa: E402
from tools.sim.physics import Battery  # noqa: E402
from tools.sim.serve import Background  # noqa: E402
from tools.sim.venus import VenusRegisters  # noqa: E402
from tools.sim.world import SCENARIOS, World  # noqa: E402

TICK_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime, stime


def rss_kb(pid: int) -> int:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen("http://127.0.0.1:%d/api/status" % port, timeout=5) as r:
        return json.load(r)


class Service:
    """One service.py against its own simulated installation."""

    def __init__(self, workdir: Path, dbus: bool, env: dict[str, str]) -> None:
        world = World(VirtualIP22(ChargerOptions(), Battery(soc=0.3)), VenusRegisters(),
                      SCENARIOS["kettle"])
        self.sim = Background(world).__enter__()
        host, port = self.sim.endpoints["venus"].rsplit(":", 1)
        workdir.mkdir(parents=True)
        config = workdir / "config.json"
        config.write_text(json.dumps({
            "control": {"mode": "auto"}, "venus": {"host": host, "port": int(port)}}))
        self.port = free_port()
        args = [sys.executable, str(ROOT / "venus_os" / "service.py"), "--config", str(config),
                "--uart", self.sim.endpoints["charger"], "--http-host", "127.0.0.1",
                "--http-port", str(self.port)] + ([] if dbus else ["--no-dbus"])
        self.log = open(workdir / "service.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **env))
        self.dbus = dbus

    def ready(self) -> bool:
        try:
            st = status(self.port)
        except OSError:
            return False
        return st["charger"]["connected"] and st["grid"]["power_w"] is not None

    def sample(self) -> tuple[float, float, int]:
        """(monotonic time, CPU s, frames ok)."""
        frames = status(self.port)["counters"]["frames_ok"]
        return time.monotonic(), cpu_s(self.proc.pid), frames

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.sim.__exit__(None, None, None)


class Monitor:
    """dbus-monitor on the bus, counting ItemsChanged and the paths in each."""

    def __init__(self, env: dict[str, str]) -> None:
        exe = shutil.which("dbus-monitor")
        if exe is None:
            raise SystemExit("dbus-monitor is not installed (Debian: dbus-bin)")
        self.proc = subprocess.Popen(
            [exe, "--system", "type='signal',member='ItemsChanged'"],
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, **env))
        self.signals = 0
        self.paths = 0
        self.counting = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        in_signal = False
        for line in self.proc.stdout:
            if line.startswith("signal "):
                in_signal = "member=ItemsChanged" in line
                if in_signal and self.counting:
                    self.signals += 1
            elif in_signal and self.counting and line.strip().startswith('string "/'):
                self.paths += 1

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def run(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-venus-") as tmp, \
            DbusDaemon(Path(tmp) / "bus") as bus:
        env = {"DBUS_SYSTEM_BUS_ADDRESS": bus.address}
        services = [Service(Path(tmp) / "dbus", True, env),
                    Service(Path(tmp) / "no-dbus", False, env)]
        monitor = Monitor(env)
        try:
            deadline = time.monotonic() + 30
            while not all(s.ready() for s in services):
                if time.monotonic() > deadline:
                    raise SystemExit("the services did not come up: see service.log in " + tmp)
                time.sleep(0.3)
            time.sleep(5)  # past start-up: the probe, the first decisions
            before = [s.sample() for s in services]
            monitor.counting = True
            # the loop's responsiveness: /api/status answered by the same loop that parses
            # the charger (frames are counted even when parsed late; an answer is not early)
            latency: list[list[float]] = [[] for _ in services]
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for s, times in zip(services, latency):
                    t0 = time.monotonic()
                    status(s.port)
                    times.append(1000 * (time.monotonic() - t0))
                time.sleep(0.5)
            monitor.counting = False
            after = [s.sample() for s in services]
            rows = []
            for s, times, (t0, c0, f0), (t1, c1, f1) in zip(services, latency, before, after):
                times.sort()
                rows.append({
                    "status_ms_median": round(times[len(times) // 2], 1),
                    "status_ms_max": round(times[-1], 1),
                    "dbus": s.dbus,
                    "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 2),
                    "rss_kb": rss_kb(s.proc.pid),
                    "frames_per_s": round((f1 - f0) / (t1 - t0), 2),
                })
            span = after[0][0] - before[0][0]
            return {
                "seconds": round(span, 1),
                "python": "%d.%d.%d" % sys.version_info[:3],
                "services": rows,
                "items_changed_per_s": round(monitor.signals / span, 2),
                "paths_per_signal": round(monitor.paths / max(1, monitor.signals), 1),
            }
        finally:
            monitor.stop()
            for s in services:
                s.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args.seconds)
    if args.json:
        print(json.dumps(r))
        return 0
    print("Venus OS service (Python %s), %.0f s, the simulated charger in real time"
          % (r["python"], r["seconds"]))
    print("| | CPU (% of a core) | RSS | link frames/s | /api/status median / max |")
    print("|---|---|---|---|---|")
    for row in r["services"]:
        print("| %s | %.2f | %d MB | %.2f | %.1f / %.1f ms |" % (
            "D-Bus on" if row["dbus"] else "D-Bus off (--no-dbus)", row["cpu_percent"],
            row["rss_kb"] // 1024, row["frames_per_s"], row["status_ms_median"],
            row["status_ms_max"]))
    print("D-Bus: %.2f ItemsChanged/s, %.1f paths each (dbus-monitor)"
          % (r["items_changed_per_s"], r["paths_per_signal"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
