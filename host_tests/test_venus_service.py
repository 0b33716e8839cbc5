"""The Venus OS service end to end, as on a GX: `venus_os/service.py` (CPython) on a real
dbus-daemon (the test's system bus), the simulated charger on its serial port, read back the
way the GUI's tools read a service (dbus-send GetValue/GetItems/SetValue). With a cable: the
firmware's App in the service. Bridge: the firmware on the Unix port as the ESP32 adapter,
followed over HTTP or over MQTT (mosquitto), the GX service only showing it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from broker import mosquitto_fixture  # noqa: F401
from conftest import ROOT, need_tool
from dbus_bus import (  # noqa: F401
    BUSITEM,
    DbusDaemon,
    LocalSettings,
    StandIn,
    dbus_daemon_fixture,
    disconnect_all,
    parse_reply,
)
from fwrun import Firmware, free_port, make_world, truth

from tools.mosquitto import Mosquitto
from tools.sim.serve import Background
from tools.sim.world import apply_fault

MANUAL = {"control": {"mode": "manual", "manual_current_a": 6.0}}
PASSWORD = "gx bridge"


def dbus(dest: str, path: str, member: str, *args: str) -> Any:
    """`dbus-send --system --print-reply` (the test's bus), the reply parsed."""
    out = subprocess.run(
        [need_tool("dbus-send"), "--system", "--print-reply", "--reply-timeout=3000",
         "--dest=" + dest, path, BUSITEM + "." + member, *args],
        capture_output=True, text=True, timeout=10,
    )
    if out.returncode != 0:
        raise OSError(out.stderr.strip())
    return parse_reply(out.stdout)


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as err:  # the service not there yet
            last = err
        time.sleep(0.25)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def items(name: str) -> dict[str, Any]:
    return {path: v["Value"] for path, v in dbus(name, "/", "GetItems").items()}


def test_the_charger_on_dbus_follows_switches_and_survives_a_restart(
    tmp_path: Path, dbus_daemon: DbusDaemon
) -> None:
    env = {"DBUS_SYSTEM_BUS_ADDRESS": dbus_daemon.address}
    with Background(make_world(), pty=True) as sim, Firmware(
        tmp_path, sim.endpoints["pty"], MANUAL, gx=True, env=env,
        extra=("--admin-password", PASSWORD),
    ) as fw:
        name = "com.victronenergy.charger.pts_" + Path(sim.endpoints["pty"]).name
        got = until(lambda: items(name).get("/Serial") and items(name), 20, "the charger's identity")
        assert got["/ProductId"] == 0xA334 and got["/FirmwareVersion"] == 0x0342FF
        assert got["/Serial"] == "HQ2230XY6XR" and got["/Mgmt/ProcessName"] == "bluesmart-charger"
        assert got["/Mgmt/Connection"].startswith("VE.Direct on /dev/pts/")
        assert got["/DeviceInstance"] == 0 and got["/NrOfOutputs"] == 1 and got["/Connected"] == 1
        assert got["/Mode"] == 1  # manual, charging

        # the values follow the charger (bulk at the manual 6 A)
        def follows() -> bool:
            real = truth(sim)["charger"]
            now = items(name)
            return (now["/State"] == 3 and abs(now["/Dc/0/Voltage"] - real["voltage_v"]) < 0.2
                    and abs(now["/Dc/0/Current"] - real["current_a"]) < 0.3)

        until(follows, 20, "the values to follow the charger")
        until(lambda: abs(items(name)["/Dc/0/Current"] - 6.0) < 0.3, 20, "the manual 6 A")

        # the GUI's Off: held off through the app (manual, not charging); the charger stops
        assert dbus(name, "/Mode", "SetValue", "variant:int32:4") == 0
        control = fw.status()["control"]
        assert (control["mode"], control["manual_charging"]) == ("manual", False)
        until(lambda: truth(sim)["charger"]["on"] is False, 15, "the charger off")
        until(lambda: items(name)["/Mode"] == 4 and items(name)["/State"] == 0, 10, "/Mode 4")
        # bad writes change nothing
        assert dbus(name, "/Mode", "SetValue", "variant:int32:7") == 1
        assert dbus(name, "/Mode", "SetValue", "variant:string:on") == 1
        assert dbus(name, "/Dc/0/Voltage", "SetValue", "variant:double:30") == 1
        assert fw.status()["control"]["manual_charging"] is False
        # the GUI's On: back to manual, charging
        assert dbus(name, "/Mode", "SetValue", "variant:int32:1") == 0
        until(lambda: truth(sim)["charger"]["on"] is True, 15, "the charger on")
        until(lambda: items(name)["/Mode"] == 1 and items(name)["/State"] == 3, 15, "bulk")

        # from the app's mode off (the package's sample config): Off holds it off, On goes
        # back to off, which hands the charger back: charging by itself (once held off here)
        from test_api import call

        assert call(fw, "POST", "/api/mode", {"mode": "off"}, PASSWORD)[0] == 200
        until(lambda: items(name)["/Mode"] == 1, 10, "/Mode 1 in mode off")
        assert dbus(name, "/Mode", "SetValue", "variant:int32:4") == 0
        until(lambda: truth(sim)["charger"]["on"] is False, 15, "off from mode off")
        assert dbus(name, "/Mode", "SetValue", "variant:int32:1") == 0
        assert fw.status()["control"]["mode"] == "off"
        until(lambda: truth(sim)["charger"]["on"] is True, 15, "handed back: on")
        until(lambda: items(name)["/State"] == 3, 15, "bulk, by itself")

        # a charger restart (a power cut): the name and paths stay, /Connected tells
        assert fw.status()["counters"]["frames_bad"] == 0
        sim.call(lambda: apply_fault(sim.world, "charger.power_cut", 8))
        gone = until(lambda: items(name)["/Connected"] == 0 and items(name), 15, "/Connected 0")
        assert gone["/Dc/0/Voltage"] == [] and gone["/ProductId"] == 0xA334  # invalid, kept
        back = until(lambda: items(name)["/Connected"] == 1 and items(name), 30, "back")
        assert back["/Serial"] == "HQ2230XY6XR"
        until(follows, 30, "following again after the restart")
        st = fw.status()
        # the cut can fall in the middle of a frame (the simulator drops what it was sending):
        # that one frame arrives short and is counted bad, nothing else may be
        assert st["board"] == "gx" and st["counters"]["frames_bad"] <= 1


def start_bridge(workdir: Path, gx: dict[str, Any], env: dict[str, str],
                 mqtt: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    """service.py as the bridge: no uart.port, the adapter in gx.* (it starts as the bridge
    by itself)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.json"
    config.write_text(json.dumps({"gx": gx, "mqtt": mqtt or {}, "http": {"port": 8088}}))
    log = open(workdir / "bridge.log", "w")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "venus_os" / "service.py"), "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **env),
    )


@pytest.mark.parametrize("via", ["http", "mqtt"])
def test_the_bridge_shows_the_adapter_and_passes_the_switch_on(
    tmp_path: Path, dbus_daemon: DbusDaemon, mosquitto: Mosquitto, via: str
) -> None:
    adapter_config = dict(MANUAL, mqtt={"host": "127.0.0.1", "port": mosquitto.port,
                                         "update_s": 1.0, "discovery": False})
    env = {"DBUS_SYSTEM_BUS_ADDRESS": dbus_daemon.address}
    (tmp_path / "adapter").mkdir()
    with Background(make_world()) as sim, Firmware(
        tmp_path / "adapter", sim.endpoints["charger"], adapter_config,
        extra=("--admin-password", PASSWORD),
    ) as fw:
        serial = fw.wait_for(lambda s: s["mqtt"]["connected"], 20, "MQTT")["charger"]["serial"]
        if via == "http":
            gx = {"bridge_url": "http://127.0.0.1:%d" % fw.port, "bridge_password": PASSWORD}
            name = "com.victronenergy.charger.bridge_http_127_0_0_1_%d" % fw.port
        else:
            gx = {"bridge_via": "mqtt", "bridge_topic": "ip22/" + serial}
            name = "com.victronenergy.charger.bridge_ip22_" + serial
        mqtt = {"host": "127.0.0.1", "port": mosquitto.port}
        bridge = start_bridge(tmp_path / "gx", gx, env, mqtt if via == "mqtt" else None)
        try:
            got = until(lambda: items(name).get("/Serial") and items(name), 20,
                        "the adapter's charger on D-Bus")
            assert got["/ProductId"] == 0xA334 and got["/Serial"] == serial
            assert got["/Mgmt/Connection"].startswith("ESP32 adapter")
            until(lambda: items(name)["/State"] == 3, 15, "bulk")
            # the GUI's Off becomes the adapter's held off; the charger stops
            assert dbus(name, "/Mode", "SetValue", "variant:int32:4") == 0
            control = fw.status()["control"]
            assert (control["mode"], control["manual_charging"]) == ("manual", False)
            until(lambda: truth(sim)["charger"]["on"] is False, 15, "the charger off")
            until(lambda: items(name)["/Mode"] == 4, 10, "/Mode 4 from the adapter")
            assert dbus(name, "/Mode", "SetValue", "variant:int32:1") == 0
            until(lambda: truth(sim)["charger"]["on"] is True, 15, "the charger on again")
            until(lambda: items(name)["/Mode"] == 1, 10, "/Mode 1")
            # the adapter gone: shown disconnected, the service stays
            assert fw.proc is not None
            fw.proc.send_signal(signal.SIGKILL)
            until(lambda: items(name)["/Connected"] == 0, 20, "disconnected")
        finally:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(10)
            except subprocess.TimeoutExpired:
                bridge.kill()
        assert bridge.returncode == 0, (tmp_path / "gx" / "bridge.log").read_text()


def gx_pythons() -> list[str]:
    """The interpreters to run the package on: this one, and Venus's own versions where this
    machine has them (3.8 until Venus v3.5x, 3.12 from v3.60; pyenv's, if installed)."""
    found = [sys.executable]
    for version in ("3.8", "3.12"):
        for candidate in sorted(Path("/root/.pyenv/versions").glob(version + ".*/bin/python")):
            found.append(str(candidate))
            break
        else:
            exe = shutil.which("python" + version)
            if exe:
                found.append(exe)
    return found


def test_the_package_runs_on_the_gx_pythons(tmp_path: Path, dbus_daemon: DbusDaemon) -> None:
    """The built package, unpacked, with nothing installed (python -I -S: no site-packages,
    only what it carries in ext/), runs the firmware and publishes on D-Bus, on every Python
    Venus ships that this machine has."""
    from tools import venus_package

    tarball = venus_package.build(tmp_path / "dist")
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "data")
    package = tmp_path / "data" / "bluesmart-charger"
    ran = []
    for python in gx_pythons():
        with Background(make_world(), pty=True) as sim:
            work = tmp_path / ("run-%d" % len(ran))
            work.mkdir()
            config = work / "config.json"
            port = free_port()
            config.write_text(json.dumps(dict(MANUAL, uart={"port": sim.endpoints["pty"]},
                                              http={"port": port})))
            log = open(work / "service.log", "w")
            proc = subprocess.Popen(
                [python, "-I", "-S", str(package / "service.py"), "--config", str(config),
                 "--http-host", "127.0.0.1"],
                stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=dbus_daemon.address),
            )
            try:
                name = "com.victronenergy.charger.pts_" + Path(sim.endpoints["pty"]).name
                got = until(lambda: (items(name).get("/Dc/0/Current") or 0) > 3 and items(name),
                            30, "charging, on D-Bus, under " + python)
                assert got["/State"] == 3 and got["/ProductId"] == 0xA334
                url = "http://127.0.0.1:%d/api/status" % port
                with urllib.request.urlopen(url, timeout=5) as resp:
                    st = json.load(resp)
                assert st["board"] == "gx" and st["charger"]["connected"] is True
                version = subprocess.run([python, "-c", "import sys; print(sys.version)"],
                                         capture_output=True, text=True).stdout.split()[0]
                ran.append(version)
            finally:
                proc.terminate()
                proc.wait(10)
                log.close()
            assert proc.returncode == 0, (work / "service.log").read_text()
    print("the package ran on Python", ", ".join(ran))
    assert len(ran) == len(gx_pythons())


class BusThread:
    """An asyncio loop in a thread of its own, for the stand-ins of Venus's services (the
    test itself waits synchronously, as a user would)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.run(disconnect_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_surplus_from_the_gx_dbus_with_its_meter_rule(tmp_path: Path, dbus_daemon: DbusDaemon) -> None:
    """venus.protocol dbus: grid power from com.victronenergy.system (a stand-in fed by the
    simulated house once a second, as systemcalc publishes it), the VRM instance from
    localsettings (another charger holds 0), surplus charging on it; the grid meter leaving
    the bus is no grid value (systemcalc would quietly fall back to the Multi's AC-in), so the
    controller goes to its safe state and the charger off."""
    world = make_world()
    world.profile = lambda t: (1600.0, 350.0)  # ~1.2 kW of surplus
    bus = BusThread()
    try:
        settings = bus.run(LocalSettings().start())
        settings.values["/Settings/Devices/other/ClassAndVrmInstance"] = "charger:0"
        system = bus.run(StandIn("com.victronenergy.system", {
            "/Ac/Grid/L1/Power": 0.0, "/Ac/Grid/L2/Power": None, "/Ac/Grid/L3/Power": None,
            "/Ac/Grid/NumberOfPhases": 1, "/Dc/Battery/Power": None}).start())
        meter = bus.run(StandIn("com.victronenergy.grid.cgwacs_ttyUSB0_mb1",
                                {"/Connected": 1, "/Ac/L1/Power": 0.0}).start())
        config = {"control": {"mode": "auto", "stale_s": 5},
                  "venus": {"protocol": "dbus", "meter_unit": 30}}
        env = {"DBUS_SYSTEM_BUS_ADDRESS": dbus_daemon.address}
        with Background(world) as sim, Firmware(
            tmp_path, sim.endpoints["charger"], config, gx=True, env=env
        ) as fw:
            feeding = threading.Event()

            def feed() -> None:  # systemcalc's once-a-second ItemsChanged, from the house
                while not feeding.wait(1.0):
                    watts = sim.call(lambda: round(sum(sim.world.grid_w), 1))
                    bus.loop.call_soon_threadsafe(system.set, {"/Ac/Grid/L1/Power": watts})

            threading.Thread(target=feed, daemon=True).start()
            try:
                st = fw.wait_for(lambda s: s["control"]["charging"] is True, 30, "charging")
                assert st["grid"]["protocol"] == "dbus"
                name = "com.victronenergy.charger." + port_suffix(sim.endpoints["charger"])
                assert items(name)["/DeviceInstance"] == 1  # the next free one
                fw.wait_for(lambda s: s["charger"]["limit_a"] == 12.0
                            and s["charger"]["current_a"] > 10, 30, "the maximum: 1.2 kW spare")
                # the meter gone: no grid value, the safe state, the charger off
                bus.run(meter.stop())
                st = fw.wait_for(lambda s: s["control"]["safe"] is True, 10, "the safe state")
                fw.wait_for(lambda s: s["control"]["charging"] is False, 20, "off")
                until(lambda: truth(sim)["charger"]["on"] is False, 15, "the charger off")
            finally:
                feeding.set()
    finally:
        bus.stop()


def port_suffix(port: str) -> str:
    """The service's name for a port, as service.py makes it."""
    import dbus_charger
    import gxboard

    return dbus_charger.service_suffix(gxboard.port_name(port))


def test_a_taken_name_waits_without_touching_the_port(
    tmp_path: Path, dbus_daemon: DbusDaemon
) -> None:
    """The name is already on the bus (Venus's own driver on this port, or a second copy of
    us): the service waits with back-off and leaves the serial port alone, then takes over
    when the name is free. It never crash-loops, and never makes two owners of the line."""
    bus = BusThread()
    try:
        with Background(make_world(), pty=True) as sim:
            name = "com.victronenergy.charger.pts_" + Path(sim.endpoints["pty"]).name
            holder = bus.run(StandIn(name, {"/Connected": 1}).start())
            config = tmp_path / "config.json"
            config.write_text(json.dumps(dict(MANUAL, uart={"port": sim.endpoints["pty"]})))
            port = free_port()
            log_path = tmp_path / "service.log"
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, str(ROOT / "venus_os" / "service.py"), "--config",
                     str(config), "--http-host", "127.0.0.1", "--http-port", str(port)],
                    stdout=log, stderr=subprocess.STDOUT,
                    env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=dbus_daemon.address))
            try:
                until(lambda: "trying again" in log_path.read_text(), 15, "the wait")
                time.sleep(2)
                assert proc.poll() is None  # waiting, not exited
                assert sim.call(lambda: sim.world.charger.counters.requests) == 0  # not asked a thing
                bus.run(holder.stop())
                got = until(lambda: items(name).get("/Serial") and items(name), 40, "taken over")
                assert got["/ProductId"] == 0xA334
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        bus.stop()


def test_a_broken_config_waits_and_says_why(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"uart": {"port": "/dev/ttyUSB0",}')  # a stray comma, as vi leaves it
    log_path = tmp_path / "service.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "venus_os" / "service.py"), "--config", str(config),
             "--no-dbus"], stdout=log, stderr=subprocess.STDOUT)
    try:
        until(lambda: "cannot be used" in log_path.read_text(), 15, "the reason")
        assert "not valid JSON" in log_path.read_text()
        time.sleep(1)
        assert proc.poll() is None  # waits for the user: no restart loop under svscan
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_off_is_refused_where_the_charger_cannot_be_switched_off(
    tmp_path: Path, dbus_daemon: DbusDaemon
) -> None:
    """No 0x0200, 0x2015 = 0 not off (clamped to the minimum), no plug: the GUI's Off would
    leave the charger charging under a switch showing Off. Once the app knows, /Mode shows On
    and Off is refused (SetValue 2) with the reason."""
    env = {"DBUS_SYSTEM_BUS_ADDRESS": dbus_daemon.address}
    world = make_world(device_mode="absent", volatile_zero="clamp")
    with Background(world, pty=True) as sim, Firmware(
        tmp_path, sim.endpoints["pty"], MANUAL, gx=True, env=env
    ) as fw:
        name = "com.victronenergy.charger.pts_" + Path(sim.endpoints["pty"]).name
        until(lambda: items(name).get("/State") == 3, 20, "charging")
        # whether 0x2015 = 0 is off is asked once, at the first Off: here it is not
        assert dbus(name, "/Mode", "SetValue", "variant:int32:4") == 0
        fw.wait_for(lambda s: s["control"]["can_switch_off"] is False, 15, "learned")
        until(lambda: items(name)["/Mode"] == 1, 10, "/Mode back to On: it charges on")
        assert truth(sim)["charger"]["on"] is True and items(name)["/State"] == 3
        # from now on Off is refused with the reason, and nothing changes
        mode = fw.status()["control"]["manual_charging"]
        assert dbus(name, "/Mode", "SetValue", "variant:int32:4") == 2
        assert "cannot be switched off" in fw.read_log()
        assert fw.status()["control"]["manual_charging"] == mode
        assert items(name)["/Mode"] == 1 and truth(sim)["charger"]["on"] is True
