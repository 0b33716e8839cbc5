#!/usr/bin/env python3
"""The Venus OS service: the firmware's own App under the GX's Python, the charger on a USB-TTL
cable (or a serial server), shown on the GX's D-Bus so that its GUI and VRM see it.

    python3 -u service.py --config /data/etc/bluesmart-charger/config.json
    python3 -u service.py --config FILE --bridge    (an ESP32 adapter, followed over the LAN)

The same config.json as the adapter's (`uart.port`, `gx.*` are the GX's own settings); the
status page and API on `http.port` (8088 in the package's sample: Venus uses 80 and 443).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# the package: ext/ (pure-Python dependencies) and firmware/ beside this file; the repository:
# ../firmware, the dependencies from the virtualenv
for _path in (os.path.join(HERE, "ext"), os.path.join(HERE, "firmware"),
              os.path.join(os.path.dirname(HERE), "firmware")):
    if os.path.isdir(_path) and _path not in sys.path:
        sys.path.insert(0, _path)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import signal  # noqa: E402
from typing import Any, Callable  # noqa: E402

PUBLISH_POLL_S = 0.1  # how soon a new text block reaches D-Bus (the charger sends one a second)
PORT_SCHEMES = ("socket://", "rfc2217://")  # besides device paths: a serial server
VENUS_DIR = "/opt/victronenergy"  # on a GX: wait for localsettings at boot
SETTINGS_WAIT_S = 60.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="service.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(HERE, "config.json"))
    ap.add_argument("--bridge", action="store_true",
                    help="no serial port: follow the ESP32 adapter of gx.bridge_url (also"
                         " without this, when uart.port is empty and gx.bridge_url is set)")
    ap.add_argument("--uart", help="the charger's port, instead of the config's uart.port")
    ap.add_argument("--state", help="the counters' file (default: beside the config)")
    ap.add_argument("--http-host", default="0.0.0.0")
    ap.add_argument("--http-port", type=int, help="the status page's port, instead of http.port")
    ap.add_argument("--admin-password", help="first start: set the admin password (hashed)")
    ap.add_argument("--set-admin-password", metavar="PASSWORD",
                    help="store a new admin password (hashed) in the config and exit")
    ap.add_argument("--no-dbus", action="store_true", help="no D-Bus (as gx.dbus false)")
    return ap.parse_args(argv)


def on_mode_of(switch: Any, apply: Callable[[dict], str | None],
               current: Callable[[], dict]) -> Callable[[int], str | None]:
    """The GUI's /Mode write (1 on, 4 off) as a settings change through `apply`, the app's
    one way in (dbus_charger.ModeSwitch says which change, from the view `current` gives
    now: a mode changed a moment ago on the page is what On goes back to)."""

    def on_mode(value: int) -> str | None:
        view = current()
        switch.seen(view)
        return switch.refused(view, value == 1) or apply(switch.change(value == 1))

    return on_mode


async def connect_bus(log: Callable[[str], None]) -> Any:
    """The system bus (DBUS_SYSTEM_BUS_ADDRESS honoured), or None with the reason logged."""
    try:
        from dbus_next import BusType
        from dbus_next.aio import MessageBus

        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    except Exception as err:
        log("D-Bus not available (%s: %s): the charger is not shown on the GX"
            % (type(err).__name__, err))
        return None


async def run_app(args: argparse.Namespace) -> int:
    """The charger on our serial port: the whole firmware, plus its D-Bus face."""
    import app
    import start
    from gxboard import GxBoard, port_name

    cfg = start.load_config(args.config, args.admin_password)
    port = args.uart or cfg["uart"]["port"]
    if not port and (cfg["gx"]["bridge_url"] or cfg["gx"]["bridge_topic"]):
        return await run_bridge(args)  # no cable, an adapter to follow: the bridge
    logs: list[str] = []
    bus = None
    if cfg["gx"]["dbus"] and not args.no_dbus:
        bus = await connect_bus(logs.append)

    def dbus_grid(settings: dict, log: Callable[[str], None]) -> Any:
        if bus is None:
            log("venus.protocol dbus: no D-Bus: no grid data")
            return None
        import dbus_grid as grid

        return grid.DbusGrid(bus, settings, log)

    problem = None
    if not port:
        problem = ("no charger port: set uart.port in %s (e.g. /dev/serial/by-id/...), or"
                   " gx.bridge_url for an ESP32 adapter" % args.config)
    elif not port.startswith("/") and not port.startswith(PORT_SCHEMES):
        problem = "uart.port %r: a device path, or one of %s" % (port, ", ".join(PORT_SCHEMES))
    if cfg.safe_mode and not cfg["uart"]["port"]:
        problem = "config.json cannot be used (%s)" % "; ".join(cfg.errors)
    if problem:  # waiting for the user, not a restart loop under svscan
        print(problem + "; then: sh restart.sh", flush=True)
        return await run_until_stopped([asyncio.ensure_future(asyncio.Event().wait())])
    board = GxBoard(port, dbus_grid)
    state = args.state or os.path.join(os.path.dirname(os.path.abspath(args.config)),
                                       "state.json")
    a = app.App(cfg, board, state, args.http_host, args.http_port, args.config)
    for line in logs:
        a.log(line)
    tasks = []
    if bus is not None:
        import dbus_charger

        switch = dbus_charger.ModeSwitch(os.path.join(os.path.dirname(
            os.path.abspath(args.config)), "gx-switch.json"))
        on_mode = on_mode_of(switch, lambda change: "; ".join(a.set_mode(change)) or None,
                             lambda: app_view(a))
        service = dbus_charger.ChargerService(
            bus,
            dbus_charger.service_suffix(port_name(port)),
            board.unique_id(),
            "VE.Direct on %s (bluesmart-charger)" % port,
            app.VERSION,
            on_mode,
            device_instance=cfg["gx"]["device_instance"],
            log=a.log,
            settings_wait_s=SETTINGS_WAIT_S if os.path.isdir(VENUS_DIR) else 0.0,
        )
        # the name first, the serial port after: a name that is taken (Venus's own driver
        # on this port, or a second copy of us) must not leave two owners on the line
        await claim(service, a.log)
        tasks += [asyncio.ensure_future(publish_app(a, service, switch)),
                  asyncio.ensure_future(exit_when_lost(bus))]
    tasks.append(asyncio.ensure_future(a.run()))
    return await run_until_stopped(tasks)  # App.run() saves its counters as it ends


async def claim(service: Any, log: Callable[[str], None]) -> None:
    """service.start(), again and again while its name is taken (with back-off, up to a
    minute): the service waits, it does not crash-loop under svscan."""
    import dbus_charger

    wait = 5.0
    while True:
        try:
            await service.start()
            return
        except dbus_charger.NameTaken as err:
            log("%s; trying again in %.0f s" % (err, wait))
            await asyncio.sleep(wait)
            wait = min(wait * 2, 60.0)


async def exit_when_lost(bus: Any) -> None:
    """A lost system bus would leave the charger gone from the GUI until a restart: end, and
    daemontools starts the service again."""
    await bus.wait_for_disconnect()
    print("D-Bus connection lost: exiting for a restart", flush=True)
    raise SystemExit(1)


def app_view(a: Any) -> dict:
    """The D-Bus view from the two parts of the app's status it is made of (the whole status,
    web, MQTT and log included, is not built for every frame)."""
    import dbus_charger

    return dbus_charger.view_from_status({"charger": a.link.status(),
                                          "control": a.control_status()})


async def publish_app(a: Any, service: Any, switch: Any) -> None:
    """Every text block (and every mode change) onto D-Bus, read from the app's state in the
    loop: nothing here waits on the charger link, and publish() only queues signals."""
    import dbus_charger

    seen = None
    while True:
        await asyncio.sleep(PUBLISH_POLL_S)
        link = a.link
        key = (link.state.last_frame_ms, link.connected(), a.controller.s["mode"],
               a.controller.s["manual_charging"])  # a frame, the link lost, a switch
        if key == seen:
            continue
        seen = key
        try:
            view = app_view(a)
            switch.seen(view)
            service.publish(view)
        except Exception as err:  # one bad round must not end the service
            a.log("D-Bus: publish failed: %s: %s" % (type(err).__name__, err))


async def run_bridge(args: argparse.Namespace) -> int:
    """An ESP32 adapter on the LAN, followed, and its charger shown on this GX's D-Bus."""
    import app
    import bridge
    import dbus_charger
    import start

    cfg = start.load_config(args.config)
    gx = cfg["gx"]
    problem = None
    if cfg.safe_mode:
        problem = "config.json cannot be used (%s)" % "; ".join(cfg.errors)
    elif not gx["bridge_url"] and gx["bridge_via"] == "http":
        problem = "the bridge needs gx.bridge_url (the adapter, http://<ip>)"
    elif gx["bridge_via"] == "mqtt" and not (cfg["mqtt"]["host"] and gx["bridge_topic"]):
        problem = "the bridge via mqtt needs mqtt.host and gx.bridge_topic"
    if problem:  # waiting for the user, not a restart loop under svscan
        print(problem + "; then: sh restart.sh", flush=True)
        return await run_until_stopped([asyncio.ensure_future(asyncio.Event().wait())])

    def log(line: str) -> None:
        print(line, flush=True)

    bus = await connect_bus(log)
    if bus is None:
        return 1
    follower = bridge.AdapterFollower(gx, cfg["mqtt"], log)
    follower.switch = dbus_charger.ModeSwitch(os.path.join(os.path.dirname(
        os.path.abspath(args.config)), "gx-switch.json"))  # On's mode survives a restart
    where = gx["bridge_topic"] if gx["bridge_via"] == "mqtt" else gx["bridge_url"]

    def on_mode(value: int) -> Any:
        return follower.set_mode(value == 1)  # its own ModeSwitch, fed by what it follows

    service = dbus_charger.ChargerService(
        bus,
        dbus_charger.service_suffix("bridge_" + where),
        "bridge-" + dbus_charger.service_suffix(where),
        "ESP32 adapter %s (bluesmart-charger bridge)" % where,
        app.VERSION,
        on_mode,
        device_instance=gx["device_instance"],
        settings_wait_s=SETTINGS_WAIT_S if os.path.isdir(VENUS_DIR) else 0.0,
        log=log,
    )
    await claim(service, log)
    log("bridge: following %s over %s" % (where, gx["bridge_via"]))
    return await run_until_stopped([asyncio.ensure_future(follower.run(service.publish)),
                                    asyncio.ensure_future(exit_when_lost(bus))])


async def run_until_stopped(tasks: list) -> int:
    """Until SIGTERM (svc -d) or SIGINT: then the tasks are cancelled (the app saves)."""
    loop = asyncio.get_event_loop()
    main = asyncio.gather(*tasks)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        print("stopped", flush=True)
    return 0


def set_admin_password(path: str, password: str) -> int:
    """The page's changes need the admin password; on the GX nobody ran flash.py to set one."""
    import auth
    import config as configuration

    values, errors, _ = configuration.load(path)
    if errors:
        print("%s cannot be used (%s): not changed" % (path, "; ".join(errors)), flush=True)
        return 2
    if len(password) < 4:
        print("the password is too short (4 characters at least)", flush=True)
        return 2
    values["admin"]["password_hash"] = auth.make_hash(password)
    configuration.save(path, values)
    print("admin password set in %s (restart the service: sh restart.sh)" % path, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.set_admin_password is not None:
        return set_admin_password(args.config, args.set_admin_password)
    runner = run_bridge if args.bridge else run_app
    return asyncio.run(runner(args))


if __name__ == "__main__":
    sys.exit(main())
