"""python -m tools.sim: start the whole simulated installation and print its endpoints.

python -m tools.sim --scenario steady --speed 1 --pty
python -m tools.sim --profile day.csv --phases 3 --charger-phase 2 --fault charger.corrupt=0.01
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tools.sim import ip22text
from tools.sim.charger import ChargerOptions, VirtualIP22
from tools.sim.physics import OCV_CURVES, Battery
from tools.sim.serve import Clock, Installation
from tools.sim.venus import VenusRegisters
from tools.sim.venus_mqtt import VenusMqtt
from tools.sim.world import (
    FAULTS,
    SCENARIO_FAULTS,
    SCENARIO_SCENES,
    SCENARIOS,
    World,
    apply_fault,
    load_profile,
)


def product_id(text: str) -> int:
    try:
        pid = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError("not a product id: %r (e.g. 0xA334)" % text) from None
    if ip22text.product(pid) is None:
        known = ", ".join("0x%04X" % p for p in ip22text.PRODUCTS)
        raise argparse.ArgumentTypeError("not an IP22 product id: %r; known: %s" % (text, known))
    return pid


def fault_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in FAULTS:
        raise argparse.ArgumentTypeError(
            "expected NAME=VALUE with NAME one of: %s" % ", ".join(FAULTS)
        )
    return name, value


def broker_arg(text: str) -> tuple[str, int, str | None, str | None]:
    """[USER:PASS@]HOST:PORT"""
    login, _, address = text.rpartition("@")
    user, _, password = login.partition(":")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected [USER:PASS@]HOST:PORT, got %r" % text)
    return host, int(port), user or None, password if login else None


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m tools.sim",
        description="A simulated installation: virtual IP22, virtual Venus OS GX, household + PV.",
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--scenario", choices=sorted(SCENARIOS), default="steady")
    src.add_argument("--profile", help="CSV with columns t_s,pv_w,load_w (interpolated)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    ap.add_argument("--phases", type=int, choices=(1, 3), default=1)
    ap.add_argument("--charger-phase", type=int, choices=(1, 2, 3), default=1)
    ap.add_argument("--model", type=product_id, default=0xA334, help="IP22 product id (0xA334)")
    ap.add_argument(
        "--below-min",
        choices=("reject", "clamp"),
        default="reject",
        help="answer to a current below the minimum",
    )
    ap.add_argument(
        "--volatile",
        choices=("supported", "absent", "ignored"),
        default="supported",
        help="0x2015 charge current limit with 0x200E (ignored: confirmed, not applied)",
    )
    ap.add_argument(
        "--volatile-zero",
        choices=("off", "reject", "clamp"),
        default="off",
        help="what 0x2015 = 0 does",
    )
    ap.add_argument("--no-ping", action="store_true", help="ping is answered :3 (unknown)")
    ap.add_argument(
        "--ess",
        type=float,
        default=None,
        metavar="W",
        help="a house battery under ESS holding the grid at this setpoint (842 shows it)",
    )
    ap.add_argument(
        "--true-min", type=float, default=None, help="the minimum A it really applies"
    )
    ap.add_argument(
        "--device-mode", choices=("supported", "absent"), default="supported", help="0x0200 on/off"
    )
    ap.add_argument("--no-min-register", action="store_true", help="0xEDC8 answers unknown id")
    ap.add_argument("--chemistry", choices=sorted(OCV_CURVES), default="lead-acid")
    ap.add_argument("--capacity", type=float, default=100.0, help="battery Ah")
    ap.add_argument("--soc", type=float, default=0.5, help="battery state of charge 0..1")
    ap.add_argument(
        "--unknown-unit-code",
        type=int,
        choices=(10, 11),
        default=10,
        help="Modbus exception for a unit id Venus does not have (older: 11)",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--charger-port", type=int, default=0, help="TCP port of the UART (0: any)")
    ap.add_argument("--venus-port", type=int, default=0, help="Modbus TCP port (0: any)")
    ap.add_argument("--control-port", type=int, default=0, help="HTTP control port (0: any)")
    ap.add_argument("--plug-port", type=int, default=0, help="the smart plug's HTTP port (0: any)")
    ap.add_argument("--pty", action="store_true", help="also serve the UART on a pty")
    ap.add_argument(
        "--venus-mqtt",
        type=broker_arg,
        metavar="[USER:PASS@]HOST:PORT",
        help="also publish the grid power as Venus's MQTT does (dbus-flashmq) via this broker",
    )
    ap.add_argument(
        "--fault",
        type=fault_arg,
        action="append",
        default=[],
        help="NAME=VALUE at start; names: %s" % ", ".join(FAULTS),
    )
    ap.add_argument("--duration", type=float, default=0, help="stop after this many real seconds")
    ap.add_argument("--seed", type=int, default=1)
    return ap


def build_world(args: argparse.Namespace) -> World:
    if not 0 <= args.soc <= 1:
        raise ValueError("--soc must be 0..1")
    if not args.capacity > 0:
        raise ValueError("--capacity must be > 0")
    _, volts, _, _ = ip22text.product(args.model)
    battery = Battery(
        nominal_v=volts, chemistry=args.chemistry, capacity_ah=args.capacity, soc=args.soc
    )
    options = ChargerOptions(
        model=args.model,
        below_min=args.below_min,
        volatile=args.volatile,
        volatile_zero=args.volatile_zero,
        ping=not args.no_ping,
        true_min_a=args.true_min,
        device_mode=args.device_mode,
        min_register=not args.no_min_register,
    )
    charger = VirtualIP22(options, battery, seed=args.seed)
    profile = load_profile(args.profile) if args.profile else SCENARIOS[args.scenario]
    venus = VenusRegisters(unknown_unit_code=args.unknown_unit_code)
    scripted = None if args.profile else SCENARIO_FAULTS.get(args.scenario)
    scene = None if args.profile else SCENARIO_SCENES.get(args.scenario)
    world = World(
        charger,
        venus,
        profile,
        args.phases,
        args.charger_phase,
        ess_setpoint_w=args.ess,
        scripted=scripted,
        scene=scene,
    )
    for name, value in args.fault:
        apply_fault(world, name, value)
    return world


async def main(args: argparse.Namespace) -> int:
    world = build_world(args)
    installation = Installation(world, Clock(args.speed), args.host)
    endpoints = await installation.start(
        args.charger_port, args.venus_port, args.control_port, args.pty, args.plug_port
    )
    mqtt_sim: VenusMqtt | None = None
    if args.venus_mqtt:
        mqtt_host, mqtt_port, user, password = args.venus_mqtt
        venus = world.venus  # its last reading: what the GX has, frozen and dropout included
        mqtt_sim = VenusMqtt(
            mqtt_host,
            mqtt_port,
            lambda: None if venus.faults.meter_dropout else venus.last.grid_w,
            portal_id=venus.serial,  # the same id as Modbus register 800
            username=user,
            password=password,
        )
        mqtt_sim.start()
        endpoints["venus_mqtt"] = "mqtt://%s:%d N/%s/" % (mqtt_host, mqtt_port, venus.serial)
    print(json.dumps(endpoints), flush=True)
    port = endpoints.get("pty") or endpoints["charger"]
    print("# watch the charger: .venv/bin/python tools/vedirect.py --port %s monitor" % port)
    print("# Venus: Modbus TCP %s, unit 100 registers 820-822 (grid W)" % endpoints["venus"])
    print(
        "# faults: curl -X POST %s/fault -d '{\"charger.silence\": 5}'" % endpoints["control"],
        flush=True,
    )
    try:
        if args.duration:
            await asyncio.sleep(args.duration)
        else:
            await asyncio.Event().wait()
    finally:
        if mqtt_sim:
            mqtt_sim.stop()
        await installation.stop()
    return 0


def run(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return asyncio.run(main(args))
    except (ValueError, OSError) as err:
        print("tools.sim: %s" % err, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(run())
