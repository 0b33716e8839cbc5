"""The virtual Venus OS: a real pymodbus server read by a real pymodbus client, and the
household whose grid power it reports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient
from tools.ports import ephemeral_low
from tools.sim.charger import VirtualIP22
from tools.sim.physics import Battery
from tools.sim.venus import Reading, VenusRegisters, VenusServer
from tools.sim.world import SCENARIOS, World, apply_fault, load_profile

import ip22


def signed(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def with_server(
    test: Callable[[VenusRegisters, VenusServer, AsyncModbusTcpClient], Awaitable[None]],
    registers: VenusRegisters | None = None,
) -> None:
    async def main() -> None:
        regs = registers or VenusRegisters()
        server = VenusServer(regs)
        port = await server.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        try:
            await test(regs, server, client)
        finally:
            client.close()
            await server.stop()

    asyncio.run(main())


async def read(
    client: AsyncModbusTcpClient, address: int, count: int, unit: int = 100, fn: int = 4
) -> Any:
    call = client.read_input_registers if fn == 4 else client.read_holding_registers
    return await call(address, count=count, device_id=unit)


def test_grid_registers_function_3_and_4_alike_and_signed() -> None:
    async def test(
        regs: VenusRegisters, server: VenusServer, client: AsyncModbusTcpClient
    ) -> None:
        regs.update(Reading(grid_w=(-850.4, 0, 0), consumption_w=(400, 0, 0), soc_percent=55))
        a = await read(client, 820, 3, fn=4)
        b = await read(client, 820, 3, fn=3)
        assert not a.isError() and a.registers == b.registers
        assert [signed(w) for w in a.registers] == [-850, 0, 0]
        assert (await read(client, 843, 1)).registers == [55]
        meter = await read(client, 2600, 3, unit=30)
        assert [signed(w) for w in meter.registers] == [-850, 0, 0]
        serial = (await read(client, 800, 6)).registers
        assert b"".join(w.to_bytes(2, "big") for w in serial) == b"c0619ab1c2d3"

    with_server(test)


def test_exceptions_as_venus_gives_them() -> None:
    async def test(
        regs: VenusRegisters, server: VenusServer, client: AsyncModbusTcpClient
    ) -> None:
        gap = await read(client, 820, 22)  # 820..841 crosses the hole 827..839
        assert gap.isError() and gap.exception_code == 2
        assert (await read(client, 827, 1)).exception_code == 2
        assert (await read(client, 820, 7)).registers is not None
        assert (await read(client, 820, 3, unit=99)).exception_code == 0x0A
        assert (await read(client, 2600, 3, unit=100)).exception_code == 2
        assert regs.exceptions == 4

    with_server(test)


def test_older_venus_unknown_unit_code() -> None:
    async def test(
        regs: VenusRegisters, server: VenusServer, client: AsyncModbusTcpClient
    ) -> None:
        assert (await read(client, 820, 3, unit=7)).exception_code == 0x0B

    with_server(test, VenusRegisters(unknown_unit_code=0x0B))


def test_faults_exception_frozen_dropout() -> None:
    async def test(
        regs: VenusRegisters, server: VenusServer, client: AsyncModbusTcpClient
    ) -> None:
        regs.update(Reading(grid_w=(300, 0, 0)))
        regs.faults.exception = 4
        assert (await read(client, 820, 3)).exception_code == 4
        regs.faults.exception = 0
        regs.faults.frozen = True
        regs.update(Reading(grid_w=(-900, 0, 0)))
        assert signed((await read(client, 820, 1)).registers[0]) == 300
        regs.faults.frozen = False
        regs.faults.meter_dropout = True
        regs.update(Reading(grid_w=(-900, 0, 0)))
        assert (await read(client, 820, 1)).registers == [0]  # the trap: "balanced"
        assert (await read(client, 2600, 3, unit=30)).exception_code == 0x0A

    with_server(test)


def test_down_refuses_connections_and_comes_back() -> None:
    async def test(
        regs: VenusRegisters, server: VenusServer, client: AsyncModbusTcpClient
    ) -> None:
        # below the ephemeral range: no client's source port can hold it while it is down
        assert server.port < ephemeral_low()
        regs.faults.down = True
        await server.apply_faults()
        probe = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
        assert not await probe.connect()
        probe.close()
        regs.faults.down = False
        await server.apply_faults()
        again = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=1, retries=0)
        assert await again.connect()
        assert not (await read(again, 820, 3)).isError()
        again.close()

    with_server(test)


def make_world(
    phases: int = 1, charger_phase: int = 1, scenario: str = "steady", noise: float = 0.0
) -> World:
    charger = VirtualIP22(battery=Battery(soc=0.3))
    return World(charger, VenusRegisters(), SCENARIOS[scenario], phases, charger_phase, noise)


def run_world(world: World, start: float, seconds: float) -> float:
    t = start
    while t < start + seconds:
        t += 0.05
        world.charger.poll(t)
        world.step(t)
    return t


def test_grid_follows_the_chargers_draw() -> None:
    world = make_world()
    t = run_world(world, 0, 15)
    full = world.venus.units[100][820]
    draw_full = world.charger.physics.ac_w
    assert 300 < draw_full < 380  # 12 A into a 24 V battery
    assert signed(full) == round(350 + draw_full - 1500)
    world.charger.receive(ip22.set_frame(0xEDF0, 3.0), t)
    t = run_world(world, t, 15)
    draw_low = world.charger.physics.ac_w
    assert 60 < draw_low < 110
    assert signed(world.venus.units[100][820]) - signed(full) == pytest.approx(
        draw_low - draw_full, abs=2
    )


def test_three_phases_with_the_charger_on_l2() -> None:
    world = make_world(phases=3, charger_phase=2)
    run_world(world, 0, 15)
    l1, l2, l3 = (signed(world.venus.units[100][820 + k]) for k in range(3))
    assert l1 == l3 == round((350 - 1500) / 3)
    assert l2 == pytest.approx(l1 + world.charger.physics.ac_w, abs=1)


def test_single_phase_leaves_l2_l3_at_zero() -> None:
    world = make_world()
    run_world(world, 0, 3)
    assert world.venus.units[100][821] == world.venus.units[100][822] == 0


def test_venus_updates_once_a_second() -> None:
    world = make_world(scenario="evening")
    seen = []
    t = 0.0
    while t < 5:
        t += 0.05
        world.step(t)
        seen.append(world.venus.units[100][811])
    changes = sum(1 for a, b in zip(seen, seen[1:]) if a != b)
    assert 4 <= changes <= 5


def test_profile_csv(tmp_path: Path) -> None:
    csv = tmp_path / "day.csv"
    csv.write_text("t_s,pv_w,load_w\n0,0,300\n100,1000,300\n200,1000,2300\n")
    profile = load_profile(csv)
    assert profile(-5) == (0, 300)
    assert profile(50) == (500, 300)
    assert profile(150) == (1000, 1300)
    assert profile(175) == (1000, 1800)
    assert profile(1e6) == (1000, 2300)


@pytest.mark.parametrize(
    "text, message",
    [
        ("t,pv_w,load_w\n0,0,0\n", "missing column"),
        ("t_s,pv_w,load_w\n0,abc,0\n", "not a number"),
        ("t_s,pv_w,load_w\n5,0,0\n5,0,0\n", "must increase"),
        ("t_s,pv_w,load_w\n0,-1,0\n", ">= 0"),
        ("t_s,pv_w,load_w\n", "no rows"),
    ],
)
def test_profile_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_profile(csv)


def test_scenarios() -> None:
    assert SCENARIOS["kettle"](30)[1] == 300 and SCENARIOS["kettle"](100)[1] == 2300
    assert SCENARIOS["kettle"](700)[1] == 2300 and SCENARIOS["kettle"](800)[1] == 300
    assert SCENARIOS["evening"](0)[0] == 1500 and SCENARIOS["evening"](1800)[0] == 0
    assert SCENARIOS["night"](123)[0] == 0
    dips = [SCENARIOS["clouds"](t)[0] for t in range(0, 900)]
    assert min(dips) == pytest.approx(540) and max(dips) == 1800
    assert dips == [SCENARIOS["clouds"](t)[0] for t in range(0, 900)]  # repeatable


def test_apply_fault_by_name() -> None:
    world = make_world()
    run_world(world, 0, 2)
    apply_fault(world, "charger.silence", "5")
    assert world.charger.faults.silent_until == pytest.approx(world.now + 5)
    apply_fault(world, "venus.exception", 4)
    apply_fault(world, "venus.down", "true")
    assert world.venus.faults.exception == 4 and world.venus.faults.down
    for name, value in (
        ("charger.corrupt", "2"),
        ("venus.exception", "7"),
        ("venus.down", "maybe"),
        ("nonsense", "1"),
    ):
        with pytest.raises(ValueError):
            apply_fault(world, name, value)


def test_the_meter_wanders_by_its_noise() -> None:
    world = make_world(noise=2.0)
    values = set()
    t = 0.0
    for _ in range(20):
        t += 1.0
        world.step(t)
        values.add(signed(world.venus.units[100][820]))
    assert len(values) > 1 and max(values) - min(values) <= 4


def test_mains_off_is_silence_and_no_draw() -> None:
    world = make_world()
    t = run_world(world, 0, 15)
    world.charger.set_mains(False, t)
    assert world.charger.poll(t + 0.5) == b"" and world.charger.ac_w == 0
    t = run_world(world, t, 3)
    assert signed(world.venus.units[100][820]) == round(350 - 1500)
    world.charger.set_mains(True, t)
    t = run_world(world, t, 2)
    assert world.charger.uptime(t) <= 2 and world.charger.status(t)["state"] == "starting up"
