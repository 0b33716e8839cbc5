"""The Venus OS service's D-Bus side against a real dbus-daemon (host_tests/dbus_bus.py): the
charger as com.victronenergy.charger.<suffix> read back the way the GUI does (dbus-send
GetItems/GetValue, and a dbus-next client for the signals), /Mode and other writes, the VRM
instance from a localsettings stand-in, a second instance refused, the service surviving a
charger restart; and the grid power from a systemcalc stand-in, with the meter-dropout rule.
The pure parts (the view, the paths, the suffix) first."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Awaitable, Callable

import dbus_charger
import dbus_grid
import pytest
from dbus_bus import (  # noqa: F401
    BUSITEM,
    DbusSendError,
    LocalSettings,
    StandIn,
    connect,
    dbus_daemon_fixture,
    dbus_send,
    disconnect_all,
    until,
)
from dbus_charger import ChargerService, NameTaken, charger_paths, service_suffix, view_from_status
from dbus_next import Message, MessageType

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = "ttyUSB0"
NAME = "com.victronenergy.charger.ttyUSB0"
UID = "ip22_HQ2230XY6XR"
GRID_BUSES: list[Any] = []  # the buses the grid sources connected themselves
VENUS_PYTHONS = ("/root/.pyenv/versions/3.8.18/bin/python",
                 "/root/.pyenv/versions/3.12.1/bin/python")

STATUS = {  # GET /api/status, the parts the view reads (docs/api.md's example)
    "charger": {"connected": True, "frame_age_s": 0.08, "pid": "0xA334",
                "model": "Blue Smart IP22 24/12 (1)", "firmware": "0342FF",
                "serial": "HQ2230XY6XR", "voltage_v": 25.79, "current_a": 7.38,
                "state": "bulk", "state_code": 3, "error": "no error", "error_code": 0,
                "temperature_c": None, "limit_a": 7.5, "charging": True},
    "control": {"mode": "auto", "setpoint_a": 7.5, "charging": True, "reason": "..."},
}


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            await disconnect_all(*GRID_BUSES)
            GRID_BUSES.clear()

    return asyncio.run(bounded())


def view(**changes: Any) -> dict:
    v = view_from_status(STATUS)
    v.update(changes)
    return v


# -- pure -----------------------------------------------------------------------------------------


def test_view_from_status_reads_the_charger_and_control_sections() -> None:
    assert view_from_status(STATUS) == {
        "connected": True, "product_id": 0xA334, "product_name": "Blue Smart IP22 24/12 (1)",
        "firmware": "0342FF", "serial": "HQ2230XY6XR", "voltage_v": 25.79, "current_a": 7.38,
        "temperature_c": None, "state_code": 3, "error_code": 0, "mode": "auto",
        "switched_off": False, "charging": True, "can_switch_off": None, "limit_a": 7.5,
    }
    held = {"control": {"mode": "manual", "manual_charging": False}}
    assert view_from_status(held)["switched_off"] is True
    assert view_from_status({"control": {"mode": "off", "manual_charging": False}})[
        "switched_off"] is False  # off: the charger is left alone, it charges by itself
    # a charger not heard yet, a mode not known, garbage from a LAN peer: all unknown
    odd = {"charger": {"connected": "yes", "pid": "zz", "voltage_v": "25", "current_a": True,
                       "state_code": 3.5, "model": ""},
           "control": {"mode": "turbo", "charging": 1}}
    v = view_from_status(odd)
    assert v["connected"] is False and v["mode"] is None and v["charging"] is None
    assert all(v[k] is None for k in ("product_id", "voltage_v", "current_a", "state_code",
                                      "product_name"))
    assert view_from_status({})["connected"] is False


def test_charger_paths_as_the_vedirect_driver_publishes_them() -> None:
    paths = charger_paths(view(), process_version="0.1.0", connection="VE.Direct on x",
                          device_instance=3)
    assert paths == {
        "/Mgmt/ProcessName": "bluesmart-charger", "/Mgmt/ProcessVersion": "0.1.0",
        "/Mgmt/Connection": "VE.Direct on x", "/DeviceInstance": 3, "/ProductId": 0xA334,
        "/ProductName": "Blue Smart IP22 24/12 (1)", "/FirmwareVersion": 0x0342FF,
        "/HardwareVersion": None, "/Connected": 1, "/CustomName": "",
        "/Serial": "HQ2230XY6XR", "/NrOfOutputs": 1, "/Dc/0/Voltage": 25.79,
        "/Dc/0/Current": 7.38, "/Dc/0/Temperature": None, "/State": 3, "/ErrorCode": 0,
        "/Mode": 1,
    }
    assert charger_paths(view(mode="manual", switched_off=True))["/Mode"] == 4
    assert charger_paths(view(mode="manual"))["/Mode"] == 1
    assert charger_paths(view(mode="off"))["/Mode"] == 1
    assert charger_paths(view(mode=None))["/Mode"] is None
    gone = charger_paths(view(connected=False))
    assert gone["/Connected"] == 0
    assert all(gone[p] is None for p in ("/Dc/0/Voltage", "/Dc/0/Current", "/State",
                                         "/ErrorCode"))
    assert gone["/ProductId"] == 0xA334 and gone["/Serial"] == "HQ2230XY6XR"
    nothing = charger_paths(None)
    assert nothing["/Connected"] == 0 and nothing["/ProductId"] is None
    assert set(nothing) == set(paths)  # the same paths whatever the charger does


def test_firmware_version_in_vedirect_form() -> None:
    fv = dbus_charger.firmware_version
    assert fv("0342FF") == 0x0342FF
    assert fv("0342") == 0x0342FF and fv("342") == 0x0342FF
    assert fv("v3.42") == "v3.42" and fv(None) is None and fv("") is None


def test_service_suffix() -> None:
    assert service_suffix("/dev/ttyUSB0") == "ttyUSB0"
    assert service_suffix("socket://127.0.0.1:4000") == "socket_127_0_0_1_4000"
    assert service_suffix("rfc2217://gx.local:2217") == "rfc2217_gx_local_2217"
    assert service_suffix("HQ2230XY6XR") == "HQ2230XY6XR"
    assert service_suffix("2230-ab") == "c2230-ab"
    assert service_suffix("/dev/serial/by-id/usb-FTDI_FT232R-if00") == (
        "serial_by-id_usb-FTDI_FT232R-if00")
    assert service_suffix("") == "charger" and service_suffix("://") == "charger"
    assert dbus_charger.settings_id("bridge-http_10.0.0.5") == "bridge_http_10_0_0_5"
    assert dbus_charger.settings_id("_x") == "x"


def test_the_modules_run_on_the_pythons_venus_ships() -> None:
    """3.8 (Venus up to v3.5x) and later, checked by vermin without running them."""
    from conftest import need_tool

    vermin = need_tool("vermin")
    out = subprocess.run([vermin, "--no-tips", "-t=3.8-", "--violations",
                          dbus_charger.__file__, dbus_grid.__file__],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# -- the charger's service on a real bus ----------------------------------------------------------


class Harness:
    """localsettings, the service (with a recorded on_mode), the log."""

    def __init__(self) -> None:
        self.modes: list[int] = []
        self.refuse: str | None = None
        self.names: list[str] = []
        self.lines: list[str] = []

    async def on_mode(self, value: int) -> str | None:
        self.modes.append(value)
        return self.refuse

    def service(self, bus: Any, suffix: str = SUFFIX, uid: str = UID,
                instance: int = 0) -> ChargerService:
        return ChargerService(bus, suffix, uid, "VE.Direct on /dev/ttyUSB0", "0.1.0",
                              self.on_mode, device_instance=instance,
                              on_custom_name=self.names.append, log=self.lines.append)


async def started(h: Harness, settings: bool = True, **kw: Any) -> tuple[Any, ChargerService]:
    if settings:
        await LocalSettings().start()
    bus = await connect()
    service = h.service(bus, **kw)
    service.publish(view())
    await service.start()
    return bus, service


def test_the_gui_reads_the_service_with_dbus_send(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h)
        items = await dbus_send("--dest=" + NAME, "/", BUSITEM + ".GetItems")
        values = {p: item["Value"] for p, item in items.items()}
        texts = {p: item["Text"] for p, item in items.items()}
        assert values["/ProductId"] == 0xA334 and texts["/ProductId"] == "0xA334"
        assert values["/Dc/0/Voltage"] == 25.79 and values["/Dc/0/Current"] == 7.38
        assert values["/FirmwareVersion"] == 0x0342FF and values["/State"] == 3
        assert values["/Mode"] == 1 and values["/Connected"] == 1
        assert values["/DeviceInstance"] == 0 and values["/Serial"] == "HQ2230XY6XR"
        assert values["/Mgmt/Connection"] == "VE.Direct on /dev/ttyUSB0"
        assert values["/Dc/0/Temperature"] == [] and texts["/Dc/0/Temperature"] == "---"
        assert values["/HardwareVersion"] == []  # invalid: an empty array
        assert set(values) == set(charger_paths(None))
        # single paths, as the GUI's VeQItem reads them
        assert await dbus_send("--dest=" + NAME, "/Dc/0/Voltage", BUSITEM + ".GetValue") == 25.79
        assert await dbus_send("--dest=" + NAME, "/ProductName", BUSITEM + ".GetText") == (
            "Blue Smart IP22 24/12 (1)")
        tree = await dbus_send("--dest=" + NAME, "/", BUSITEM + ".GetValue")
        assert tree["Dc/0/Voltage"] == 25.79 and tree["ProductId"] == 0xA334
        sub = await dbus_send("--dest=" + NAME, "/Dc/0", BUSITEM + ".GetValue")
        assert sub == {"Voltage": 25.79, "Current": 7.38, "Temperature": []}
        with pytest.raises(DbusSendError, match="UnknownObject|UnknownMethod|does not exist"):
            await dbus_send("--dest=" + NAME, "/Ac/In/L1/I", BUSITEM + ".GetValue")
        # the values follow the views
        service.publish(view(voltage_v=26.1, current_a=3.5, state_code=4, mode="manual",
                             switched_off=True))
        assert await dbus_send("--dest=" + NAME, "/Dc/0/Voltage", BUSITEM + ".GetValue") == 26.1
        assert await dbus_send("--dest=" + NAME, "/State", BUSITEM + ".GetValue") == 4
        assert await dbus_send("--dest=" + NAME, "/Mode", BUSITEM + ".GetValue") == 4
        # the client library's way: dbus-next with introspection
        client = await connect()
        node = await client.introspect(NAME, "/Dc/0/Current")
        item = client.get_proxy_object(NAME, "/Dc/0/Current", node).get_interface(BUSITEM)
        assert (await item.call_get_value()).value == 3.5
        assert (await item.call_get_text()) == "3.5"

    run(main())


def test_mode_writes_go_through_on_mode_and_bad_writes_are_refused(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h)

        async def write(path: str, value: str) -> int:
            return await dbus_send("--dest=" + NAME, path, BUSITEM + ".SetValue", value)

        assert await write("/Mode", "variant:int32:4") == 0
        assert h.modes == [4]
        # the published /Mode follows the next view, not the write
        assert await dbus_send("--dest=" + NAME, "/Mode", BUSITEM + ".GetValue") == 1
        assert await write("/Mode", "variant:int32:1") == 0
        assert await write("/Mode", "variant:double:4") == 0  # velib compares values too
        assert h.modes == [4, 1, 4]
        assert await write("/Mode", "variant:int32:7") == 1
        assert await write("/Mode", "variant:string:off") == 1
        assert await write("/Mode", "variant:double:1.5") == 1
        assert h.modes == [4, 1, 4]  # never called for those
        h.refuse = "config invalid, safe mode"
        assert await write("/Mode", "variant:int32:1") == 2
        assert any("refused: config invalid" in line for line in h.lines)
        assert await write("/Dc/0/Voltage", "variant:double:12.0") == 1
        assert await write("/ProductId", "variant:int32:1") == 1
        assert await write("/", "variant:int32:1") == 1
        assert await dbus_send("--dest=" + NAME, "/Dc/0/Voltage", BUSITEM + ".GetValue") == 25.79
        # the custom name: a string of up to 32 characters
        assert await write("/CustomName", "variant:string:Garage charger") == 0
        assert h.names == ["Garage charger"]
        assert await dbus_send("--dest=" + NAME, "/CustomName", BUSITEM + ".GetValue") == (
            "Garage charger")
        assert await write("/CustomName", "variant:string:" + "x" * 33) == 1
        assert await write("/CustomName", "variant:int32:5") == 1
        assert service.custom_name == "Garage charger"
        assert service.counters["refused"] == 1

    run(main())


def test_a_failing_on_mode_is_a_refusal_not_a_crash(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h, settings=False)

        def broken(value: int) -> None:
            raise RuntimeError("the app is gone")

        service.on_mode = broken
        assert await dbus_send("--dest=" + NAME, "/Mode", BUSITEM + ".SetValue",
                               "variant:int32:4") == 2
        assert any("RuntimeError: the app is gone" in line for line in h.lines)
        assert await dbus_send("--dest=" + NAME, "/Connected", BUSITEM + ".GetValue") == 1

    run(main())


def test_a_second_instance_fails_clearly(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, first = await started(h)
        other = h.service(await connect())
        with pytest.raises(NameTaken, match="already on D-Bus.*another instance"):
            await other.start()
        assert not other.registered
        assert await dbus_send("--dest=" + NAME, "/Connected", BUSITEM + ".GetValue") == 1
        # another charger on another port is another service
        third = h.service(await connect(), suffix="ttyUSB1", uid="ip22_OTHER")
        await third.start()
        assert third.device_instance == 1  # charger:0 is the first one's

    run(main())


def test_device_instance_from_localsettings(dbus_daemon: Any) -> None:
    async def main() -> None:
        settings = await LocalSettings().start()
        settings.hold("vedirect_ttyUSB3", "charger:0")  # Victron's driver has charger:0
        h = Harness()
        service = h.service(await connect())
        await service.start()
        assert service.device_instance == 1 and service.instance_source == "localsettings"
        assert settings.calls == [
            ("Devices", UID + "/ClassAndVrmInstance", "s", "charger:0", "s", 0, 0),
            ("Devices", UID + "/CustomName", "s", "", "s", 0, 0)]
        assert await dbus_send("--dest=" + NAME, "/DeviceInstance", BUSITEM + ".GetValue") == 1
        assert settings.values["/Settings/Devices/%s/ClassAndVrmInstance" % UID] == "charger:1"
        # a name given in the GUI is kept in localsettings, as Victron's drivers keep it
        assert await dbus_send("--dest=" + NAME, "/CustomName", BUSITEM + ".SetValue",
                               "variant:string:Garage charger") == 0
        await until(lambda: settings.values.get("/Settings/Devices/%s/CustomName" % UID)
                    == "Garage charger", what="the name stored")
        await service.stop()
        # started again (the service restarted): the instance it was given is kept
        again = h.service(await connect(), instance=0)
        await again.start()
        assert again.device_instance == 1
        assert await dbus_send("--dest=" + NAME, "/CustomName", BUSITEM + ".GetValue") == (
            "Garage charger")  # and its name
        # changed in the GUI: the service registers again with the new one
        path = "/Settings/Devices/%s/ClassAndVrmInstance" % UID
        settings.written(path, dbus_charger.wrap("charger:7"))
        await until(lambda: again.device_instance == 7 and again.registered, what="instance 7")
        assert await dbus_send("--dest=" + NAME, "/DeviceInstance", BUSITEM + ".GetValue") == 7
        assert any("VRM instance 1 -> 7" in line for line in h.lines)

    run(main())


def test_without_localsettings_the_configured_instance_is_used(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h, settings=False, instance=5)
        assert service.device_instance == 5 and service.instance_source == "default"
        assert any("no localsettings" in line and "5 as configured" in line for line in h.lines)
        assert await dbus_send("--dest=" + NAME, "/DeviceInstance", BUSITEM + ".GetValue") == 5

    run(main())


class Listener:
    """A client that records the service's signals, as the GUI and systemcalc receive them."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.props: list[tuple[str, dict]] = []

    async def start(self, name: str) -> Listener:
        bus = await connect()
        bus.add_message_handler(self.on_message)
        await dbus_charger.add_match(
            bus, "type='signal',sender='%s',interface='%s'" % (name, BUSITEM))
        return self

    def on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "ItemsChanged":
            assert msg.path == "/" and msg.signature == "a{sa{sv}}"
            self.items.append({p: (c["Value"].value, c["Text"].value)
                               for p, c in msg.body[0].items()})
        elif msg.member == "PropertiesChanged":
            assert msg.signature == "a{sv}"
            self.props.append((msg.path, {k: v.value for k, v in msg.body[0].items()}))


def test_items_changed_carries_only_what_changed(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h)
        heard = await Listener().start(NAME)
        await asyncio.sleep(0.1)
        assert service.publish(view(voltage_v=25.8)) == 1
        await until(lambda: heard.items, what="ItemsChanged")
        assert heard.items == [{"/Dc/0/Voltage": (25.8, "25.8")}]
        await until(lambda: heard.props, what="PropertiesChanged")
        assert heard.props == [("/Dc/0/Voltage", {"Value": 25.8, "Text": "25.8"})]
        assert service.publish(view(voltage_v=25.8)) == 0  # nothing new: nothing sent
        service.publish(view(voltage_v=25.8, current_a=None, state_code=5))
        await until(lambda: len(heard.items) == 2, what="a second ItemsChanged")
        assert heard.items[1] == {"/Dc/0/Current": ([], "---"), "/State": (5, "5")}
        await asyncio.sleep(0.1)
        assert len(heard.items) == 2 and len(heard.props) == 3

    run(main())


def test_name_and_paths_survive_a_charger_restart(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h)
        watcher = await connect()
        owners: list[tuple] = []

        def on_owner(msg: Message) -> None:
            if msg.member == "NameOwnerChanged" and msg.body[0] == NAME:
                owners.append(tuple(msg.body))

        watcher.add_message_handler(on_owner)
        await dbus_charger.add_match(watcher, "type='signal',member='NameOwnerChanged'")
        before = await dbus_send("--dest=" + NAME, "/", BUSITEM + ".GetItems")
        # the charger restarts: the link is down, the app's status has lost its numbers
        down = view_from_status({"charger": {"connected": False}, "control": {"mode": "auto"}})
        service.publish(down)
        during = await dbus_send("--dest=" + NAME, "/", BUSITEM + ".GetItems")
        assert set(during) == set(before)
        assert during["/Connected"]["Value"] == 0
        assert during["/Dc/0/Voltage"]["Value"] == [] and during["/State"]["Value"] == []
        # who it is stays: the GUI shows which charger is disconnected
        assert during["/ProductName"]["Value"] == "Blue Smart IP22 24/12 (1)"
        assert during["/ProductId"]["Value"] == 0xA334
        assert during["/Serial"]["Value"] == "HQ2230XY6XR"
        assert during["/Mode"]["Value"] == 1  # the app's switch is still known
        service.publish(view(voltage_v=25.5))
        after = await dbus_send("--dest=" + NAME, "/", BUSITEM + ".GetItems")
        assert after["/Connected"]["Value"] == 1 and after["/Dc/0/Voltage"]["Value"] == 25.5
        assert owners == []  # the name never changed hands

    run(main())


def test_publish_while_the_bus_is_gone_does_not_fail(dbus_daemon: Any) -> None:
    async def main() -> None:
        h = Harness()
        bus, service = await started(h, settings=False)
        bus.disconnect()
        await bus.wait_for_disconnect()
        assert service.publish(view(voltage_v=20.0)) == 1  # kept, not sent, no exception
        assert service.values["/Dc/0/Voltage"] == 20.0

    run(main())


def test_a_burst_of_publishes_does_not_drop_the_bus(dbus_daemon: Any) -> None:
    """More signals than the socket takes at once (the daemon busy): dbus-next 0.2.3 alone
    would drop the connection at EAGAIN; with the service's writer they wait their turn."""
    assert dbus_charger.PATCHED

    async def main() -> None:
        h = Harness()
        bus, service = await started(h, settings=False)
        heard = await Listener().start(NAME)
        for i in range(2000):  # no await in between: all queued before the first write
            service.publish(view(voltage_v=round(20 + i / 100, 2),
                                 current_a=round(1 + i / 1000, 3)))
        await until(lambda: len(heard.items) == 2000 or not bus.connected, 15.0,
                    "every ItemsChanged")
        assert bus.connected, "the bus was dropped"
        assert heard.items[-1]["/Dc/0/Voltage"][0] == 39.99
        assert await dbus_send("--dest=" + NAME, "/Dc/0/Current", BUSITEM + ".GetValue") == 2.999

    run(main())


# -- the service under the Pythons Venus ships ----------------------------------------------------

SMOKE = textwrap.dedent("""
    import asyncio, sys
    from dbus_next import BusType
    from dbus_next.aio import MessageBus
    import dbus_charger
    import dbus_grid

    async def main():
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        service = dbus_charger.ChargerService(
            bus, sys.argv[1], "smoke", "test", "0.1.0", lambda v: None, log=lambda s: None)
        service.publish(dbus_charger.view_from_status(
            {"charger": {"connected": True, "pid": "0xA334", "voltage_v": 13.2},
             "control": {"mode": "auto"}}))
        await service.start()
        grid = dbus_grid.DbusGrid(bus, {"source": "sum", "interval_s": 1.0, "timeout_s": 2.0,
                                        "frozen_s": 60, "meter_unit": 30}, lambda s: None)
        task = asyncio.ensure_future(grid.run())
        while not grid.last_error:  # no systemcalc here: it says so
            await asyncio.sleep(0.05)
        assert grid.last_error.startswith("system:"), grid.last_error
        print("ready %d.%d" % sys.version_info[:2], flush=True)
        await asyncio.sleep(30)

    asyncio.run(main())
""")


def interpreters() -> list[str]:
    """This one always; the Pythons of Venus v3.5x (3.8) and v3.60+ (3.12) where installed."""
    return [sys.executable] + [p for p in VENUS_PYTHONS if os.path.exists(p)]


def test_the_service_starts_under_each_python_venus_ships(dbus_daemon: Any,
                                                          tmp_path: Path) -> None:
    """dbus-next copied alone beside our modules, as the package's ext/ carries it."""
    import dbus_next

    lib = tmp_path / "ext"
    shutil.copytree(Path(dbus_next.__file__).parent, lib / "dbus_next",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "smoke.py").write_text(SMOKE)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(
        [str(lib), str(ROOT / "venus_os"), str(ROOT / "firmware")]))
    seen = []
    for n, python in enumerate(interpreters()):
        suffix = "smoke%d" % n
        proc = subprocess.Popen([python, "-u", str(tmp_path / "smoke.py"), suffix], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("ready"):
                proc.kill()
                raise AssertionError("%s: %s%s" % (python, line, proc.stdout.read()))
            seen.append(line.split()[1])

            async def read() -> Any:
                return await dbus_send("--dest=com.victronenergy.charger." + suffix, "/",
                                       BUSITEM + ".GetItems")

            items = run(read())
            assert items["/ProductId"]["Value"] == 0xA334, python
            assert items["/Dc/0/Voltage"]["Value"] == 13.2, python
            assert items["/DeviceInstance"]["Value"] == 0, python
        finally:
            proc.kill()
            proc.wait(5)
            if proc.stdout:
                proc.stdout.close()
    expected = ["%d.%d" % sys.version_info[:2]] + [
        "3.8" if "3.8" in p else "3.12" for p in VENUS_PYTHONS if os.path.exists(p)]
    assert seen == expected


# -- the grid power from com.victronenergy.system -------------------------------------------------

SYSTEM_PATHS = {"/Ac/Grid/L1/Power": 120.0, "/Ac/Grid/L2/Power": -40.0,
                "/Ac/Grid/L3/Power": 10.0, "/Ac/Grid/NumberOfPhases": 3,
                "/Dc/Battery/Power": -250.0, "/Serial": "c0619ab12345"}
METER = "com.victronenergy.grid.cgwacs_ttyUSB0_mb1"


def grid_settings(**changes: Any) -> dict:
    s = {"source": "sum", "interval_s": 1.0, "timeout_s": 2.0, "frozen_s": 60,
         "meter_unit": 30}
    s.update(changes)
    return s


class Grid:
    """DbusGrid running in the loop, with its samples counted."""

    def __init__(self, **settings: Any) -> None:
        self.lines: list[str] = []
        self.source = dbus_grid.DbusGrid(None, grid_settings(**settings), self.lines.append)
        self.samples = 0
        self.source.on_sample = self.sampled
        self.task: asyncio.Task | None = None

    def sampled(self) -> None:
        self.samples += 1

    async def start(self) -> Grid:
        self.task = asyncio.ensure_future(self.source.run())
        await until(lambda: self.source.reading.seq or self.source.last_error, what="a start")
        return self

    @property
    def reading(self) -> Any:
        return self.source.reading

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        GRID_BUSES.append(self.source.bus)

    async def next_sample(self, what: str = "a sample", timeout: float = 3.0) -> Any:
        seq = self.reading.seq
        await until(lambda: self.reading.seq > seq, timeout, what)
        return self.reading


async def with_grid(body: Callable[..., Awaitable[None]], meter: bool = True,
                    **settings: Any) -> None:
    system = await StandIn("com.victronenergy.system", SYSTEM_PATHS).start()
    grid_meter = None
    if meter:
        grid_meter = await StandIn(METER, {"/Connected": 1, "/Ac/L1/Power": 120.0}).start()
    grid = await Grid(**settings).start()
    try:
        await body(grid, system, grid_meter)
    finally:
        await grid.stop()


def test_grid_follows_the_system_service_by_its_signals(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        r = grid.reading
        assert r.power_w == 90 and r.phases == [120, -40, 10] and r.battery_w == -250
        assert grid.source.meter_check() is True and grid.samples == r.seq
        # systemcalc's way: one ItemsChanged on / with what changed
        system.set({"/Ac/Grid/L1/Power": 1500.4, "/Dc/Battery/Power": 300.0})
        r = await grid.next_sample("the signal's value", timeout=0.5)
        assert r.power_w == 1470 and r.phases == [1500, -40, 10] and r.battery_w == 300
        # a single change comes as PropertiesChanged on its path
        system.set({"/Ac/Grid/L2/Power": 60.0}, batch=False)
        r = await grid.next_sample("the property's value", timeout=0.5)
        assert r.power_w == 1570
        assert grid.samples == r.seq and r.age_s() < 1
        status = grid.source.status()
        assert status["protocol"] == "dbus" and status["connected"] is True
        assert status["meter_check"] is True and status["meter"] == METER
        assert status["messages"] >= 2 and status["last_error"] is None
        # a path systemcalc did not change is not a sample: battery only
        seq = r.seq
        system.set({"/Dc/Battery/Power": 100.0})
        await asyncio.sleep(0.3)
        assert grid.reading.seq == seq

    run(with_grid(body))


def test_grid_source_setting_picks_a_phase_or_the_sum(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        for source, watts in (("L1", 120), ("L2", -40), ("L3", 10), ("sum", 90)):
            grid.source.s["source"] = source
            grid.source.reconnect()  # the app's live settings change
            r = await grid.next_sample(source)
            assert r.power_w == watts, source
        # single phase: L2 and L3 invalid are no part of the sum, a missing L2 is an error
        system.set({"/Ac/Grid/L2/Power": None, "/Ac/Grid/L3/Power": None,
                    "/Ac/Grid/NumberOfPhases": 1})
        await until(lambda: grid.source.last_error, what="L2 after a number")
        assert "L2 invalid" in grid.source.last_error

    run(with_grid(body))


def test_grid_single_phase_from_the_start(dbus_daemon: Any) -> None:
    async def main() -> None:
        await StandIn("com.victronenergy.system", dict(
            SYSTEM_PATHS, **{"/Ac/Grid/L2/Power": None, "/Ac/Grid/L3/Power": None,
                             "/Ac/Grid/NumberOfPhases": 1})).start()
        grid = await Grid().start()
        assert grid.reading.power_w == 120 and grid.reading.phases == [120, None, None]
        grid.source.s["source"] = "L2"
        grid.source.reconnect()
        await until(lambda: grid.source.last_error, what="no L2")
        assert grid.source.last_error == "null: no grid power on L2"
        await grid.stop()

    run(main())


def test_an_invalid_grid_value_is_no_sample(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        seq = grid.reading.seq
        system.set({"/Ac/Grid/L1/Power": None})  # invalid: an empty array
        await until(lambda: grid.source.last_error, what="an error")
        assert grid.source.last_error == "null: L1 invalid"
        assert grid.source.failures >= 1
        await asyncio.sleep(1.3)  # the fallback read finds it invalid too
        assert grid.reading.seq == seq and grid.source.failures >= 2
        assert grid.reading.power_w == 90  # the last good value, ageing
        system.set({"/Ac/Grid/L1/Power": 50.0})
        r = await grid.next_sample()
        assert r.power_w == 20 and grid.source.last_error is None and grid.source.failures == 0

    run(with_grid(body))


def test_no_sample_while_the_grid_meter_is_gone(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        seq = grid.reading.seq
        await meter.stop()  # the meter's service leaves the bus (RS485 cable out)
        await until(lambda: grid.source.meter_check() is False, what="the meter gone")
        assert "has gone" in grid.source.last_error
        # systemcalc substitutes the Multi's AC input: those are no grid readings
        system.set({"/Ac/Grid/L1/Power": 0.0, "/Ac/Grid/L2/Power": 0.0,
                    "/Ac/Grid/L3/Power": 0.0})
        await asyncio.sleep(1.3)
        assert grid.reading.seq == seq and grid.reading.power_w == 90
        assert grid.source.last_error.startswith("meter:") and grid.source.failures >= 2
        assert any("gone: no grid data" in line for line in grid.lines)
        back = await StandIn(METER, {"/Connected": 1}).start()
        await until(lambda: grid.source.meter_check() is True, what="the meter back")
        system.set({"/Ac/Grid/L1/Power": 700.0})
        r = await grid.next_sample("a sample with the meter back")
        assert r.power_w == 700 and grid.source.last_error is None
        # /Connected 0 on a meter that stays on the bus counts as gone too (a batch update)
        back.set({"/Connected": 0})
        await until(lambda: grid.source.meter_check() is False, what="disconnected")
        seq = grid.reading.seq
        system.set({"/Ac/Grid/L1/Power": 5.0})
        await asyncio.sleep(0.3)
        assert grid.reading.seq == seq
        back.set({"/Connected": 1}, batch=False)
        await until(lambda: grid.source.meter_check() is True, what="connected again")

    run(with_grid(body))


def test_without_a_meter_ever_the_system_value_is_unchecked(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: None) -> None:
        assert grid.reading.power_w == 90 and grid.source.meter_check() is None
        system.set({"/Ac/Grid/L1/Power": 200.0})
        assert (await grid.next_sample()).power_w == 170

    run(with_grid(body, meter=False))


def test_meter_check_off_with_meter_unit_0(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        await meter.stop()
        system.set({"/Ac/Grid/L1/Power": 0.0})
        assert (await grid.next_sample()).power_w == -30
        assert grid.source.meter_check() is None

    run(with_grid(body, meter_unit=0))


def test_a_frozen_grid_value_is_stale(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        # nothing changes: the fallback reads keep confirming it, a sample a meter period
        r = await grid.next_sample("a read confirming the value", timeout=2.5)
        assert r.power_w == 90 and grid.source.counters["reads"] >= 2
        await until(lambda: (grid.source.last_error or "").startswith("frozen"), 4.0,
                    "frozen")
        assert grid.source.last_error == "frozen: grid value unchanged for 2 s"
        seq = grid.reading.seq
        await asyncio.sleep(0.7)
        assert grid.reading.seq == seq
        system.set({"/Ac/Grid/L1/Power": 121.0})
        assert (await grid.next_sample()).power_w == 91

    run(with_grid(body, frozen_s=2, interval_s=0.5))


def test_a_change_without_a_signal_is_read_within_the_interval(dbus_daemon: Any) -> None:
    async def body(grid: Grid, system: StandIn, meter: StandIn) -> None:
        system.quietly({"/Ac/Grid/L3/Power": 510.0})
        r = await grid.next_sample("the fallback read", timeout=2.0)
        assert r.power_w == 590

    run(with_grid(body, interval_s=0.5))


def test_no_system_service_is_an_error_until_it_comes(dbus_daemon: Any) -> None:
    async def main() -> None:
        grid = await Grid().start()
        assert grid.source.last_error.startswith("system: no com.victronenergy.system")
        assert grid.reading.seq == 0 and grid.source.status()["connected"] is False
        await StandIn("com.victronenergy.system", SYSTEM_PATHS).start()
        r = await grid.next_sample("the system's first value")
        assert r.power_w == 90 and grid.source.last_error is None
        await grid.stop()

    run(main())


def test_what_on_restores_survives_a_restart(tmp_path: Path) -> None:
    """Held off from the GUI, then the GX reboots: On still goes back to the mode the user
    had (manual here), not to the default auto."""
    path = str(tmp_path / "gx-switch.json")
    switch = dbus_charger.ModeSwitch(path)
    assert switch.change(True) == {"mode": "auto", "manual_charging": True}  # none seen yet
    switch.seen(view(mode="manual", switched_off=False))
    switch.seen(view(mode="manual", switched_off=True))  # the GUI's own Off: not remembered
    assert dbus_charger.ModeSwitch(path).change(True) == {"mode": "manual",
                                                          "manual_charging": True}
    assert switch.change(False) == {"mode": "manual", "manual_charging": False}
    (tmp_path / "gx-switch.json").write_text("{not json")
    assert dbus_charger.ModeSwitch(path).last_on == "auto"  # a broken file: the default
