#!/usr/bin/env python3
"""The charger's D-Bus service (venus_os/dbus_charger.py) measured on a private dbus-daemon:
N views published with the voltage and current changing each time (as every text block of
the charger changes them), how many publishes a second it sustains with every signal written
to the bus, the CPU time per publish (publish() itself, and in all: the socket writes in the
loop too), and whether a listener in another process (as the GUI or systemcalc) got every
ItemsChanged.

    .venv/bin/python tools/bench_dbus.py [--count 5000] [--no-per-path] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(ROOT / "venus_os"))
sys.path.insert(0, str(ROOT))

from tools.dbus_daemon import DbusDaemon  # noqa: E402

NAME = "com.victronenergy.charger.bench"
# a consumer in its own process (as the GUI or systemcalc): counts the ItemsChanged it gets;
# when its stdin closes, waits until nothing came for a second and prints the count
LISTENER = """
import asyncio, sys, threading
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus

async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    got = [0]
    def on(msg):
        if msg.message_type == MessageType.SIGNAL and msg.member == "ItemsChanged":
            got[0] += 1
    bus.add_message_handler(on)
    rule = "type='signal',sender='%s',member='ItemsChanged'" % sys.argv[1]
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch",
                           signature="s", body=[rule]))
    print("listening", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    last = -1
    while got[0] != last:
        last = got[0]
        await asyncio.sleep(1.0)
    print(got[0], flush=True)

asyncio.run(main())
"""
STATUS = {
    "charger": {"connected": True, "pid": "0xA334", "model": "Blue Smart IP22 24/12 (1)",
                "firmware": "0342FF", "serial": "HQ2230XY6XR", "voltage_v": 25.0,
                "current_a": 5.0, "state_code": 3, "error_code": 0, "limit_a": 7.5},
    "control": {"mode": "auto", "charging": True},
}


async def bench(count: int, per_path: bool) -> dict[str, Any]:
    from dbus_next import BusType, Message
    from dbus_next.aio import MessageBus

    import dbus_charger

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    service = dbus_charger.ChargerService(bus, "bench", "bench", "bench", "0.1.0",
                                          lambda v: None, log=lambda line: None)
    service.PER_PATH_SIGNALS = per_path
    service.publish(dbus_charger.view_from_status(STATUS))
    await service.start()
    listener = subprocess.Popen([sys.executable, "-c", LISTENER, NAME], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None and listener.stdin is not None
    assert listener.stdout.readline().strip() == "listening"
    views = []
    for i in range(count):
        status = json.loads(json.dumps(STATUS))
        status["charger"]["voltage_v"] = round(25.0 + (i % 200) * 0.01, 2)
        status["charger"]["current_a"] = round(5.0 + (i % 97) * 0.01, 2)
        views.append(dbus_charger.view_from_status(status))
    ping = Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus.Peer", member="Ping")
    signals0 = service.counters["signals"]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    in_publish = 0.0
    sent = 0  # ItemsChanged: one per publish that changed something
    for view in views:
        t = time.process_time()
        sent += service.publish(view) > 0
        in_publish += time.process_time() - t
        await asyncio.sleep(0)  # the loop writes what was queued, as between text blocks
    await bus.call(ping)  # answered after everything before it was written
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    signals = service.counters["signals"] - signals0
    loop = asyncio.get_running_loop()
    # the listener says how many it got once it has been quiet for a second
    listener.stdin.close()
    received = int(await loop.run_in_executor(None, listener.stdout.readline))
    listener.wait(10)
    listener.stdout.close()
    await service.stop()
    bus.disconnect()
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "publishes": count,
        "paths_changed_each": 2,
        "messages_each": signals / count,
        "per_path_signals": per_path,
        "seconds": round(wall, 3),
        "publishes_per_s": round(count / wall),
        "cpu_us_per_publish": round(cpu / count * 1e6, 1),
        "cpu_us_in_publish_call": round(in_publish / count * 1e6, 1),
        "items_changed_sent": sent,
        "items_changed_received": received,
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--no-per-path", action="store_true",
                        help="ItemsChanged only (velib's batch), no PropertiesChanged per path")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dbus-") as tmp, DbusDaemon(Path(tmp)) as d:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = d.address
        r = asyncio.run(bench(args.count, not args.no_per_path))
        if os.environ.get("BENCH_DBUS_LOG"):
            print(d.log.read_text()[-3000:])
    if args.json:
        print(json.dumps(r))
        return
    print("D-Bus charger service (dbus-next, Python %s) on a private dbus-daemon" % r["python"])
    print("  %d publishes, 2 paths changing each (%.0f messages each: ItemsChanged%s)"
          % (r["publishes"], r["messages_each"],
             " + PropertiesChanged per path" if r["per_path_signals"] else " only"))
    print("  %.2f s: %d publishes/s, every signal written" % (r["seconds"], r["publishes_per_s"]))
    print("  CPU per publish: %.0f us in all, %.0f us in publish() itself"
          % (r["cpu_us_per_publish"], r["cpu_us_in_publish_call"]))
    print("  ItemsChanged received by a listener in another process: %d of %d sent"
          % (r["items_changed_received"], r["items_changed_sent"]))
    print("  at the charger's rate (a text block a second): %.2f %% of a core"
          % (r["cpu_us_per_publish"] / 1e4))
    print("  max RSS %d kB (the bench's process)" % r["max_rss_kb"])


if __name__ == "__main__":
    main()
