"""Battery and charger physics for the virtual IP22: a battery with an open-circuit-voltage
curve and internal resistance, the charger's bulk -> absorption -> float -> storage stages, an
output current that follows min(limit, what the battery accepts) with a first-order lag, and
the AC power the charger draws. Pure: `step(dt)` advances by dt seconds of simulated time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Per cell, against state of charge (0..1), piecewise linear:
# the open-circuit voltage of a battery at rest ...
OCV_CURVES: dict[str, list[tuple[float, float]]] = {
    "lead-acid": [(0.0, 1.93), (0.2, 1.98), (0.5, 2.04), (0.8, 2.09), (1.0, 2.14)],
    "lifepo4": [(0.0, 2.80), (0.05, 3.10), (0.2, 3.25), (0.7, 3.30), (0.95, 3.35), (1.0, 3.45)],
}
# ... and its EMF while it takes a charge current: polarisation and, for lead-acid, gassing
# lift it steeply near full (above ~2.35 V/cell; LiFePO4's knee above ~3.4 V/cell). This is
# what makes the current taper in absorption and lets the voltage settle at float.
CHARGE_CURVES: dict[str, list[tuple[float, float]]] = {
    "lead-acid": [(0.0, 2.00), (0.5, 2.15), (0.8, 2.28), (0.9, 2.38), (0.95, 2.45), (1.0, 2.55)],
    "lifepo4": [(0.0, 3.00), (0.1, 3.30), (0.9, 3.40), (0.97, 3.50), (1.0, 3.70)],
}
POLARISATION_C = 0.01  # the charge current (in C) at which half the polarisation has built up
CELLS_PER_12V = {"lead-acid": 6, "lifepo4": 4}

# IP22 charge voltages per 12 V ("normal" preset, and the Li-ion preset), volts:
# absorption, float, storage. Absorption 28.8 V on a 24 V unit matches the capture (0x2001).
CHARGE_VOLTAGES = {"lead-acid": (14.4, 13.8, 13.2), "lifepo4": (14.2, 13.5, 13.5)}

BULK, ABSORPTION, FLOAT, STORAGE, OFF, STARTING = 3, 4, 5, 6, 0, 245


def interpolate(points: list[tuple[float, float]], x: float) -> float:
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


@dataclass
class Battery:
    nominal_v: int = 24
    chemistry: str = "lead-acid"
    capacity_ah: float = 100.0
    soc: float = 0.5
    resistance_ohm: float = 0.02  # internal resistance of the whole string
    temperature_c: float = 25.0

    def __post_init__(self) -> None:
        self._accepts_key: tuple[float, float] | None = None
        self._accepts_value = 0.0
        if self.chemistry not in OCV_CURVES:
            raise ValueError("chemistry must be one of %s" % ", ".join(OCV_CURVES))

    @property
    def cells(self) -> int:
        return CELLS_PER_12V[self.chemistry] * self.nominal_v // 12

    def ocv(self) -> float:
        return self.cells * interpolate(OCV_CURVES[self.chemistry], self.soc)

    def terminal_voltage(self, current_a: float) -> float:
        if current_a <= 0:
            return self.ocv() + current_a * self.resistance_ohm
        rest = self.ocv()
        polarisation = self.cells * interpolate(CHARGE_CURVES[self.chemistry], self.soc) - rest
        build_up = current_a / (current_a + POLARISATION_C * self.capacity_ah)
        return rest + max(0.0, polarisation) * build_up + current_a * self.resistance_ohm

    def accepts(self, voltage: float) -> float:
        """Current the battery takes when held at `voltage` (the voltage rises with current)."""
        key = (round(self.soc, 5), voltage)
        if key == self._accepts_key:  # the state of charge moves slowly: cache the answer
            return self._accepts_value
        value = self._solve_accepts(voltage)
        self._accepts_key, self._accepts_value = key, value
        return value

    def _solve_accepts(self, voltage: float) -> float:
        if voltage <= self.ocv():
            return 0.0
        low, high = 0.0, (voltage - self.ocv()) / self.resistance_ohm  # without polarisation
        for _ in range(24):
            mid = (low + high) / 2
            if self.terminal_voltage(mid) < voltage:
                low = mid
            else:
                high = mid
        return low

    def charge(self, current_a: float, dt: float) -> None:
        # charge efficiency: lead-acid loses more as it fills
        eff = 0.99 if self.chemistry == "lifepo4" else (0.95 if self.soc < 0.8 else 0.8)
        self.soc = min(1.0, max(0.0, self.soc + current_a * eff * dt / 3600.0 / self.capacity_ah))


def efficiency(output_w: float, rated_w: float) -> float:
    """AC -> DC efficiency: about 0.93 near full load, lower at small load."""
    if output_w <= 0:
        return 0.0
    load = output_w / rated_w
    return 0.93 - 0.25 * math.exp(-load / 0.12)


@dataclass
class ChargerPhysics:
    """The power stage of an IP22 and the battery on its output."""

    rated_a: float
    battery: Battery = field(default_factory=Battery)
    time_constant_s: float = 2.0
    fall_time_constant_s: float | None = None  # None: the same as rising
    startup_delay_s: float = 3.0
    absorption_h: float = 0.5  # the capture shows 0.50 h planned absorption (0x2042)
    tail_fraction: float = 0.1  # absorption ends early below this share of rated current
    storage_after_h: float = 24.0
    no_load_w: float = 1.0
    limit_a: float = 0.0  # effective limit, set by the protocol side
    enabled: bool = True
    current_a: float = 0.0
    stage: int = STARTING
    stage_time_s: float = 0.0
    startup_left_s: float = 0.0

    def __post_init__(self) -> None:
        self.limit_a = self.rated_a
        self.startup_left_s = self.startup_delay_s
        per12 = CHARGE_VOLTAGES[self.battery.chemistry]
        scale = self.battery.nominal_v / 12
        self.v_absorption, self.v_float, self.v_storage = (v * scale for v in per12)

    @property
    def voltage(self) -> float:
        return self.battery.terminal_voltage(self.current_a)

    @property
    def target_voltage(self) -> float:
        return {ABSORPTION: self.v_absorption, FLOAT: self.v_float, STORAGE: self.v_storage}.get(
            self.stage, self.v_absorption
        )

    @property
    def output_w(self) -> float:
        return self.voltage * self.current_a

    @property
    def ac_w(self) -> float:
        """Power drawn from the mains."""
        if not self.enabled:
            return 0.3  # standby electronics
        out = self.output_w
        rated_w = self.v_absorption * self.rated_a
        return self.no_load_w + (out / efficiency(out, rated_w) if out > 0 else 0.0)

    def set_enabled(self, on: bool) -> None:
        if on and not self.enabled:
            self.restart()
        self.enabled = on
        if not on:
            self.stage = OFF

    def restart(self) -> None:
        """Power-up: start-up delay, then a new charge cycle in bulk."""
        self.enabled = True
        self.stage = STARTING
        self.stage_time_s = 0.0
        self.startup_left_s = self.startup_delay_s
        self.current_a = 0.0

    def _enter(self, stage: int) -> None:
        self.stage = stage
        self.stage_time_s = 0.0

    def step(self, dt: float) -> None:
        self.stage_time_s += dt
        if not self.enabled:
            self.current_a = 0.0
            return
        if self.stage == STARTING:
            self.startup_left_s -= dt
            if self.startup_left_s > 0:
                self.current_a = 0.0
                return
            self._enter(BULK)
        limit = max(0.0, min(self.limit_a, self.rated_a))
        accepted = self.battery.accepts(self.target_voltage)
        target = min(limit, accepted)
        tau = self.time_constant_s
        if target < self.current_a and self.fall_time_constant_s is not None:
            tau = self.fall_time_constant_s
        alpha = 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0
        self.current_a += (target - self.current_a) * alpha
        if self.current_a < 0.005:
            self.current_a = 0.0
        self.battery.charge(self.current_a, dt)
        if self.stage == BULK and self.voltage >= self.v_absorption - 0.01:
            self._enter(ABSORPTION)
        elif self.stage == ABSORPTION and (
            self.stage_time_s >= self.absorption_h * 3600
            or (self.stage_time_s > 60 and accepted < self.tail_fraction * self.rated_a)
        ):
            self._enter(FLOAT)
        elif self.stage == FLOAT and self.stage_time_s >= self.storage_after_h * 3600:
            self._enter(STORAGE)
