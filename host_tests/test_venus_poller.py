"""venus.Poller (the firmware's Modbus TCP client, run on CPython) against the simulated Venus
(a real pymodbus server): the meter cross-check, connection time-outs and the hints in the
errors a user sees first (venus-notes: Access, Meter dropout)."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import config
import pytest
import venus
from aio import cancel
from conftest import FIRMWARE, need_tool
from tools.ports import free_port
from tools.sim.venus import Reading, VenusRegisters, VenusServer

MODBUS_TCP_HINT = "Modbus TCP is off by default on Venus (Settings > Services > Modbus TCP)"
UNIT_HINT = "not found (Settings > Services > Modbus TCP > Available services)"


def settings(port: int, **more: Any) -> dict[str, Any]:
    s = config.defaults()["venus"]
    s.update(host="127.0.0.1", port=port, interval_s=0.5, timeout_s=1.0)
    s.update(more)
    return s


async def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took for cond() to hold; fails after timeout."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("not within %s s: %s" % (timeout, what))
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def run_poller(
    test: Callable[[venus.Poller], Awaitable[None]], poller: venus.Poller, beat: Any = None
) -> None:
    """The poller's run() as a task beside the test, in one event loop."""

    async def main() -> None:
        task = asyncio.create_task(poller.run(beat))
        try:
            await test(poller)
        finally:
            await cancel(task)
            poller.reconnect()

    asyncio.run(main())


def with_venus(
    test: Callable[[VenusRegisters, int], Awaitable[None]],
    registers: VenusRegisters | None = None,
) -> None:
    async def main() -> None:
        regs = registers or VenusRegisters()
        server = VenusServer(regs)
        port = await server.start()
        try:
            await test(regs, port)
        finally:
            await server.stop()

    asyncio.run(main())


async def start(poller: venus.Poller) -> asyncio.Task[None]:
    return asyncio.create_task(poller.run())


async def stop(poller: venus.Poller, task: asyncio.Task[None]) -> None:
    await cancel(task)
    poller.reconnect()


# -- the meter cross-check ------------------------------------------------------------------


def test_meter_absent_at_start_is_asked_again_and_then_trusted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(venus, "METER_RETRY_S", 1, raising=False)

    async def test(regs: VenusRegisters, port: int) -> None:
        regs.faults.meter_dropout = True  # the firmware starts during a dropout
        regs.update(Reading(grid_w=(1200, 0, 0)))
        poller = venus.Poller(settings(port), log=lambda *_: None)
        task = await start(poller)
        try:
            await until(lambda: poller.reading.seq >= 2, 5, "readings")
            assert poller.meter is False and poller.reading.power_w == 0  # the trap, for now
            regs.faults.meter_dropout = False
            regs.update(Reading(grid_w=(1200, 0, 0)))
            took = await until(lambda: poller.meter is True, 4, "the meter asked again")
            assert took < venus.METER_RETRY_S + 2 * 0.5 + 1
            await until(lambda: poller.reading.power_w == 1200, 2, "the real grid value")
            assert poller.status()["meter_check"] is True and poller.last_error is None
            # once seen, the meter going is an error, never a fallback to 820-822's 0
            regs.faults.meter_dropout = True
            regs.update(Reading(grid_w=(1200, 0, 0)))
            await until(lambda: poller.last_error is not None, 3, "the meter error")
            assert poller.last_error == "exception: grid meter (unit 30): unit id 30 " + UNIT_HINT
            seq = poller.reading.seq
            await asyncio.sleep(1.5)
            assert poller.reading.seq == seq and poller.reading.power_w == 1200
            assert poller.errors["exception"] >= 2 and poller.meter is True
        finally:
            await stop(poller, task)

    with_venus(test)


def test_meter_asked_again_on_reconnect_and_on_a_new_unit() -> None:
    """How app.py applies saved settings: s.update(new), then reconnect(); the retry period
    (60 s) is not waited for."""

    async def test(regs: VenusRegisters, port: int) -> None:
        regs.update(Reading(grid_w=(-700, 0, 0)))
        logs: list[str] = []
        poller = venus.Poller(settings(port, meter_unit=31), log=logs.append)  # no meter there
        task = await start(poller)
        try:
            await until(lambda: poller.meter is False, 3, "no meter on unit 31")
            poller.s.update(meter_unit=30)  # the user corrects it
            await until(lambda: poller.meter is True, 2, "the meter on unit 30")
            regs.faults.meter_dropout = True
            poller.s.update(meter_unit=0)  # checking off: unknown, not an error
            await until(lambda: poller.meter is None, 2, "meter check off")
            poller.s.update(meter_unit=30)
            await until(lambda: poller.meter is False, 2, "unit 30 absent, learnt afresh")
            regs.faults.meter_dropout = False
            await asyncio.sleep(1.0)
            assert poller.meter is False  # not asked before the retry period ...
            poller.reconnect()  # ... but on a fresh connection
            await until(lambda: poller.meter is True, 3, "the meter after reconnect")
            assert "grid meter on unit 30 answers: cross-checking" in logs
        finally:
            await stop(poller, task)

    with_venus(test)


# -- connecting ---------------------------------------------------------------------------


@contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose queue is full: the kernel drops further
    SYNs, as a GX that is powered off (or a firewall) does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(16):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
            if not select.select([], [c], [], 0.3)[1]:
                break  # this one hangs: the queue is full
        else:
            pytest.skip("this kernel completes every connection: no full backlog")
        yield port
    finally:
        for c in fillers:
            c.close()
        server.close()


def test_connect_times_out_and_the_watchdog_is_fed_meanwhile() -> None:
    beats: list[float] = []
    with full_backlog() as port:
        poller = venus.Poller(settings(port, timeout_s=1.0), log=lambda *_: None)

        async def test(p: venus.Poller) -> None:
            took = await until(lambda: "timeout" in p.errors, 1.0 + 2, "a connect timeout")
            assert took >= 0.9
            assert p.last_error == "timeout: 127.0.0.1:%d: no connection in 1.0 s" % port
            await until(lambda: p.errors["timeout"] >= 3, 10, "time-outs with back-off")
            assert "refused" not in p.errors and not p.status()["connected"]

        start_at = time.monotonic()
        run_poller(test, poller, beat=lambda: beats.append(time.monotonic()))
    gaps = [b - a for a, b in zip([start_at] + beats, beats + [time.monotonic()])]
    assert max(gaps) < 1.0 + 0.5, gaps  # never longer than one connect attempt


def test_refused_says_modbus_tcp_is_off_by_default() -> None:
    port = free_port()  # nobody listens there
    poller = venus.Poller(settings(port), log=lambda *_: None)

    async def test(p: venus.Poller) -> None:
        await until(lambda: "refused" in p.errors, 2, "a refusal")
        assert p.last_error == "refused: 127.0.0.1:%d: %s" % (port, MODBUS_TCP_HINT)

    run_poller(test, poller)


@pytest.mark.parametrize("code", [0x0A, 0x0B], ids=["0x0A", "0x0B (older Venus)"])
def test_unknown_unit_says_where_to_look(code: int) -> None:
    async def test(regs: VenusRegisters, port: int) -> None:
        poller = venus.Poller(settings(port, unit=99), log=lambda *_: None)
        task = await start(poller)
        try:
            await until(lambda: poller.last_error is not None, 3, "an error")
            assert poller.last_error == "exception: unit id 99 " + UNIT_HINT
            assert poller.reading.seq == 0
        finally:
            await stop(poller, task)

    with_venus(test, VenusRegisters(unknown_unit_code=code))


class CrashingHop:
    """A TCP hop in front of the simulated Venus that can crash the way Venus's Modbus TCP
    service does under load: the request in flight gets a reset (RST), not an answer."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.crash = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        try:
            while True:
                request = await reader.read(260)
                if not request:
                    return
                if self.crash:
                    linger = struct.pack("ii", 1, 0)  # close with a reset
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, linger
                    )
                    writer.transport.abort()
                    return
                up_writer.write(request)
                await up_writer.drain()
                header = await up_reader.readexactly(7)
                body = await up_reader.readexactly(struct.unpack(">H", header[4:6])[0] - 1)
                writer.write(header + body)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            up_writer.close()


def test_a_reset_is_closed_after_answers_and_refused_before() -> None:
    """ECONNRESET on a connection that has answered: the service restarted (closed). Before the
    first answer it is how the ESP32 (lwIP) reports a refused port."""

    async def test(regs: VenusRegisters, port: int) -> None:
        regs.update(Reading(grid_w=(300, 0, 0)))
        hop = CrashingHop(port)
        poller = venus.Poller(settings(await hop.start()), log=lambda *_: None)
        task = await start(poller)
        try:
            await until(lambda: poller.reading.seq >= 2, 3, "readings")
            hop.crash = True
            await until(lambda: "closed" in poller.errors, 3, "the reset")
            reset = "closed: 127.0.0.1:%d: [Errno 104] Connection reset by peer" % hop.port
            assert poller.last_error == reset
            assert "refused" not in poller.errors
            await until(lambda: "refused" in poller.errors, 5, "a reset before any answer")
            assert poller.last_error.endswith(MODBUS_TCP_HINT)
            hop.crash = False
            seq = poller.reading.seq
            await until(lambda: poller.reading.seq > seq, 8, "reading again")
            assert poller.last_error is None
        finally:
            await stop(poller, task)
            await hop.stop()

    with_venus(test)


# -- the same on the MicroPython Unix port (the firmware's first target) --------------------

MP_SCRIPT = """
import sys, json, asyncio
sys.path.insert(0, sys.argv[1])
import venus
venus.METER_RETRY_S = 1
poller = venus.Poller(json.loads(sys.argv[2]), log=lambda *_: None)

async def watch():
    last = None
    while True:
        now = [poller.meter, poller.last_error, poller.reading.power_w]
        if now != last:
            print(json.dumps(now))
            last = now
        await asyncio.sleep(0.05)

asyncio.create_task(watch())
asyncio.run(poller.run())
"""


class UnixPort:
    """The Poller on the Unix port; its state, one JSON line per change, read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[list[Any]] = []

    async def wait(self, cond: Callable[[list[Any]], bool], timeout: float, what: str) -> None:
        async def next_match() -> None:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError("the Unix port ended: %s" % self.seen)
                self.seen.append(json.loads(line))
                if cond(self.seen[-1]):
                    return

        try:
            await asyncio.wait_for(next_match(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("not within %s s: %s; seen %s" % (timeout, what, self.seen))


async def unix_port(tmp_path: Path, port: int) -> UnixPort:
    micropython = need_tool("micropython")
    script = tmp_path / "poll.py"
    script.write_text(MP_SCRIPT)
    s = json.dumps(settings(port))
    proc = await asyncio.create_subprocess_exec(
        micropython, str(script), str(FIRMWARE), s, stdout=asyncio.subprocess.PIPE
    )
    return UnixPort(proc)


def test_meter_retry_on_the_unix_port(tmp_path: Path) -> None:
    async def test(regs: VenusRegisters, port: int) -> None:
        regs.faults.meter_dropout = True
        regs.update(Reading(grid_w=(1200, 0, 0)))
        mp = await unix_port(tmp_path, port)
        try:
            await mp.wait(lambda st: st[0] is False and st[2] == 0, 5, "no meter, 820 = 0")
            regs.faults.meter_dropout = False
            regs.update(Reading(grid_w=(1200, 0, 0)))
            await mp.wait(lambda st: st[0] is True and st[2] == 1200, 4, "the meter back")
            regs.faults.meter_dropout = True
            regs.update(Reading(grid_w=(1200, 0, 0)))
            await mp.wait(lambda st: "unit id 30 " + UNIT_HINT in (st[1] or ""), 3, "error")
            await asyncio.sleep(1.0)
            assert mp.seen[-1][2] == 1200  # never the trap's 0
        finally:
            mp.proc.kill()
            await mp.proc.wait()

    with_venus(test)


def test_refused_and_timeout_on_the_unix_port(tmp_path: Path) -> None:
    """MicroPython's open_connection reports a refusal only at the first write."""

    async def test() -> None:
        for port, error in (
            (free_port(), "refused: 127.0.0.1:%d: " + MODBUS_TCP_HINT),
            (None, "timeout: 127.0.0.1:%d: no connection in 1.0 s"),
        ):
            with full_backlog() as hung:
                port = port or hung
                mp = await unix_port(tmp_path, port)
                try:
                    await mp.wait(lambda st: st[1] == error % port, 4, error)
                finally:
                    mp.proc.kill()
                    await mp.proc.wait()

    asyncio.run(test())


def test_house_battery_power_is_read_with_the_grid() -> None:
    """842 (battery power, + = charging): what the controller's house battery guard needs."""

    async def test(regs: VenusRegisters, port: int) -> None:
        regs.update(Reading(grid_w=(-100, 0, 0), house_battery_w=-412))
        poller = venus.Poller(settings(port), log=lambda *_: None)
        task = await start(poller)
        try:
            await until(lambda: poller.reading.seq > 0, 3, "a reading")
            assert (poller.reading.power_w, poller.reading.battery_w) == (-100, -412)
            assert poller.status()["battery_w"] == -412
        finally:
            await stop(poller, task)

    with_venus(test)


def test_a_value_polled_again_unchanged_is_not_a_new_sample() -> None:
    """Polled twice a second, Venus's once-a-second value comes back unchanged: the same
    sample, not a new one (the controller acts on new ones, and is woken for each)."""

    async def test(regs: VenusRegisters, port: int) -> None:
        regs.update(Reading(grid_w=(-100, 0, 0)))
        poller = venus.Poller(settings(port, interval_s=0.5), log=lambda *_: None)
        woken = []
        poller.on_sample = lambda: woken.append(poller.reading.seq)
        task = await start(poller)
        try:
            await until(lambda: poller.reading.seq > 0, 3, "a reading")
            reads, seq = poller.counters["reads"], poller.reading.seq
            await until(lambda: poller.counters["reads"] >= reads + 1, 3, "polled again")
            assert poller.reading.seq == seq  # 0.5 s later, unchanged: the same sample
            regs.update(Reading(grid_w=(-180, 0, 0)))
            await until(lambda: poller.reading.power_w == -180, 3, "the new value")
            assert poller.reading.seq == seq + 1
            # unchanged for a meter period: a new sample again (a steady house is no stale one)
            await until(lambda: poller.reading.seq == seq + 2, 3, "a new sample after 1 s")
            assert woken == list(range(1, seq + 3))
        finally:
            await stop(poller, task)

    with_venus(test)
