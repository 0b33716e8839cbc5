"""`./dev demo --scenario tour`: every behaviour in three minutes, as README promises it. The
timeline itself (pure), and the real firmware going through it (real time, 3 minutes)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import need_tool
from fwrun import free_port
from test_demo import processes_mentioning, start_demo

from tools.sim.__main__ import build_world, make_parser
from tools.sim.world import TOUR_S, TOUR_SCENES, tour, tour_scene

LIVE = re.compile(
    r"^demo: \[(?P<scene>[^\]]+)\] PV (?P<pv>\d+) W, house (?P<house>\d+) W, grid (?P<grid>[+-]?\d+) W"
    r" \| charger (?P<charger_w>\d+|-)(?: W)?, (?P<amps>[\d.]+|-) A, setpoint (?P<setpoint>[\d.]+|-)"
    r"(?: A)? \| (?P<reason>.*)$"
)


def test_the_tour_timeline_repeats_with_its_gx_outage() -> None:
    world = build_world(make_parser().parse_args(["--scenario", "tour"]))
    down: list[float] = []
    for tenth in range(0, int(2 * TOUR_S * 10)):
        t = tenth / 10
        world.step(t)
        if world.venus.faults.down:
            down.append(t)
    # the GX is off from 135 to 150 s of each round, and only then
    assert down[0] == 135.0 and round(down[-1], 1) == 314.9 + 15.0
    assert len(down) == 2 * 150
    assert all(135 <= t % TOUR_S < 150 for t in down)
    pv, load = zip(*(tour(t) for t in (5, 50, 70, 90, 110, 130, 179)))
    assert pv[0] < load[0]  # morning: no surplus
    assert pv[1] - load[1] > 400  # full sun: more than the charger takes
    assert pv[2] < load[2]  # the kettle: import without the charger
    assert 100 < pv[4] - load[4] < 300  # a cloud: part of the charger's range
    assert pv[6] == 0  # evening
    assert tour_scene(70) == tour_scene(70 + TOUR_S) == "a 2 kW kettle"


def test_the_tour_shows_every_behaviour(tmp_path: Path) -> None:
    need_tool("micropython")
    port = free_port()
    demo = start_demo(tmp_path, port, "--scenario", "tour", "--duration", str(TOUR_S + 2))
    try:
        out, _ = demo.communicate(timeout=TOUR_S + 60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out
    lines = [m.groupdict() for m in map(LIVE.match, out.splitlines()) if m]
    scenes: dict[str, list[dict[str, str]]] = {}
    for line in lines:
        scenes.setdefault(line["scene"], []).append(line)

    def watts(line: dict[str, str]) -> int:
        return 0 if line["charger_w"] == "-" else int(line["charger_w"])

    assert list(scenes) == [name for _, name in TOUR_SCENES], out  # in order, none missed
    assert all(watts(x) == 0 for x in scenes["morning: PV below the house load"]), out
    assert any(watts(x) > 250 for x in scenes["full sun"]), out  # surplus charges the battery
    assert watts(scenes["a 2 kW kettle"][-1]) == 0, out  # the kettle switches it off
    assert any(watts(x) > 100 for x in scenes["kettle off"]), out  # and it comes back
    cloud = scenes["a cloud"][-1]  # follows the surplus down, still charging
    assert 50 < watts(cloud) < 300 and float(cloud["setpoint"]) < 12, out
    outage = scenes["GX outage (Modbus TCP off)"]
    assert outage[-1]["reason"].startswith("safe:") and watts(outage[-1]) == 0, out
    assert any(watts(x) > 100 for x in scenes["GX back"] + scenes["evening: the sun sets"][:1]), out
    evening = scenes["evening: the sun sets"][-1]
    assert watts(evening) == 0 and int(evening["pv"]) == 0, out
    assert processes_mentioning("--http-port %d" % port) == []
