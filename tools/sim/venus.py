"""The virtual Venus OS GX: a real Modbus TCP server (pymodbus) with the registers of Victron's
register list (CCGX-Modbus-TCP-register-list-3.00.xlsx) for com.victronenergy.system (unit 100)
and a Carlo Gavazzi grid meter (com.victronenergy.grid, unit 30), behaving as Venus does:
function 3 and 4 alike, exception 0x02 for a read that touches an address not in the list,
0x0A for a unit id that does not exist, 0 for values it does not have (L2/L3 on one phase).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from tools.ports import free_port

SYSTEM_UNIT = 100
METER_UNIT = 30
MAX_READ = 125  # registers per read, Modbus limit

# The addresses that exist, as contiguous spans (first, last) per unit.
SYSTEM_SPANS = [(800, 826), (840, 846), (850, 851), (855, 855), (860, 860), (865, 866)]
METER_SPANS = [(2600, 2621)]


def int16(value: float) -> int:
    return int(round(value)) & 0xFFFF


def uint16(value: float) -> int:
    return max(0, min(0xFFFF, int(round(value))))


def string_registers(text: str, count: int) -> list[int]:
    raw = text.encode()[: 2 * count].ljust(2 * count, b"\x00")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, 2 * count, 2)]


@dataclass
class VenusFaults:
    down: bool = False  # the Modbus TCP service is off: connection refused
    exception: int = 0  # every read answers with this Modbus exception code (e.g. 4)
    frozen: bool = False  # values stop updating (a stuck meter or a hung service)
    meter_dropout: bool = False  # the grid meter is gone: 820-822 read 0, unit 30 is missing
    silent: bool = False  # requests are taken and never answered (a hung GX, a lost route)


@dataclass
class Reading:
    """One second of the installation, as Venus would see it (W; positive grid = import)."""

    grid_w: tuple[float, float, float] = (0.0, 0.0, 0.0)
    consumption_w: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pv_on_grid_w: tuple[float, float, float] = (0.0, 0.0, 0.0)
    battery_v: float = 0.0
    battery_a: float = 0.0
    soc_percent: float = 0.0
    phases: int = 1
    house_battery_w: float | None = None  # ESS's battery, shown as the system battery (842)


class VenusRegisters:
    """Register values per unit; `update()` once a second, like a real meter."""

    def __init__(self, serial: str = "c0619ab1c2d3", unknown_unit_code: int = 0x0A) -> None:
        self.serial = serial
        self.unknown_unit_code = unknown_unit_code  # older Venus versions answered 0x0B
        self.faults = VenusFaults()
        self.units: dict[int, dict[int, int]] = {
            SYSTEM_UNIT: {a: 0 for first, last in SYSTEM_SPANS for a in range(first, last + 1)},
            METER_UNIT: {a: 0 for first, last in METER_SPANS for a in range(first, last + 1)},
        }
        self.energy_in_kwh = [0.0, 0.0, 0.0]
        self.energy_out_kwh = [0.0, 0.0, 0.0]
        self.reads = 0
        self.exceptions = 0
        self.last: Reading = Reading()
        sysregs = self.units[SYSTEM_UNIT]
        for i, word in enumerate(string_registers(serial, 6)):
            sysregs[800 + i] = word
        sysregs[826] = 1  # active input: grid
        for i, word in enumerate(string_registers("BZ1234567890", 7)):
            self.units[METER_UNIT][2609 + i] = word

    def update(self, reading: Reading, dt: float = 1.0) -> None:
        if self.faults.frozen:
            return
        self.last = reading
        s = self.units[SYSTEM_UNIT]
        m = self.units[METER_UNIT]
        for k in range(3):
            present = k < reading.phases
            grid = reading.grid_w[k] if present else 0.0
            s[808 + k] = 0
            s[811 + k] = uint16(reading.pv_on_grid_w[k] if present else 0)
            s[817 + k] = uint16(reading.consumption_w[k] if present else 0)
            s[820 + k] = 0 if self.faults.meter_dropout else int16(grid)
            m[2600 + k] = int16(grid)
            if grid > 0:
                self.energy_in_kwh[k] += grid * dt / 3.6e6
            else:
                self.energy_out_kwh[k] -= grid * dt / 3.6e6
            m[2603 + k] = int(self.energy_in_kwh[k] * 100) & 0xFFFF
            m[2606 + k] = int(self.energy_out_kwh[k] * 100) & 0xFFFF
            m[2616 + 2 * k] = uint16(2300 if present else 0)  # 230.0 V
            m[2617 + 2 * k] = int16(grid / 230 * 10 if present else 0)
        s[840] = uint16(reading.battery_v * 10)
        s[841] = int16(reading.battery_a * 10)
        s[842] = int16(reading.battery_v * reading.battery_a)
        s[843] = uint16(reading.soc_percent)
        s[844] = 1 if reading.battery_a > 0.05 else (2 if reading.battery_a < -0.05 else 0)
        if reading.house_battery_w is not None:
            s[842] = int16(reading.house_battery_w)
            w = reading.house_battery_w
            s[844] = 1 if w > 5 else (2 if w < -5 else 0)

    def read(self, unit: int, address: int, count: int) -> list[int] | int:
        """Registers, or a Modbus exception code."""
        self.reads += 1
        code = self._check(unit, address, count)
        if code:
            self.exceptions += 1
            return code
        regs = self.units[unit]
        return [regs[a] for a in range(address, address + count)]

    def _check(self, unit: int, address: int, count: int) -> int:
        if self.faults.exception:
            return self.faults.exception
        if unit not in self.units or (unit == METER_UNIT and self.faults.meter_dropout):
            return self.unknown_unit_code
        if not 1 <= count <= MAX_READ:
            return int(ExcCodes.ILLEGAL_VALUE)
        regs = self.units[unit]
        if any(a not in regs for a in range(address, address + count)):
            return int(ExcCodes.ILLEGAL_ADDRESS)
        return 0


class VenusContext(ModbusServerContext):
    """pymodbus datastore that answers from VenusRegisters (function 3 and 4 alike)."""

    def __init__(self, registers: VenusRegisters) -> None:  # no super(): no default devices
        self.registers = registers
        self.simdevices = []
        self.old_simulator = True  # pymodbus 3.16: call async_getValues of this object directly

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> Any:
        while self.registers.faults.silent:  # hold the request: no answer while it lasts
            await asyncio.sleep(0.05)
        if func_code not in (3, 4):
            return ExcCodes.ILLEGAL_FUNCTION
        result = self.registers.read(device_id, address, count)
        return ExcCodes(result) if isinstance(result, int) else result

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any):
        return ExcCodes.ILLEGAL_ADDRESS  # we never write Venus settings; nor may anyone here

    def device_ids(self) -> list[int]:
        return list(self.registers.units)


RESTART_ATTEMPTS = 100  # 10 s for the old listening socket to let go of the port
RESTART_WAIT_S = 0.5  # apply_faults waits this long for a restart, then lets it go on alone


class VenusServer:
    """Start/stop the Modbus TCP service, as the "down" fault needs."""

    def __init__(self, registers: VenusRegisters, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registers = registers
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None
        self._starting: asyncio.Task[int] | None = None  # a restart after "down", in the background

    async def start(self) -> int:
        if self.port == 0:
            self.port = free_port(self.host)  # not 0: an ephemeral port may be taken while down
        for attempt in range(RESTART_ATTEMPTS):
            server = ModbusTcpServer(VenusContext(self.registers), address=(self.host, self.port))
            try:
                await server.serve_forever(background=True)
                break
            except RuntimeError:  # "could not start listen": the port is not free again yet
                if attempt == RESTART_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1)
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def apply_faults(self) -> None:
        """Down: stop now. Back up: start in the background, so that a port that takes a
        while to come free never holds up the charger's wire (the pump calls this)."""
        if self.registers.faults.down:
            if self.running or self._starting is not None:
                await self.stop()
                self._starting = None
            return
        if self.running:
            return
        starting = self._starting
        if starting is not None and not starting.done():
            return
        if starting is not None and not starting.cancelled() and starting.exception():
            pass  # it could not listen after RESTART_ATTEMPTS: try again
        self._starting = asyncio.ensure_future(self.start())
        # a free port takes a few milliseconds: back up when this returns, as a caller expects
        await asyncio.wait([self._starting], timeout=RESTART_WAIT_S)
