"""A private system bus for the Venus OS service's tests: a real dbus-daemon on a unix socket in
the test's tmp_path (anyone may own any name and send anything, as on a session bus), and
DBUS_SYSTEM_BUS_ADDRESS pointing at it, so the code under test and `dbus-send --system` find it
the way they find the GX's bus. Plus stand-ins for the Venus services the charger's service and
the grid source talk to (localsettings, systemcalc, a grid meter), and a reader of dbus-send's
--print-reply output.

Tests import the fixture: `from dbus_bus import dbus_daemon_fixture  # noqa: F401`. A missing
dbus-daemon fails the test in CI and skips it elsewhere (./dev test installs it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from dbus_next import BusType, Message, MessageFlag, MessageType, NameFlag, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method

from tools.dbus_daemon import DbusDaemon, DbusMissing

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUSITEM = "com.victronenergy.BusItem"


@pytest.fixture(name="dbus_daemon")
def dbus_daemon_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DbusDaemon]:
    """A private bus as the system bus of this process and of the processes it starts."""
    try:
        daemon = DbusDaemon(tmp_path / "dbus")
    except DbusMissing as err:
        if IN_CI:
            pytest.fail(str(err))
        pytest.skip(str(err))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", daemon.address)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    with daemon:
        yield daemon


BUSES: list[MessageBus] = []  # every connection connect() made, for disconnect_all()


async def connect() -> MessageBus:
    """A connection to the system bus (DBUS_SYSTEM_BUS_ADDRESS)."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    BUSES.append(bus)
    return bus


async def disconnect_all(*more: MessageBus | None) -> None:
    """Close what connect() opened (and `more`), before the test's loop ends."""
    buses = BUSES + [b for b in more if b is not None]
    BUSES.clear()
    for bus in buses:
        if bus.connected:
            bus.disconnect()
            try:
                await asyncio.wait_for(bus.wait_for_disconnect(), 2)
            except Exception:  # noqa: BLE001  gone either way
                pass
        bus._sock.close()  # dbus-next 0.2.3 shuts the socket down but never closes it


# -- dbus-send, as the GUI's own tools read a service ---------------------------------------------


async def dbus_send(*args: str, timeout: float = 5.0) -> Any:
    """`dbus-send --system --print-reply ARGS` without blocking the loop (the service under
    test answers from it); the reply parsed (a list when it has several values)."""
    exe = shutil.which("dbus-send")
    if exe is None:
        if IN_CI:
            pytest.fail("dbus-send is not installed (./dev test installs it)")
        pytest.skip("dbus-send is not installed")
    proc = await asyncio.create_subprocess_exec(
        exe, "--system", "--print-reply", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        raise DbusSendError(err.decode().strip())
    return parse_reply(out.decode())


class DbusSendError(RuntimeError):
    pass


class Entry:
    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value


def parse_reply(text: str) -> Any:
    """dbus-send's --print-reply text as Python values: arrays are lists, arrays of dict
    entries dicts, a variant its content (so an invalid value is [])."""
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    values = []
    i = 0
    while i < len(lines):
        value, i = _parse(lines, i)
        values.append(value)
    return values[0] if len(values) == 1 else values


SCALARS: dict[str, Callable[[str], Any]] = {
    "byte": int, "int16": int, "uint16": int, "int32": int, "uint32": int, "int64": int,
    "uint64": int, "double": float, "boolean": lambda s: s == "true",
}


def _parse(lines: list[str], i: int) -> tuple[Any, int]:
    line = lines[i]
    if line.startswith("variant"):
        lines[i] = line[len("variant"):].strip()
        return _parse(lines, i)
    if line in ("array [", "array [ ]", "array []"):
        items = []
        i += 1
        if line != "array [":
            return [], i
        while lines[i] != "]":
            item, i = _parse(lines, i)
            items.append(item)
        if items and all(isinstance(e, Entry) for e in items):
            return {e.key: e.value for e in items}, i + 1
        return items, i + 1
    if line == "dict entry(":
        key, i = _parse(lines, i + 1)
        value, i = _parse(lines, i)
        assert lines[i] == ")", lines[i]
        return Entry(key, value), i + 1
    kind, _, raw = line.partition(" ")
    if kind == "string" or kind == "object":
        m = re.match(r'(?:path )?"(.*)"$', raw)
        assert m, line
        return m.group(1), i + 1
    if kind in SCALARS:
        return SCALARS[kind](raw), i + 1
    raise ValueError("dbus-send output not understood: %r" % line)


# -- stand-ins for Venus's services ---------------------------------------------------------------


def wrap(value: Any) -> Variant:
    """As velib sends values: None is an empty int32 array (invalid)."""
    if value is None:
        return Variant("ai", [])
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("i", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("s", value)


class _Item(ServiceInterface):
    def __init__(self, owner: StandIn, path: str) -> None:
        super().__init__(BUSITEM)
        self.owner, self.path = owner, path

    @method()
    def GetValue(self) -> "v":  # noqa: F821, N802
        return wrap(self.owner.values.get(self.path))

    @method()
    def GetText(self) -> "s":  # noqa: F821, N802
        value = self.owner.values.get(self.path)
        return "---" if value is None else str(value)

    @method()
    def SetValue(self, value: "v") -> "i":  # noqa: F821, N802
        return self.owner.written(self.path, value)


class _Root(ServiceInterface):
    def __init__(self, owner: StandIn) -> None:
        super().__init__(BUSITEM)
        self.owner = owner

    @method()
    def GetItems(self) -> "a{sa{sv}}":  # noqa: F821, N802
        return {p: {"Value": wrap(v), "Text": Variant("s", "---" if v is None else str(v))}
                for p, v in self.owner.values.items()}


class StandIn:
    """A velib-style service with the given paths on its own connection: `set()` changes
    values and sends ItemsChanged as a batch does (systemcalc's way), or PropertiesChanged;
    `quietly()` changes them without a signal; `stop()` leaves the bus (NameOwnerChanged)."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self.name = name
        self.values = dict(values)
        self.bus: MessageBus | None = None

    async def start(self) -> StandIn:
        self.bus = await connect()
        self.bus.export("/", _Root(self))
        for path in self.values:
            self.export(path)
        await self.bus.request_name(self.name, NameFlag.DO_NOT_QUEUE)
        return self

    def export(self, path: str) -> None:
        assert self.bus is not None
        self.bus.export(path, _Item(self, path))

    def written(self, path: str, value: Variant) -> int:
        v = value.value
        self.set({path: None if v == [] else v}, batch=False)
        return 0

    def set(self, changes: dict[str, Any], batch: bool = True) -> None:
        self.values.update(changes)
        body = {p: {"Value": wrap(v), "Text": Variant("s", str(v))} for p, v in changes.items()}
        if batch:
            self._signal("/", "ItemsChanged", "a{sa{sv}}", [body])
        else:
            for path, change in body.items():
                self._signal(path, "PropertiesChanged", "a{sv}", [change])

    def quietly(self, changes: dict[str, Any]) -> None:
        self.values.update(changes)

    def _signal(self, path: str, member: str, signature: str, body: list) -> None:
        assert self.bus is not None
        self.bus.send(Message(message_type=MessageType.SIGNAL, path=path, interface=BUSITEM,
                              member=member, signature=signature, body=body,
                              flags=MessageFlag.NO_REPLY_EXPECTED))

    async def stop(self) -> None:
        if self.bus is not None and self.bus.connected:
            self.bus.disconnect()
            await self.bus.wait_for_disconnect()
            self.bus._sock.close()


class _Settings(ServiceInterface):
    def __init__(self, owner: LocalSettings) -> None:
        super().__init__("com.victronenergy.Settings")
        self.owner = owner

    @method()
    def AddSetting(  # noqa: N802
        self, group: "s", name: "s", default: "v", kind: "s", low: "v", high: "v"  # noqa: F821
    ) -> "i":  # noqa: F821
        return self.owner.add(group, name, default, kind, low, high)


class LocalSettings(StandIn):
    """com.victronenergy.settings as far as a driver uses it: AddSetting on /Settings (kept
    if it exists), GetValue/SetValue on the setting; a ClassAndVrmInstance gets the next free
    instance of its class, as localsettings' DevicesGroup does."""

    def __init__(self) -> None:
        super().__init__("com.victronenergy.settings", {})
        self.calls: list[tuple] = []

    async def start(self) -> LocalSettings:
        self.bus = await connect()
        self.bus.export("/Settings", _Settings(self))
        await self.bus.request_name(self.name, NameFlag.DO_NOT_QUEUE)
        return self

    def add(self, group: str, name: str, default: Variant, kind: str, low: Variant,
            high: Variant) -> int:
        self.calls.append((group, name, default.signature, default.value, kind,
                           low.value, high.value))
        path = "/Settings/%s/%s" % (group.strip("/"), name.strip("/"))
        if path in self.values:
            return 0
        value = default.value
        if path.endswith("/ClassAndVrmInstance"):
            value = self.free(value)
        self.values[path] = value
        self.export(path)
        return 0

    def free(self, value: str, path: str | None = None) -> str:
        kind, number = value.split(":")
        taken = {v for p, v in self.values.items()
                 if p.endswith("/ClassAndVrmInstance") and p != path}
        n = int(number)
        while "%s:%d" % (kind, n) in taken:
            n += 1
        return "%s:%d" % (kind, n)

    def written(self, path: str, value: Variant) -> int:
        v = value.value
        if path.endswith("/ClassAndVrmInstance"):
            v = self.free(v, path)
        self.set({path: v}, batch=False)
        return 0

    def hold(self, uid: str, value: str) -> None:
        """Another device's instance, as if it had registered before."""
        path = "/Settings/Devices/%s/ClassAndVrmInstance" % uid
        self.values[path] = value
        self.export(path)


async def until(check: Callable[[], Any], timeout: float = 3.0, what: str = "") -> Any:
    """Wait (in the loop) until check() is truthy; its value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if loop.time() > end:
            raise AssertionError("not within %s s: %s" % (timeout, what or check))
        await asyncio.sleep(0.02)
