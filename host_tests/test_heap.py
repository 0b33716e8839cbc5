"""The whole firmware (charger link, Venus poller, controller, HTTP, MQTT), compiled to .mpy as
on the board, in a small heap on the MicroPython Unix port, with the status page polled as a
browser does: tools/bench_heap.py, CI-sized (about 55 s). And the same files on a 32-bit
MicroPython (the webassembly port): they load there, and the heap they take is printed beside
the Unix port's."""

from __future__ import annotations

from pathlib import Path

from broker import mosquitto_fixture  # noqa: F401
from conftest import need_tool

from tools import bench_heap
from tools.heap.verdict import run_problems
from tools.mosquitto import Mosquitto

# The target is 192K. Measured (tools/bench_heap.py, docs/development.md "Memory"): the
# firmware needed 224K to start and serve, 232K for ten clean minutes (it was 296K and 352K). The
# controller that reconciles with the charger and its real-time law (issue "judged from
# outside") took it to 280K: 8K above that is the line now, as before; where the ~22 kB went
# (only ~8 kB of it is code) is open for the board issue (docs/development.md "Memory").
HEAP = "288K"
SECONDS = 40  # after start-up (about 12 s): 4 housekeeping rounds, 40 status polls


def test_whole_firmware_runs_in_a_small_heap_with_the_page_polled(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    micropython = need_tool("micropython")
    need_tool("mpy-cross")
    r = bench_heap.run(
        HEAP, SECONDS, speed=10, broker=mosquitto, workdir=tmp_path, micropython=micropython
    )
    report = bench_heap.table(r)
    print(report)
    problems = run_problems(r)
    requests = r.get("requests", {})
    if not requests.get("ok") or requests.get("failed"):
        problems.append("HTTP requests ok/failed: %s/%s" % (requests.get("ok"),
                                                             requests.get("failed")))
    for path in ("/", "/api/status", "/api/history"):
        if not requests.get("per_path", {}).get(path, {}).get("ok"):
            problems.append("no answer to %s" % path)
    if r.get("flatness", {}).get("flat") is not True:
        problems.append("heap not flat: %s" % r.get("flatness"))
    lost = r.get("frames_lost")
    if lost is None or abs(lost) > bench_heap.LOST_FRAMES_TOLERANCE:
        problems.append("charger frames lost: %s of %s" % (lost, r.get("frames_sent")))
    if r.get("frames_bad"):
        problems.append("bad charger frames: %s" % r["frames_bad"])
    for key in ("frames_in_run", "venus_ok_in_run", "mqtt_published_in_run"):
        if not r.get(key):
            problems.append("nothing in %s" % key)
    assert not problems, "\n".join(problems) + "\n\n" + report


def test_the_firmware_loads_on_a_32_bit_micropython(tmp_path: Path) -> None:
    """Every module imports and the App builds on the webassembly port (32-bit, MicroPython
    1.27, from npm): the .mpy files are not tied to the Unix port, and the figure printed is
    the one closer to the ESP32-C3 (it is not half the Unix port's: see docs/development.md
    "Memory")."""
    fw, lib = bench_heap.build(tmp_path / "build")
    config = {
        "control": {"mode": "auto"},
        "venus": {"host": "127.0.0.1", "port": 502},
        "mqtt": {"host": "127.0.0.1", "port": 1883},
    }
    b64 = bench_heap.breakdown(fw, lib, config, workdir=tmp_path / "bd")
    b32 = bench_heap.breakdown(fw, lib, config, workdir=tmp_path / "bd32", bits32=True)
    print(bench_heap.breakdown_table(b64, b32))
    assert b32.get("total"), b32.get("error")
    failed = [st for st in b32["steps"] if st["error"] and st["loaded"]]
    assert failed == [], failed
    assert {"app", "charger", "web", "mqtt", "venus"} <= {
        st["what"][len("import "):] for st in b32["steps"] if st["what"].startswith("import ")
    }
    # the App was built (its step has no error) with every module this config loads
    assert [st for st in b32["steps"] if st["what"] == "App(...)"][0]["error"] is None
