#!/usr/bin/env python3
"""The web face's limits measured on the real firmware (Unix port, firmware/main.py) against
the simulated charger: idle connections held beyond the cap, the heap at the cap, how long an
idle connection lives, the charger link's frame rate during the flood, and how many wrong
passwords can be tried in a minute from parallel connections.

    .venv/bin/python tools/bench_web.py [--idle 64] [--guess-s 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))

import webguard  # noqa: E402

from tools.bench_live import LIB, Case, Firmware, constant, make_world  # noqa: E402
from tools.build import stage_libs  # noqa: E402
from tools.sim.serve import Background  # noqa: E402

PASSWORD = "bench-web"


def status(fw: Firmware) -> dict[str, Any]:
    return fw.status(timeout=5)


def flood(fw: Firmware, count: int) -> dict[str, Any]:
    """`count` connections that send half a head and then nothing."""
    before = status(fw)
    t0 = time.monotonic()
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
        s.sendall(b"POST /api/mode HTTP/1.1\r\nContent-Length: 100\r\n")
        socks.append((s, time.monotonic()))
        time.sleep(0.01)
    during = status(fw)
    answered = time.monotonic()
    status(fw)
    status_s = time.monotonic() - answered
    lived = []
    for s, opened in socks:
        s.settimeout(30)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        lived.append(time.monotonic() - opened)
        s.close()
    after = status(fw)
    seconds = after["uptime_s"] - before["uptime_s"]
    frames = after["counters"]["frames_ok"] - before["counters"]["frames_ok"]
    base = status_rate(fw)
    return {
        "idle_connections_sent": count,
        "held_at_most": after["web"]["connections_max"],
        "dropped": after["web"]["dropped"],
        "free_heap_before_b": before["free_heap"],
        "free_heap_at_the_cap_b": during["free_heap"],  # uncollected garbage counts too
        "heap_used_after_b": after["heap"]["used"],  # after gc.collect (every 10 s)
        "status_answer_during_flood_s": round(status_s, 3),
        "idle_connection_lived_s": [round(min(lived), 1), round(max(lived), 1)],
        "frames_per_s_during_flood": round(frames / max(seconds, 1), 1),
        "frames_per_s_quiet": base,
        "flood_s": round(time.monotonic() - t0, 1),
    }


def status_rate(fw: Firmware, seconds: float = 5) -> float:
    a = status(fw)
    time.sleep(seconds)
    b = status(fw)
    return round((b["counters"]["frames_ok"] - a["counters"]["frames_ok"])
                 / max(b["uptime_s"] - a["uptime_s"], 1), 1)


def guesses(fw: Firmware, seconds: float, parallel: int) -> dict[str, Any]:
    """Wrong passwords from `parallel` connections at once, for `seconds`."""
    done: list[float] = []
    codes: dict[int, int] = {}
    stop = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            req = urllib.request.Request(
                "http://127.0.0.1:%d/api/mode" % fw.port, data=b'{"mode":"off"}',
                method="POST", headers={"Authorization": "Bearer wrong"})
            try:
                urllib.request.urlopen(req, timeout=60).read()
            except urllib.error.HTTPError as err:
                codes[err.code] = codes.get(err.code, 0) + 1
                if err.code == 401:
                    done.append(time.monotonic())
            except OSError:
                time.sleep(0.1)

    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    late = [t for t in done if t - t0 > 30]  # the second half: past the free ones
    return {
        "parallel": parallel,
        "wrong_passwords_answered": len(done),
        "answers": codes,
        "per_minute": round(len(done) * 60 / elapsed, 1),
        "per_minute_after_30_s": round(len(late) * 60 / max(elapsed - 30, 1), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=8 * webguard.MAX_CONNECTIONS)
    ap.add_argument("--guess-s", type=float, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    case = Case("web", constant(650.0, 350.0), 0.0)
    world = make_world(case, 0.0)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_web_") as tmp, Background(world) as sim:
        stage_libs(LIB)
        fw = Firmware(Path(tmp), sim.endpoints["charger"], {},
                      extra=("--admin-password", PASSWORD))
        fw.spawn()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if status(fw)["charger"]["min_a"] is not None:
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            out["flood"] = flood(fw, args.idle)
            out["guessing"] = guesses(fw, args.guess_s, webguard.MAX_CONNECTIONS - 1)
            out["limits"] = {
                "max_connections": webguard.MAX_CONNECTIONS,
                "head_timeout_s": webguard.HEAD_TIMEOUT_S,
                "max_line_b": webguard.MAX_LINE,
                "max_headers": webguard.MAX_HEADERS,
                "auth_free_failures": webguard.AUTH_FREE_FAILURES,
                "auth_delay_max_s": webguard.AUTH_DELAY_MAX_S,
            }
        finally:
            fw.stop()
    if args.json:
        print(json.dumps(out))
    else:
        for section, values in out.items():
            print(section)
            for key, value in values.items():
                print("  %-32s %s" % (key, value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
