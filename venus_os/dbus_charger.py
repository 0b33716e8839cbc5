"""The charger on the GX's D-Bus as `com.victronenergy.charger.<suffix>`: what Victron's own
VE.Direct driver publishes for an AC charger, so the GUI and VRM show it (voltage, current,
state, error, the on/off switch) whether the charger hangs on our USB cable or on an ESP32
adapter that we follow over the LAN.

The wire format is velib_python's (vedbus.py), which every Venus consumer expects: one object
per path with the interface com.victronenergy.BusItem (GetValue, GetText, SetValue), GetItems
and GetValue on `/`, an invalid value is an empty int array, changes go out as ItemsChanged on
`/` (only what changed) and PropertiesChanged on each changed path. The paths are exported
first, the name is claimed last with DO_NOT_QUEUE: a second instance fails instead of queueing,
and a consumer that sees the name finds every path (DbusMonitor skips a service without
/DeviceInstance).

dbus-next (pure Python, asyncio) because the service shares the firmware App's event loop.
publish() never waits on the bus: signals are queued and written when the socket is ready.
"""

from __future__ import annotations

import array
import asyncio
import inspect
import json
import os
import re
import socket
from typing import Any, Callable, Dict, Optional

from dbus_next import Message, MessageFlag, MessageType, NameFlag, RequestNameReply, Variant
from dbus_next.errors import DBusError
from dbus_next.service import ServiceInterface, method, signal

BUSITEM = "com.victronenergy.BusItem"
SETTINGS = "com.victronenergy.settings"
SETTINGS_IFACE = "com.victronenergy.Settings"
DBUS = "org.freedesktop.DBus"
PROCESS_NAME = "bluesmart-charger"
CALL_TIMEOUT_S = 5.0  # dbus-next's calls have none: a hung peer must not hang us
INVALID = Variant("ai", [])  # velib's VEDBUS_INVALID: an empty array of int32
CUSTOM_NAME_MAX = 32  # the GUI's limit
MODE_ON, MODE_OFF = 1, 4  # /Mode as the GUI switches it (gui-v2 PageAcCharger)
INT_SIGNATURES = ("y", "n", "q", "i", "u", "x", "t")
# the charger's identity: kept over a restart of the charger or of the link (the GUI keeps
# showing which charger is disconnected), where a view has lost it
IDENTITY = ("product_id", "product_name", "firmware", "serial")

View = Dict[str, Any]
Paths = Dict[str, Any]


class NameTaken(RuntimeError):
    """The service's name is already owned: another instance runs (or another charger was
    given the same port)."""


# -- the view: what the charger is doing, from the firmware's status -----------------------------


def view_from_status(status: dict) -> View:
    """The normalized view from `App.status()` (== GET /api/status): the "charger" and
    "control" sections. Lenient about types: in bridge mode the dict came over the LAN."""
    c = status.get("charger") or {}
    k = status.get("control") or {}
    charging = k.get("charging") if "charging" in k else c.get("charging")
    return {
        "connected": c.get("connected") is True,
        "product_id": _pid(c.get("pid")),
        "product_name": _text(c.get("model")),
        "firmware": _text(c.get("firmware")),
        "serial": _text(c.get("serial")),
        "voltage_v": _float(c.get("voltage_v")),
        "current_a": _float(c.get("current_a")),
        "temperature_c": _float(c.get("temperature_c")),
        "state_code": _int(c.get("state_code")),
        "error_code": _int(c.get("error_code")),
        "mode": k.get("mode") if k.get("mode") in ("auto", "manual", "off") else None,
        # manual and held off: what the GUI's Off (/Mode 4) sets; the app's mode "off" leaves
        # the charger alone (it charges by itself), which the GUI shows as On
        "switched_off": (k.get("mode") == "manual" and k.get("manual_charging") is False)
        if k.get("mode") in ("auto", "manual", "off") else None,
        "charging": charging if isinstance(charging, bool) else None,
        "can_switch_off": k.get("can_switch_off") if isinstance(k.get("can_switch_off"), bool)
        else None,
        "limit_a": _float(c.get("limit_a")),
    }


def _pid(value: Any) -> int | None:
    """"0xA334" (the status's form) or an int."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    if value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def firmware_version(text: Any) -> int | str | None:
    """/FirmwareVersion in VE.Direct form, as the GUI decodes it: "0342FF" (FWE) -> 0x0342FF
    (v3.42); "0342" or "342" (FW) -> 0x0342FF. Anything else stays a string: the GUI shows a
    string as it is."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str) or not text:
        return None
    if re.fullmatch(r"[0-9A-Fa-f]{3,4}", text):
        text = text.rjust(4, "0") + "FF"
    if re.fullmatch(r"[0-9A-Fa-f]{6}", text):
        return int(text, 16)
    return text


def charger_paths(
    view: View | None,
    *,
    process_name: str = PROCESS_NAME,
    process_version: str | None = None,
    connection: str | None = None,
    device_instance: int | None = None,
    custom_name: str | None = "",
) -> Paths:
    """Every path of the service and its value (None: invalid) for a view: the mandatory ones,
    then the AC charger's as Victron's VE.Direct driver publishes them. Pure: the service
    diffs two of these. A disconnected charger keeps its paths, its measurements go invalid."""
    v = view or {}
    on = v.get("connected") is True
    mode = v.get("mode")

    def measured(key: str) -> Any:
        return v.get(key) if on else None

    return {
        "/Mgmt/ProcessName": process_name,
        "/Mgmt/ProcessVersion": process_version,
        "/Mgmt/Connection": connection,
        "/DeviceInstance": device_instance,
        "/ProductId": v.get("product_id"),
        "/ProductName": v.get("product_name"),
        "/FirmwareVersion": firmware_version(v.get("firmware")),
        "/HardwareVersion": None,
        "/Connected": 1 if on else 0,
        "/CustomName": custom_name,
        "/Serial": v.get("serial"),
        "/NrOfOutputs": 1,
        "/Dc/0/Voltage": measured("voltage_v"),
        "/Dc/0/Current": measured("current_a"),
        "/Dc/0/Temperature": measured("temperature_c"),
        "/State": measured("state_code"),  # VE.Direct CS: the same numbers as Venus's enum
        "/ErrorCode": measured("error_code"),
        # the app's switch, known while the charger is away too: 4 held off (manual, not
        # charging), 1 on (auto, manual charging, or off: left to charge by itself)
        # (and never Off for a charger the app found it cannot switch off: it charges on)
        "/Mode": None if mode is None else (
            MODE_OFF if v.get("switched_off") and v.get("can_switch_off") is not False
            else MODE_ON),
    }


class ModeSwitch:
    """The GUI's /Mode switch as a change of the app's settings, the same for the service on
    the GX and the bridge: Off (4) is manual mode holding the charger off; On (1) is the mode
    it was in before (auto if none was seen), charging. The app's own mode "off" leaves the
    charger to charge by itself, which is not what the GUI's Off means."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path  # where last_on survives a restart while held off (None: nowhere)
        self.last_on = "auto"
        if path:
            try:
                with open(path) as f:
                    kept = json.load(f).get("last_on")
                if kept in ("auto", "manual", "off"):
                    self.last_on = kept
            except (OSError, ValueError, AttributeError):
                pass

    def seen(self, view: View) -> None:
        """Remember the mode the GUI's On goes back to (any but the GUI's own Off)."""
        if view.get("mode") in ("auto", "manual", "off") and view.get("switched_off") is False:
            if view["mode"] != self.last_on:
                self.last_on = view["mode"]
                self._keep()

    def _keep(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path + ".tmp", "w") as f:
                json.dump({"last_on": self.last_on}, f)
            os.replace(self.path + ".tmp", self.path)
        except OSError:
            pass  # a read-only or full /data: remembered until the restart

    @staticmethod
    def refused(view: View, on: bool) -> str | None:
        """Why the GUI's Off cannot be done (the charger would go on charging while /Mode
        read Off), or None."""
        if not on and view.get("can_switch_off") is False:
            return ("this charger cannot be switched off (no 0x0200, 0x2015 = 0 is not off "
                    "on it, no plug configured)")
        return None

    def change(self, on: bool) -> dict:
        if on:
            return {"mode": self.last_on, "manual_charging": True}
        return {"mode": "manual", "manual_charging": False}


def service_suffix(text: str) -> str:
    """A bus-name element from a port ("/dev/ttyUSB0" -> "ttyUSB0", "socket://127.0.0.1:4000"
    -> "socket_127_0_0_1_4000") or an adapter's serial: [A-Za-z0-9_-], not starting with a
    digit (the D-Bus spec), never empty."""
    text = text.strip()
    if text.startswith("/dev/"):
        text = text[len("/dev/"):]
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", text.replace("://", "_")).strip("_-")[:64]
    if not text:
        return "charger"
    return "c" + text if text[0].isdigit() else text


def settings_id(unique_id: str) -> str:
    """The unique id as one element of a localsettings path: [A-Za-z0-9_] (object path rules),
    no leading underscore (localsettings refuses "/_" in a path)."""
    text = re.sub(r"[^A-Za-z0-9_]+", "_", unique_id).strip("_")[:64]
    return text or "bluesmart_charger"


# -- small D-Bus helpers (dbus_grid.py uses them too) --------------------------------------------


def wrap(value: Any) -> Variant:
    """A value as velib's wrap_dbus_value sends it; None is invalid."""
    if value is None:
        return INVALID
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("i", value) if -(2**31) <= value < 2**31 else Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, str):
        return Variant("s", value)
    raise TypeError("no D-Bus form for %r" % (value,))


def unwrap_number(value: Any) -> float | None:
    """A number from a variant; None for invalid (an empty array) and anything not a number."""
    if isinstance(value, Variant):
        if value.signature not in INT_SIGNATURES and value.signature != "d":
            return None
        value = value.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def text_of(path: str, value: Any) -> str:
    """GetText: "---" for invalid, the product id in hex, else str() as velib does."""
    if value is None:
        return "---"
    if path == "/ProductId" and isinstance(value, int):
        return "0x%X" % value
    return str(value)


async def call(bus: Any, destination: str, path: str, interface: str, member: str,
               signature: str = "", body: list | None = None,
               timeout: float = CALL_TIMEOUT_S) -> list:
    """One method call; its reply's body. DBusError for an error reply, asyncio.TimeoutError
    when the peer does not answer in `timeout`."""
    msg = Message(destination=destination, path=path, interface=interface, member=member,
                  signature=signature, body=body or [])
    reply = await asyncio.wait_for(bus.call(msg), timeout)
    if reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
    return reply.body


async def add_match(bus: Any, rule: str) -> None:
    await call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", [rule])


def signal_message(path: str, member: str, signature: str, body: list) -> Message:
    """A BusItem signal, sent without waiting for anything (as aiovelib does)."""
    return Message(message_type=MessageType.SIGNAL, path=path, interface=BUSITEM,
                   member=member, signature=signature, body=body,
                   flags=MessageFlag.NO_REPLY_EXPECTED)


# -- dbus-next 0.2.3's writer, made to wait for a full socket -------------------------------------


def _write_when_ready(writer: Any) -> None:
    """The socket is writable: send queued messages until the queue is empty or the socket is
    full again. dbus-next 0.2.3 treats a full socket (EAGAIN) as a broken connection and
    drops the bus (python-dbus-next#153, its fix #154 unmerged): a burst of signals while the
    daemon is busy would take the charger off the GX. Here a full socket waits for the loop's
    next "writable", as asyncio's own transports do; any other error still ends the bus."""
    try:
        while True:
            if writer.buf is None:
                if writer.messages.qsize() == 0:
                    writer.loop.remove_writer(writer.fd)
                    return
                data, writer.unix_fds, writer.fut = writer.messages.get_nowait()
                writer.buf, writer.offset = memoryview(data), 0
            rest = writer.buf[writer.offset:]
            try:
                if writer.unix_fds and writer.negotiate_unix_fd:
                    fds = array.array("i", writer.unix_fds)
                    sent = writer.sock.sendmsg([rest], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                         fds)])
                    writer.unix_fds = None
                else:
                    sent = writer.sock.send(rest)
            except (BlockingIOError, InterruptedError):
                return  # still registered: called again once the daemon has read
            writer.offset += sent
            if writer.offset < len(writer.buf):
                continue
            writer.buf = None
            if writer.fut is not None and not writer.fut.done():
                writer.fut.set_result(None)
    except Exception as err:  # a real failure: as dbus-next does, the bus ends
        if writer.fut is not None and not writer.fut.done():
            writer.fut.set_exception(err)
        writer.bus._finalize(err)


def patch_dbus_next() -> bool:
    """Put the writer above into dbus-next 0.2.3 (the version pinned and shipped); another
    version is left alone. True if patched. Runs at import: a bus made before is covered
    too (the writer looks the method up each time it registers)."""
    from dbus_next.__version__ import __version__
    from dbus_next.aio import message_bus as aio

    writer = getattr(aio, "_MessageWriter", None)
    if __version__ != "0.2.3" or writer is None or not hasattr(writer, "write_callback"):
        return False
    writer.write_callback = _write_when_ready
    return True


PATCHED = patch_dbus_next()


# -- the exported objects -------------------------------------------------------------------------


class _Item(ServiceInterface):
    """One path: GetValue, GetText, SetValue (writes go to the service, which decides)."""

    def __init__(self, service: ChargerService, path: str) -> None:
        super().__init__(BUSITEM)
        self._service = service
        self._path = path

    @method()
    def GetValue(self) -> "v":  # noqa: F821, N802
        return wrap(self._service.values.get(self._path))

    @method()
    def GetText(self) -> "s":  # noqa: F821, N802
        return text_of(self._path, self._service.values.get(self._path))

    @method()
    async def SetValue(self, value: "v") -> "i":  # noqa: F821, N802
        return await self._service.set_value(self._path, value)

    @signal()
    def PropertiesChanged(self, changes) -> "a{sv}":  # noqa: F821, N802
        """For introspection: the service sends it itself (without a reply expected)."""
        return changes


class _Tree(ServiceInterface):
    """`/` and each inner node (/Dc, /Dc/0, /Mgmt): GetValue and GetText give the subtree as
    {relative path: value} as velib's VeDbusTreeExport does; `/` also answers GetItems."""

    def __init__(self, service: ChargerService, path: str) -> None:
        super().__init__(BUSITEM)
        self._service = service
        self._prefix = path.rstrip("/") + "/"

    def _subtree(self) -> dict:
        n = len(self._prefix)
        return {p[n:]: v for p, v in self._service.values.items() if p.startswith(self._prefix)}

    @method()
    def GetValue(self) -> "v":  # noqa: F821, N802
        return Variant("a{sv}", {p: wrap(v) for p, v in self._subtree().items()})

    @method()
    def GetText(self) -> "v":  # noqa: F821, N802
        n = self._prefix
        return Variant("a{ss}", {p: text_of(n + p, v) for p, v in self._subtree().items()})

    @method()
    def SetValue(self, value: "v") -> "i":  # noqa: F821, N802
        return 1


class _Root(_Tree):
    @method()
    def GetItems(self) -> "a{sa{sv}}":  # noqa: F821, N802
        return self._service.items()

    @signal()
    def ItemsChanged(self, changes) -> "a{sa{sv}}":  # noqa: F821, N802
        """For introspection: the service sends it itself (without a reply expected)."""
        return changes


# -- the service ----------------------------------------------------------------------------------


class ChargerService:
    """com.victronenergy.charger.<suffix>: start() once, then publish(view) as often as the
    charger says something new. /Mode and /CustomName are writable; a /Mode write goes through
    `on_mode(1 | 4) -> error text | None` (the app's one way in), and the published /Mode
    follows the next view, not the write."""

    PER_PATH_SIGNALS = True  # PropertiesChanged per path besides ItemsChanged (older readers)

    def __init__(
        self,
        bus: Any,
        suffix: str,
        unique_id: str,
        connection: str,
        process_version: str,
        on_mode: Callable[[int], Any],
        device_instance: int = 0,
        on_custom_name: Callable[[str], Any] | None = None,
        *,
        custom_name: str = "",
        process_name: str = PROCESS_NAME,
        log: Callable[[str], None] = print,
        settings_wait_s: float = 0.0,
    ) -> None:
        self.bus = bus
        self.name = "com.victronenergy.charger." + service_suffix(suffix)
        self.unique_id = unique_id
        self.settings_path = "/Settings/Devices/%s/ClassAndVrmInstance" % settings_id(unique_id)
        # the GUI's name for the device, kept where Victron's drivers keep it
        self.name_path = "/Settings/Devices/%s/CustomName" % settings_id(unique_id)
        self.on_mode = on_mode
        self.on_custom_name = on_custom_name
        self.log = log
        self.settings_wait_s = settings_wait_s
        self.device_instance = device_instance
        self.instance_source = "default"  # or "localsettings"
        self._fixed = {
            "process_name": process_name,
            "process_version": process_version,
            "connection": connection,
        }
        self.custom_name = custom_name[:CUSTOM_NAME_MAX]
        self.view: View | None = None
        self._identity: View = {}
        self.values: Paths = self._paths()
        self._objects: list[str] = []
        self.registered = False
        self._watching = False  # following the VRM instance setting
        self.counters = {"publishes": 0, "changes": 0, "signals": 0, "writes": 0,
                         "refused": 0}

    # -- start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        """The VRM instance from localsettings, every path, then the name. NameTaken if it is
        owned already (a second instance)."""
        self.device_instance = await self._vrm_instance()
        if self.instance_source == "localsettings":
            await self._stored_custom_name()
        self.values = self._paths()
        self._export()
        await self._claim()
        await self._watch_instance()
        self.log("D-Bus: %s, VRM instance %d (%s)"
                 % (self.name, self.device_instance, self.instance_source))

    def _export(self) -> None:
        nodes = {"/"}
        for path in self.values:
            parts = path.split("/")
            nodes.update("/".join(parts[:i]) for i in range(2, len(parts)))
        for node in sorted(nodes):
            self.bus.export(node, _Root(self, node) if node == "/" else _Tree(self, node))
            self._objects.append(node)
        for path in self.values:
            self.bus.export(path, _Item(self, path))
            self._objects.append(path)

    async def _claim(self) -> None:
        try:
            reply = await asyncio.wait_for(
                self.bus.request_name(self.name, NameFlag.DO_NOT_QUEUE), CALL_TIMEOUT_S)
        except (DBusError, asyncio.TimeoutError) as err:
            self._unexport()
            raise NameTaken("cannot claim %s: %s" % (self.name, _why(err))) from None
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            owner = await self._owner(self.name)
            self._unexport()
            raise NameTaken(
                "%s is already on D-Bus (owner %s): another instance of this service is "
                "running, or another charger was given the same port" % (self.name, owner))
        self.registered = True

    async def _owner(self, name: str) -> str:
        try:
            return (await call(self.bus, DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner",
                               "s", [name]))[0]
        except (DBusError, asyncio.TimeoutError):
            return "unknown"

    def _unexport(self) -> None:
        for path in self._objects:
            self.bus.unexport(path)
        self._objects = []

    async def stop(self) -> None:
        """Off the bus: the name first (consumers see the service go), then the objects."""
        if self.registered and self.bus.connected:
            self.registered = False
            try:
                await asyncio.wait_for(self.bus.release_name(self.name), CALL_TIMEOUT_S)
            except (DBusError, asyncio.TimeoutError):
                pass
        self.registered = False
        self._unexport()
        if self._watching:
            self._watching = False
            self.bus.remove_message_handler(self._on_message)

    # -- the VRM instance ------------------------------------------------------------------------

    async def _vrm_instance(self) -> int:
        """localsettings' ClassAndVrmInstance for our unique id ("charger:<n>" asked; the next
        free one is given if n is taken, and kept); the configured one without localsettings."""
        asked = self.device_instance
        if not await self._settings_present():
            self.log("D-Bus: no localsettings (com.victronenergy.settings): VRM instance %d "
                     "as configured" % asked)
            return asked
        group, name = self.settings_path[len("/Settings/"):].split("/", 1)
        try:
            rc = (await call(self.bus, SETTINGS, "/Settings", SETTINGS_IFACE, "AddSetting",
                             "ssvsvv", [group, name, Variant("s", "charger:%d" % asked), "s",
                                        Variant("i", 0), Variant("i", 0)]))[0]
            if rc != 0:
                self.log("D-Bus: localsettings AddSetting %s answered %s" % (name, rc))
            got = (await call(self.bus, SETTINGS, self.settings_path, BUSITEM, "GetValue"))[0]
        except (DBusError, asyncio.TimeoutError) as err:
            self.log("D-Bus: localsettings failed (%s): VRM instance %d as configured"
                     % (_why(err), asked))
            return asked
        instance = _charger_instance(got.value if isinstance(got, Variant) else got)
        if instance is None:
            self.log("D-Bus: %s is %r, not charger:<n>: VRM instance %d as configured"
                     % (self.settings_path, got, asked))
            return asked
        self.instance_source = "localsettings"
        return instance

    async def _stored_custom_name(self) -> None:
        """/CustomName as localsettings keeps it (added empty the first time)."""
        group, name = self.name_path[len("/Settings/"):].split("/", 1)
        try:
            await call(self.bus, SETTINGS, "/Settings", SETTINGS_IFACE, "AddSetting", "ssvsvv",
                       [group, name, Variant("s", ""), "s", Variant("i", 0), Variant("i", 0)])
            got = (await call(self.bus, SETTINGS, self.name_path, BUSITEM, "GetValue"))[0]
        except (DBusError, asyncio.TimeoutError) as err:
            self.log("D-Bus: the custom name is not kept: %s" % _why(err))
            return
        value = got.value if isinstance(got, Variant) else got
        if isinstance(value, str) and value:
            self.custom_name = value[:CUSTOM_NAME_MAX]

    async def _store_custom_name(self, name: str) -> None:
        if self.instance_source != "localsettings":
            return
        try:
            await call(self.bus, SETTINGS, self.name_path, BUSITEM, "SetValue", "v",
                       [Variant("s", name)])
        except (DBusError, asyncio.TimeoutError) as err:
            self.log("D-Bus: the custom name is not kept: %s" % _why(err))

    async def _settings_present(self) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.settings_wait_s
        while True:
            try:
                has = (await call(self.bus, DBUS, "/org/freedesktop/DBus", DBUS, "NameHasOwner",
                                  "s", [SETTINGS]))[0]
            except (DBusError, asyncio.TimeoutError):
                return False
            if has or loop.time() >= end:
                return bool(has)
            await asyncio.sleep(0.5)

    async def _watch_instance(self) -> None:
        """The VRM instance changed in the GUI (Device > VRM instance writes the setting): the
        service re-registers with it, as Victron's drivers restart on that change."""
        if self.instance_source != "localsettings" or self._watching:
            return
        self._watching = True
        self.bus.add_message_handler(self._on_message)
        try:
            await add_match(self.bus, "type='signal',sender='%s',interface='%s',path='%s'"
                            % (SETTINGS, BUSITEM, self.settings_path))
            await add_match(self.bus, "type='signal',sender='%s',interface='%s',path='/',"
                            "member='ItemsChanged'" % (SETTINGS, BUSITEM))
        except (DBusError, asyncio.TimeoutError) as err:
            self.log("D-Bus: cannot follow the VRM instance setting: %s" % _why(err))

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.interface != BUSITEM:
            return None
        value = None
        if msg.member == "PropertiesChanged" and msg.path == self.settings_path:
            if msg.signature == "a{sv}":
                value = msg.body[0].get("Value")
        elif msg.member == "ItemsChanged" and msg.path == "/" and msg.signature == "a{sa{sv}}":
            change = msg.body[0].get(self.settings_path)
            value = change.get("Value") if change else None
        if value is None:
            return None
        instance = _charger_instance(value.value if isinstance(value, Variant) else value)
        if instance is not None and instance != self.device_instance and self.registered:
            asyncio.ensure_future(self._reregister(instance))
        return None

    async def _reregister(self, instance: int) -> None:
        self.log("D-Bus: VRM instance %d -> %d: registering again"
                 % (self.device_instance, instance))
        self.registered = False
        try:
            await asyncio.wait_for(self.bus.release_name(self.name), CALL_TIMEOUT_S)
        except (DBusError, asyncio.TimeoutError) as err:
            self.log("D-Bus: release %s: %s" % (self.name, _why(err)))
        self.device_instance = instance
        self.values = self._paths()
        try:
            await self._claim()
        except (NameTaken, DBusError, asyncio.TimeoutError) as err:
            self.log("D-Bus: %s" % _why(err))

    # -- values ----------------------------------------------------------------------------------

    def _paths(self) -> Paths:
        view = dict(self.view or {})
        for key in IDENTITY:
            if view.get(key) is None and self._identity.get(key) is not None:
                view[key] = self._identity[key]
        return charger_paths(view, device_instance=self.device_instance,
                             custom_name=self.custom_name, **self._fixed)

    def items(self) -> dict:
        """GetItems: {path: {"Value": v, "Text": s}} for every path."""
        return {p: {"Value": wrap(v), "Text": Variant("s", text_of(p, v))}
                for p, v in self.values.items()}

    def publish(self, view: View) -> int:
        """The paths for this view; one ItemsChanged with what changed (and PropertiesChanged
        on each changed path). Never waits: the messages are queued. How many paths changed."""
        self.counters["publishes"] += 1
        self.view = view
        for key in IDENTITY:
            if view.get(key) is not None:
                self._identity[key] = view[key]
        return self._update(self._paths())

    def _update(self, new: Paths) -> int:
        old = self.values
        changed = {p: v for p, v in new.items()
                   if p not in old or old[p] != v or type(old[p]) is not type(v)}
        self.values = new
        if not changed:
            return 0
        self.counters["changes"] += len(changed)
        if self.registered and self.bus.connected:
            self._signal(changed)
        return len(changed)

    def _signal(self, changed: Paths) -> None:
        body = {}
        for path, value in changed.items():
            body[path] = {"Value": wrap(value), "Text": Variant("s", text_of(path, value))}
        self._send(signal_message("/", "ItemsChanged", "a{sa{sv}}", [body]))
        if self.PER_PATH_SIGNALS:
            for path, change in body.items():
                self._send(signal_message(path, "PropertiesChanged", "a{sv}", [change]))

    def _send(self, msg: Message) -> None:
        self.counters["signals"] += 1
        self.bus.send(msg).add_done_callback(_quiet)

    # -- writes ----------------------------------------------------------------------------------

    async def set_value(self, path: str, value: Any) -> int:
        """SetValue: 0 done, 1 not writable or a bad value, 2 refused by the app."""
        self.counters["writes"] += 1
        if path == "/Mode":
            return await self._set_mode(value)
        if path == "/CustomName":
            return await self._set_custom_name(value)
        return 1

    async def _set_mode(self, value: Any) -> int:
        number = unwrap_number(value)
        if number not in (MODE_ON, MODE_OFF):
            self.log("D-Bus: /Mode %r refused: only 1 (on) and 4 (off)" % (_plain(value),))
            return 1
        error = await _outcome(self.on_mode, int(number))
        if error:
            self.counters["refused"] += 1
            self.log("D-Bus: /Mode %d refused: %s" % (number, error))
            return 2
        self.log("D-Bus: /Mode %d (%s) from D-Bus" % (number, "off" if number == MODE_OFF
                                                            else "on"))
        return 0

    async def _set_custom_name(self, value: Any) -> int:
        if not isinstance(value, Variant) or value.signature != "s":
            return 1
        name = value.value
        if len(name) > CUSTOM_NAME_MAX:
            return 1
        if name == self.custom_name:
            return 0
        if self.on_custom_name is not None:
            error = await _outcome(self.on_custom_name, name)
            if error:
                self.counters["refused"] += 1
                self.log("D-Bus: /CustomName refused: %s" % error)
                return 2
        self.custom_name = name
        self._update(self._paths())
        await self._store_custom_name(name)
        return 0


async def _outcome(callback: Callable[[Any], Any], value: Any) -> str | None:
    """A callback's error text (None: done), awaited if it is a coroutine; an exception is a
    refusal with its text, never a crash of the D-Bus handler."""
    try:
        result = callback(value)
        if inspect.isawaitable(result):
            result = await result
    except Exception as err:  # the app's failure: the write is refused, the service goes on
        return "%s: %s" % (type(err).__name__, err)
    return result if isinstance(result, str) and result else None


def _charger_instance(value: Any) -> Optional[int]:
    """m of "charger:<m>"."""
    if not isinstance(value, str):
        return None
    kind, _, number = value.partition(":")
    if kind != "charger" or not number.isdigit():
        return None
    return int(number)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


def _why(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "no answer in %s s" % CALL_TIMEOUT_S
    if isinstance(err, DBusError):
        return "%s: %s" % (err.type, err.text)
    return "%s: %s" % (type(err).__name__, err)


def _quiet(future: asyncio.Future) -> None:
    """A signal that could not be written (the bus went away) is dropped: retrieve the error so
    asyncio does not log it; the service's owner notices the lost bus."""
    if not future.cancelled():
        future.exception()
