"""Run a simulated installation on real sockets: the charger's UART as a TCP server (and a pty),
Venus as a Modbus TCP server, and a small HTTP control interface (microdot) for faults."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
import tty
from typing import Any

from microdot import Microdot, Request

from tools.sim.plug import plug_app
from tools.sim.venus import VenusServer
from tools.sim.world import FAULTS, World, apply_fault

PUMP_PERIOD_S = 0.01  # the charger's wire is served in 10 ms slices
MAX_CLIENT_BACKLOG = 64 * 1024  # a client that stops reading is dropped, as a UART would drop

logging.getLogger("pymodbus").setLevel(logging.ERROR)


class Clock:
    """Simulated seconds since start: real time times `speed`."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed


class Pty:
    """The charger's UART as a pseudo-terminal: open the printed path at any baud rate."""

    def __init__(self, on_data: Any) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self._on_data = on_data
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except OSError as err:  # nobody reading: the bytes are lost, as on a real line
            if err.errno not in (errno.EAGAIN, errno.EIO):
                raise

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)


class Installation:
    def __init__(self, world: World, clock: Clock, host: str = "127.0.0.1") -> None:
        self.world = world
        self.clock = clock
        self.host = host
        self.venus_server = VenusServer(world.venus, host)
        self.endpoints: dict[str, str] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._servers: list[Any] = []
        self._pty: Pty | None = None
        self._pump: asyncio.Task | None = None
        self._stopped = asyncio.Event()

    # -- the charger's UART ---------------------------------------------------------------

    def _from_host(self, data: bytes) -> None:
        self.world.charger.receive(data, self.clock.now())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                self._from_host(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _to_host(self, data: bytes) -> None:
        for writer in list(self._writers):
            if writer.transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG:
                self._writers.discard(writer)
                writer.close()
                continue
            writer.write(data)
        if self._pty:
            self._pty.write(data)

    async def _run_pump(self) -> None:
        while True:
            now = self.clock.now()
            self.world.step(now)
            out = self.world.charger.poll(now)
            if out:
                self._to_host(out)
            await self.venus_server.apply_faults()
            await asyncio.sleep(PUMP_PERIOD_S)

    # -- control ----------------------------------------------------------------------------

    def control_app(self) -> Microdot:
        app = Microdot()

        @app.get("/")
        async def index(request: Request) -> Any:
            lines = ["Simulated installation. GET /state, GET /faults, POST /fault {name: value}."]
            lines += ["  %-22s %s" % item for item in FAULTS.items()]
            return "\n".join(lines) + "\n"

        @app.get("/state")
        async def state(request: Request) -> Any:
            return self.world.status()

        @app.get("/faults")
        async def faults(request: Request) -> Any:
            return FAULTS

        @app.post("/fault")
        async def fault(request: Request) -> Any:
            body = request.json
            if not isinstance(body, dict) or not body:
                return {"error": 'send a JSON object, e.g. {"venus.down": true}'}, 400
            try:
                for name, value in body.items():
                    apply_fault(self.world, name, value)
            except (ValueError, TypeError) as err:
                return {"error": str(err)}, 400
            await self.venus_server.apply_faults()
            return self.world.status()

        return app

    # -- lifecycle --------------------------------------------------------------------------

    async def start(
        self,
        charger_port: int = 0,
        venus_port: int = 0,
        control_port: int = 0,
        pty: bool = False,
        plug_port: int = 0,
    ) -> dict[str, str]:
        server = await asyncio.start_server(self._client, self.host, charger_port)
        self._servers.append(server)
        port = server.sockets[0].getsockname()[1]
        self.endpoints["charger"] = "socket://%s:%d" % (self.host, port)
        if pty:
            self._pty = Pty(self._from_host)
            self.endpoints["pty"] = self._pty.path
        self.venus_server.port = venus_port
        await self.venus_server.start()  # fixes the port, even when it starts "down"
        await self.venus_server.apply_faults()
        self.endpoints["venus"] = "%s:%d" % (self.host, self.venus_server.port)
        control = await self.control_app().start_server(
            self.host, control_port, start_serving=False
        )
        await control.start_serving()
        self._servers.append(control)
        self.endpoints["control"] = "http://%s:%d" % (
            self.host,
            control.sockets[0].getsockname()[1],
        )
        plug = await plug_app(self.world.charger, self.clock.now).start_server(
            self.host, plug_port, start_serving=False
        )
        await plug.start_serving()
        self._servers.append(plug)
        self.endpoints["plug"] = "%s:%d" % (self.host, plug.sockets[0].getsockname()[1])
        self._pump = asyncio.create_task(self._run_pump())
        return self.endpoints

    async def stop(self) -> None:
        if self._pump:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for writer in list(self._writers):
            writer.close()
        for server in self._servers:
            server.close()
        await self.venus_server.stop()
        if self._pty:
            self._pty.close()
        self._stopped.set()


class Background:
    """An installation on its own event loop in a thread, for tests and tools written in
    blocking style: `with Background(world, pty=True) as sim: sim.endpoints["pty"]`.
    Touch `sim.world` only through `sim.call(fn)`, which runs fn on the simulation's loop."""

    def __init__(self, world: World, speed: float = 1.0, pty: bool = False) -> None:
        self.world = world
        self.speed = speed
        self.pty = pty
        self.endpoints: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.installation: Installation | None = None

    def __enter__(self) -> "Background":
        self._thread.start()

        async def start() -> dict[str, str]:
            self.installation = Installation(self.world, Clock(self.speed))
            return await self.installation.start(pty=self.pty)

        self.endpoints = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def call(self, fn: Any) -> Any:
        async def run() -> Any:
            result = fn()
            if self.installation:
                await self.installation.venus_server.apply_faults()
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def now(self) -> float:
        assert self.installation
        return self.installation.clock.now()

    def __exit__(self, *exc: object) -> None:
        if self.installation:
            asyncio.run_coroutine_threadsafe(self.installation.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
