"""MQTT figures on the MicroPython Unix port against a real mosquitto: publishes per second
through firmware/mqttlink.py, the heap before and after 10 000 publishes of a state-sized
message, and the size of the MQTT modules as .mpy. `--json` prints one object.

    python -m tools.bench_mqtt [--count 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.build import FIRMWARE, compile_mpy, stage_libs  # noqa: E402
from tools.mosquitto import Mosquitto  # noqa: E402

MODULES = ("mqtt.py", "mqttlink.py", "discovery.py", "venusmqtt.py")

# Runs on the Unix port: the firmware's own Session, one state-sized JSON per publish.
SCRIPT = """
import gc, json, sys, time
import mqttlink
from ticks import ticks_ms, ticks_diff
count = int(sys.argv[3])
s = mqttlink.Session("bench", "127.0.0.1", int(sys.argv[2]), "bench")
s.connect()
state = {"battery_v": 27.61, "battery_a": 11.7, "battery_w": 323.0, "grid_w": -3,
         "charger_state": "bulk", "reason": "holding 11.7 A: 2 W available", "link": "ON",
         "frames_ok": 0, "energy_kwh": 12.345, "uptime_s": 0}
def one(i):
    state["frames_ok"] = i
    state["uptime_s"] = i // 10
    return s.publish("ip22/bench/state", json.dumps(state), True)
for i in range(200):  # warm up: buffers, interned strings
    one(i)
gc.collect()
before = gc.mem_alloc()
start = ticks_ms()
for i in range(count):
    if not one(i):
        raise SystemExit("publish failed: %s" % s.last_error)
    if i % 100 == 0:
        s.poll()
took = ticks_diff(ticks_ms(), start)
gc.collect()
after = gc.mem_alloc()
print(json.dumps({"publishes": count, "seconds": took / 1000,
                  "heap_before": before, "heap_after": after,
                  "publish_errors": s.counters["publish_errors"]}))
"""


def micropython() -> str:
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if beside.exists() else "micropython"


def mpy_sizes(work: Path) -> dict[str, int]:
    sizes = {}
    for name in MODULES:
        target = work / name.replace(".py", ".mpy")
        compile_mpy(FIRMWARE / name, target)
        sizes[target.name] = target.stat().st_size
    return sizes


def run(count: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lib = stage_libs(work / "lib")
        script = work / "bench.py"
        script.write_text(SCRIPT)
        env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (FIRMWARE, lib))
        with Mosquitto(work / "broker") as broker:
            out = subprocess.run(
                [micropython(), str(script), "127.0.0.1", str(broker.port), str(count)],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
        if out.returncode:
            raise SystemExit("bench failed:\n" + out.stdout + out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["per_second"] = round(result["publishes"] / result["seconds"])
        result["heap_growth"] = result["heap_after"] - result["heap_before"]
        result["mpy_bytes"] = mpy_sizes(work)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = run(args.count)
    if args.json:
        print(json.dumps(r))
        return
    print("MQTT on the MicroPython Unix port, firmware/mqttlink.py -> mosquitto")
    print(
        "  %d publishes of a state-sized JSON: %.2f s, %d/s"
        % (r["publishes"], r["seconds"], r["per_second"])
    )
    print(
        "  heap in use before %d B, after %d B (growth %+d B)"
        % (r["heap_before"], r["heap_after"], r["heap_growth"])
    )
    for name, size in r["mpy_bytes"].items():  # type: ignore[union-attr]
        print("  %-14s %6d B" % (name, size))


if __name__ == "__main__":
    main()
