#!/usr/bin/env python3
"""Closed-loop benchmark: the firmware's own control.py against the simulator's physics, in
simulated time (no sockets), beside the oracle and the original project's two algorithms.

    python tools/bench.py                      # the built-in days, a table
    python tools/bench.py --profile day.csv --json

Time runs in 0.1 s physics steps; the meter delivers a reading every second (the value of that
instant, seen by the controller `--meter-latency` later); a command takes effect
`--command-latency` after the decision. Two charger variants: `volatile` (0x2015 works: changes
are free, off = 0x2015 = 0) and `stored_only` (only 0xEDF0, under the firmware's WriteBudget, off
= a smart plug cutting the charger's mains, wear-free; power-on restarts the charger).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.sim import ip22  # noqa: E402,F401  (firmware/ on sys.path)
from tools.sim.physics import Battery, ChargerPhysics  # noqa: E402
from tools.sim.world import Profile, load_profile  # noqa: E402

import charger  # noqa: E402
import config  # noqa: E402
import control  # noqa: E402

DT = 0.5  # exact for the first-order lag; the meter (1 s) and commands land on this grid
RATED_A, MIN_A, MAX_A = 12.0, 3.0, 12.0  # an IP22 24/12
VOLATILE, STORED_ONLY = "volatile", "stored_only"
CONTROLLERS = ("oracle", "original_script", "original_service", "ours")


# -- built-in days -----------------------------------------------------------------------------


def bell(t: float, peak: float, sunrise: float = 6 * 3600, sunset: float = 20 * 3600) -> float:
    if not sunrise < t < sunset:
        return 0.0
    return peak * math.sin(math.pi * (t - sunrise) / (sunset - sunrise)) ** 1.5


def clear_day(t: float) -> tuple[float, float]:
    """A clear summer day, 1.6 kW peak, a household's base load with a lunch peak."""
    load = 250.0 + (900.0 if 12 * 3600 <= t < 12.5 * 3600 else 0.0)
    return bell(t, 1600.0), load


def cloudy_day(t: float) -> tuple[float, float]:
    """Broken clouds: PV falls to 25 % for 30-120 s several times an hour."""
    window = int(t // 300)
    seed = (window * 2654435761) % 2**32
    start, length = seed % 180, 30 + (seed >> 8) % 90
    shaded = (seed >> 16) % 3 != 0 and start <= t % 300 < start + length
    return bell(t, 1400.0) * (0.25 if shaded else 1.0), 300.0


def busy_day(t: float) -> tuple[float, float]:
    """A clear day with kettles, a washing machine and a cooker: loads that come and go."""
    pv, load = bell(t, 1800.0), 280.0
    minute = int(t // 60)
    if minute % 47 < 3:
        load += 2000.0  # a kettle
    if 10 * 60 <= minute < 11.5 * 60 and minute % 4 < 2:
        load += 700.0  # a washing machine heating in bursts
    if 17.5 * 60 <= minute < 18.25 * 60:
        load += 1500.0  # cooking
    return pv, load


DAYS: dict[str, Profile] = {"clear": clear_day, "cloudy": cloudy_day, "busy": busy_day}


# -- the installation --------------------------------------------------------------------------


@dataclass
class Metrics:
    surplus_used_kwh: float = 0.0
    capture_ratio: float | None = None
    grid_import_kwh: float = 0.0
    import_share: float = 0.0
    export_left_kwh: float = 0.0
    charger_draw_kwh: float = 0.0
    stored_writes: int = 0
    set_commands: int = 0
    switches: int = 0
    step_response_s: float | None = None


FALL_TIME_CONSTANT: float | None = None  # --fall-time-constant: a charger that cuts faster


class Plant:
    """The charger (physics), its register semantics, the meter and the latencies."""

    def __init__(self, variant: str, meter_latency: float, command_latency: float, soc: float):
        self.variant = variant
        battery = Battery(nominal_v=24, capacity_ah=200, soc=soc)
        self.ph = ChargerPhysics(
            rated_a=RATED_A, battery=battery, fall_time_constant_s=FALL_TIME_CONSTANT
        )
        self.ph.restart()
        self.stored = MAX_A  # 0xEDF0, factory default
        self.volatile: float | None = None
        self.mains = True  # the smart plug
        self.metrics = Metrics()
        self.meter_latency = meter_latency
        self.command_latency = command_latency
        self.readings: deque[tuple[float, float]] = deque()  # (visible at, grid W)
        self.pending: deque[tuple[float, Callable[[], None]]] = deque()
        self.grid_w = 0.0
        self.seq = 0
        self.last_reading: float | None = None

    # commands, applied after the command latency
    def later(self, now: float, action: Callable[[], None]) -> None:
        self.pending.append((now + self.command_latency, action))

    def write_stored(self, now: float, amps: float) -> None:
        amps = min(max(amps, MIN_A), MAX_A)  # the charger clamps (or refuses: same effect)
        self.metrics.stored_writes += 1
        self.metrics.set_commands += 1

        def apply() -> None:
            self.stored = amps

        self.later(now, apply)

    def write_volatile(self, now: float, amps: float) -> None:
        self.metrics.set_commands += 2  # 0x200E and 0x2015

        def apply() -> None:
            self.volatile = amps

        self.later(now, apply)

    def switch_mains(self, now: float, on: bool) -> None:
        self.metrics.switches += 1

        def apply() -> None:
            self.mains = on
            self.ph.set_enabled(on)  # power-on: a new start-up

        self.later(now, apply)

    @property
    def limit(self) -> float:
        return self.stored if self.volatile is None else min(self.volatile, self.stored)

    def step(self, now: float, pv: float, load: float) -> None:
        while self.pending and self.pending[0][0] <= now:
            self.pending.popleft()[1]()
        self.ph.limit_a = self.limit
        self.ph.step(DT)
        draw = self.ph.ac_w if self.mains and self.ph.enabled else 0.0
        # what charging costs: the draw above the charger's idle consumption (which any
        # controller pays while the charger is powered and off by 0x2015 = 0)
        active = max(0.0, draw - self.ph.no_load_w) if draw else 0.0
        grid = load + draw - pv
        m = self.metrics
        h = DT / 3600 / 1000
        m.surplus_used_kwh += min(active, max(0.0, pv - load)) * h
        m.grid_import_kwh += (max(0.0, grid) - max(0.0, grid - active)) * h
        m.charger_draw_kwh += active * h
        m.export_left_kwh += max(0.0, -grid) * h
        self.grid_w = grid
        if self.last_reading is None or now - self.last_reading >= 1.0 - 1e-9:
            self.last_reading = now
            self.readings.append((now + self.meter_latency, grid))

    def meter(self, now: float) -> float | None:
        """The newest reading the controller can see at `now`."""
        value = None
        while self.readings and self.readings[0][0] <= now:
            value = self.readings.popleft()[1]
            self.seq += 1
        return value


# -- the controllers ---------------------------------------------------------------------------


class Oracle:
    """Instant and perfect: the largest current whose draw the surplus covers, within the
    charger's limits; off below the minimum. No latency, no time constant."""

    def __init__(self, plant: Plant) -> None:
        self.p = plant
        plant.ph.time_constant_s = 0.0
        plant.ph.startup_delay_s = 0.0
        plant.ph.restart()

    def draw_at(self, amps: float) -> float:
        """Active AC draw at `amps` (capped by what the battery takes)."""
        ph = self.p.ph
        saved = ph.current_a
        ph.current_a = min(amps, ph.battery.accepts(ph.target_voltage))
        w = ph.ac_w - ph.no_load_w
        ph.current_a = saved
        return w

    def control(self, now: float, pv: float, load: float) -> None:
        surplus = pv - load
        if self.draw_at(MIN_A) > surplus:
            self.p.volatile = 0.0
            return
        amps = MAX_A
        for _ in range(4):  # draw(I) is nearly linear: a few secant steps land on it
            draw = self.draw_at(amps)
            if draw <= surplus + 0.5:
                break
            amps = max(MIN_A, amps * surplus / draw)
        self.p.volatile = amps


class OriginalScript:
    """wasn-eu's automatic script: every 30 s, if the grid exports, current = export / 24 V,
    written to 0xEDF0; nothing sent when not exporting. No minimum handling, no off."""

    interval = 30.0

    def __init__(self, plant: Plant) -> None:
        self.p = plant
        self.next = 0.0
        self.grid: float | None = None

    def control(self, now: float, pv: float, load: float) -> None:
        reading = self.p.meter(now)
        if reading is not None:
            self.grid = reading
        if now < self.next or self.grid is None:
            return
        self.next = now + self.interval
        self.act(now, self.grid)

    def act(self, now: float, grid: float) -> None:
        if grid < 0:
            self.p.write_stored(now, -grid / 24)


class OriginalService(OriginalScript):
    """The original Venus OS service: if power < currentold, current = -power / 24 plus the
    previous value (the "doubling"), capped at the maximum, written to 0xEDF0."""

    def __init__(self, plant: Plant) -> None:
        super().__init__(plant)
        self.old = 0.0

    def act(self, now: float, grid: float) -> None:
        if grid < self.old:
            current = min(-grid / 24 + self.old, MAX_A)
            self.p.write_stored(now, current)
            self.old = current


class Ours:
    """control.py as the firmware runs it, the link's policy as charger.py applies it."""

    def __init__(self, plant: Plant, settings: dict[str, Any] | None = None) -> None:
        self.p = plant
        values = config.defaults()
        values["control"]["mode"] = "auto"
        self.settings = settings or values
        self.ctl = control.Controller(self.settings["control"])
        c = self.settings["charger"]
        self.budget = charger.WriteBudget(
            c["stored_deadband_a"], c["stored_min_interval_s"], c["stored_daily_max"]
        )
        self.sit = control.Situation()
        self.grid: float | None = None
        self.grid_at = -1e9
        self.on = True
        self.setpoint: float | None = MAX_A if plant.variant == STORED_ONLY else None
        self.refreshed = 0.0

    def control(self, now: float, pv: float, load: float) -> None:
        p, sit = self.p, self.sit
        reading = p.meter(now)
        if reading is not None:
            self.grid, self.grid_at = reading, now
        sit.grid_w, sit.grid_seq, sit.grid_age_s = self.grid, p.seq, now - self.grid_at
        sit.powered_off = not p.mains
        sit.link_up = sit.link_seen = p.mains
        sit.voltage_v = p.ph.voltage
        sit.current_a = p.ph.current_a if p.mains else 0.0
        sit.state_code = p.ph.stage
        sit.min_a, sit.max_a = MIN_A, MAX_A
        sit.charging = self.on
        sit.can_switch_off = True
        sit.stored_only = p.variant == STORED_ONLY
        sit.limit_a = p.stored if sit.stored_only else self.setpoint
        ms = int(now * 1000)
        sit.budget_full = self.budget.full(ms)
        sit.daily_max = self.budget.daily_max
        sit.writes_left = self.budget.daily_max - self.budget.used_24h(ms)
        sit.increase_wait_s = self.budget.increase_wait_ms(ms) // 1000
        d = self.ctl.step(int(now * 1000), sit)
        if d.charging is not None and d.charging != self.on:
            self.on = d.charging
            if p.variant == VOLATILE:
                p.metrics.switches += 1
                p.write_volatile(now, (self.setpoint or MIN_A) if d.charging else 0.0)
            else:
                p.switch_mains(now, d.charging)
        if d.setpoint_a is not None and d.setpoint_a != self.setpoint and self.on:
            if p.variant == VOLATILE:
                self.setpoint = d.setpoint_a
                p.write_volatile(now, d.setpoint_a)
                self.refreshed = now
            else:
                why = self.budget.check(self.setpoint, d.setpoint_a, int(now * 1000))
                if why is None:
                    up = self.setpoint is None or d.setpoint_a > self.setpoint
                    self.budget.record(int(now * 1000), up)
                    self.setpoint = d.setpoint_a
                    p.write_stored(now, d.setpoint_a)
                elif self.budget.full(int(now * 1000)) and d.setpoint_a < (self.setpoint or MAX_A):
                    self.on = False  # a decrease the budget refuses: off instead, as the app does
                    p.switch_mains(now, False)
        if p.variant == VOLATILE and self.setpoint is not None and now - self.refreshed >= 20:
            p.write_volatile(now, self.setpoint if self.on else 0.0)  # the 60 s timeout
            self.refreshed = now


class PhysicalLimit(Oracle):
    """The oracle's perfect knowledge and zero latency, but on the charger as it is (time
    constant, start-up): what no controller that only sets the current can beat. Shown with
    `--limits`, to tell a controller's shortfall from the physics'."""

    def __init__(self, plant: Plant) -> None:
        self.p = plant


def make(name: str, plant: Plant) -> Any:
    return {
        "physical_limit": PhysicalLimit,
        "oracle": Oracle,
        "original_script": OriginalScript,
        "original_service": OriginalService,
        "ours": Ours,
    }[name](plant)


# -- runs --------------------------------------------------------------------------------------


def run(
    profile: Profile,
    start: float,
    end: float,
    name: str,
    variant: str,
    meter_latency: float = 1.0,
    command_latency: float = 0.2,
    soc: float = 0.3,
) -> Metrics:
    plant = Plant(variant, meter_latency, command_latency, soc)
    ctl = make(name, plant)
    t = start
    next_control = start
    while t < end:
        pv, load = profile(t)
        if name == "oracle":
            ctl.control(t, pv, load)
        elif t >= next_control - 1e-9:
            ctl.control(t, pv, load)
            next_control += 1.0  # the firmware's control loop runs about once a second
        plant.step(t, pv, load)
        t += DT
    m = plant.metrics
    m.import_share = m.grid_import_kwh / m.charger_draw_kwh if m.charger_draw_kwh else 0.0
    return m


def step_response(name: str, variant: str) -> float | None:
    """A steady 900 W surplus, then a 1 kW load step: seconds until the import the charger
    causes has stopped (below 10 W, a meter's noise) and stays stopped for 10 s."""
    step_at = 600.0

    def profile(t: float) -> tuple[float, float]:
        return 1200.0, 300.0 + (1000.0 if t >= step_at else 0.0)

    plant = Plant(variant, 1.0, 0.2, 0.3)
    ctl = make(name, plant)
    t, next_control, stopped_at = 0.0, 0.0, None
    while t < step_at + 300:
        pv, load = profile(t)
        if name == "oracle" or t >= next_control - 1e-9:
            ctl.control(t, pv, load)
            next_control = t + 1.0
        plant.step(t, pv, load)
        if t >= step_at:
            caused = max(0.0, plant.grid_w) - max(0.0, load - pv)
            if caused < 10.0:
                stopped_at = stopped_at if stopped_at is not None else t
                if t - stopped_at >= 10.0:
                    return round(stopped_at - step_at, 1)
            else:
                stopped_at = None
        t += DT
    return None  # it never stopped


def bench(profile: Profile, start: float, end: float) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in (VOLATILE, STORED_ONLY):
        rows: dict[str, dict[str, Any]] = {}
        oracle_used = None
        for name in CONTROLLERS:
            m = run(profile, start, end, name, variant)
            if name == "oracle":
                oracle_used = m.surplus_used_kwh
            m.capture_ratio = m.surplus_used_kwh / oracle_used if oracle_used else None
            m.step_response_s = step_response(name, variant)
            rows[name] = {
                k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(m).items()
            }
        out[variant] = rows
    return out


def limits(days: dict[str, tuple[Profile, float, float]]) -> str:
    """Capture, import share and step response of the physical limit, per day and variant."""
    lines = [
        "physical limit of current control (perfect knowledge, no latency, the charger's time"
        " constant, no off switch faster than it):"
    ]
    for day, (profile, start, end) in days.items():
        for variant in (VOLATILE,):
            oracle = run(profile, start, end, "oracle", variant)
            m = run(profile, start, end, "physical_limit", variant)
            share = m.grid_import_kwh / m.charger_draw_kwh if m.charger_draw_kwh else 0.0
            step = step_response("physical_limit", variant)
            lines.append(
                "  %-8s %-12s capture %5.1f %%  import share %5.2f %%  step %s s"
                % (day, variant, 100 * m.surplus_used_kwh / oracle.surplus_used_kwh,
                   100 * share, "never" if step is None else step)
            )  # fmt: skip
    return "\n".join(lines)


def table(results: dict[str, dict[str, dict[str, Any]]], title: str) -> str:
    cols = [
        ("capture", "capture_ratio", "%.1f %%", 100),
        ("used kWh", "surplus_used_kwh", "%.2f", 1),
        ("import kWh", "grid_import_kwh", "%.3f", 1),
        ("import share", "import_share", "%.2f %%", 100),
        ("export left", "export_left_kwh", "%.2f", 1),
        ("stored wr.", "stored_writes", "%d", 1),
        ("sets", "set_commands", "%d", 1),
        ("switches", "switches", "%d", 1),
        ("step s", "step_response_s", "%s", 1),
    ]
    lines = [title]
    for variant, rows in results.items():
        lines.append("")
        lines.append("%-18s " % variant + " ".join("%12s" % c[0] for c in cols))
        for name, row in rows.items():
            cells = []
            for _, key, fmt, scale in cols:
                value = row[key]
                if value is None:
                    cells.append("%12s" % ("never" if key == "step_response_s" else "-"))
                else:
                    cells.append("%12s" % (fmt % (value * scale if scale != 1 else value)))
            lines.append("%-18s " % name + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", help="CSV t_s,pv_w,load_w; default: the built-in days")
    ap.add_argument("--day", choices=sorted(DAYS), action="append", help="built-in day(s)")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    ap.add_argument(
        "--limits",
        action="store_true",
        help="also the physical limit: perfect knowledge, no latency, the real time constant",
    )
    ap.add_argument(
        "--fall-time-constant",
        type=float,
        help="the charger's time constant for falling current (default: 2 s, as rising)",
    )
    args = ap.parse_args(argv)
    global FALL_TIME_CONSTANT
    FALL_TIME_CONSTANT = args.fall_time_constant
    if args.profile:
        try:
            profile = load_profile(args.profile)
        except (OSError, ValueError) as err:
            print("bench: %s" % err, file=sys.stderr)
            return 2
        times = [float(line.split(",")[0]) for line in Path(args.profile).read_text().split()[1:]]
        start, end = times[0], max(times[-1], times[0] + 1)
        results = {"profile": bench(profile, start, end)}
    else:
        results = {day: bench(DAYS[day], 0, 24 * 3600) for day in (args.day or sorted(DAYS))}
    if args.limits and not args.json:
        days = {"profile": (profile, start, end)} if args.profile else None
        print(limits(days or {d: (DAYS[d], 0.0, 24 * 3600.0) for d in (args.day or sorted(DAYS))}))
        print()
    if args.json:
        print(json.dumps(results["profile"] if args.profile else results))
    else:
        for name, result in results.items():
            print(table(result, "== %s ==" % name))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
