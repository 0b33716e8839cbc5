"""The household around the charger: PV and load from a profile or a built-in scenario, the
charger's AC draw added on its phase, and the resulting grid power handed to Venus once a
second. Also the run-time faults, by name, for the command line and the control interface."""

from __future__ import annotations

import bisect
import csv
import math
import random
from pathlib import Path
from typing import Any, Callable

from tools.sim.charger import VirtualIP22
from tools.sim.venus import Reading, VenusRegisters

Profile = Callable[[float], tuple[float, float]]  # t (s) -> (pv W, load W)


def steady(t: float) -> tuple[float, float]:
    """A sunny noon: 1.5 kW of PV, a 350 W base load."""
    return 1500.0, 350.0


def kettle(t: float) -> tuple[float, float]:
    """Surplus with load steps: a 2 kW kettle for 2 minutes every 10 minutes (first at 60 s)."""
    on = t >= 60 and (t - 60) % 600 < 120
    return 1200.0, 300.0 + (2000.0 if on else 0.0)


def clouds(t: float) -> tuple[float, float]:
    """Passing clouds: PV drops to 30 % for 20-60 s at irregular, repeatable times."""
    rng = random.Random(int(t // 90))  # one cloud decision per 90 s window
    start, length = rng.uniform(0, 40), rng.uniform(20, 60)
    shaded = rng.random() < 0.6 and start <= t % 90 < start + length
    return (1800.0 * (0.3 if shaded else 1.0)), 400.0


def evening(t: float) -> tuple[float, float]:
    """Sunset: PV falls from 1.5 kW to 0 over 30 minutes, then night."""
    return max(0.0, 1500.0 * (1 - t / 1800.0)), 400.0


def night(t: float) -> tuple[float, float]:
    """No PV at all: any charging would come from the grid."""
    return 0.0, 300.0


TOUR_S = 180.0  # the tour repeats every three minutes
TOUR_SCENES = (  # (start s, what happens): the demo's live line names the scene
    (0.0, "morning: PV below the house load"),
    (10.0, "the sun rises"),
    (45.0, "full sun"),
    (60.0, "a 2 kW kettle"),
    (80.0, "kettle off"),
    (100.0, "a cloud"),
    (120.0, "sun back"),
    (135.0, "GX outage (Modbus TCP off)"),
    (150.0, "GX back"),
    (160.0, "evening: the sun sets"),
)
TOUR_FAULTS = ((135.0, "venus.down", "true"), (150.0, "venus.down", "false"))


def tour(t: float) -> tuple[float, float]:
    """Every behaviour in three minutes: surplus rising, a kettle, a cloud, a GX outage (a
    fault, TOUR_FAULTS), an evening off; then again."""
    t %= TOUR_S
    sun = 1000.0  # the house takes 350 W, the charger at most ~360 W: full sun is more
    if t < 10:
        pv = 250.0
    elif t < 45:
        pv = 250.0 + (sun - 250.0) * (t - 10) / 35
    elif t < 160:
        pv = sun * (0.55 if 100 <= t < 120 else 1.0)
    else:
        pv = max(0.0, sun * (1 - (t - 160) / 15))
    return pv, 350.0 + (2000.0 if 60 <= t < 80 else 0.0)


def tour_scene(t: float) -> str:
    t %= TOUR_S
    return [name for start, name in TOUR_SCENES if start <= t][-1]


SCENARIOS: dict[str, Profile] = {
    "steady": steady,
    "kettle": kettle,
    "clouds": clouds,
    "evening": evening,
    "night": night,
    "tour": tour,
}
# scenarios that also script faults: (period s, ((t in the period, fault, value), ...))
SCENARIO_FAULTS: dict[str, tuple[float, tuple[tuple[float, str, str], ...]]] = {
    "tour": (TOUR_S, TOUR_FAULTS),
}
SCENARIO_SCENES: dict[str, Callable[[float], str]] = {"tour": tour_scene}


def load_profile(path: str | Path) -> Profile:
    """A CSV `t_s,pv_w,load_w` (header required, any step), interpolated, held after the end."""
    times: list[float] = []
    rows: list[tuple[float, float]] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"t_s", "pv_w", "load_w"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError("%s: missing column(s) %s" % (path, ", ".join(sorted(missing))))
        for n, row in enumerate(reader, start=2):
            try:
                t, pv, load = float(row["t_s"]), float(row["pv_w"]), float(row["load_w"])
            except (TypeError, ValueError):
                raise ValueError("%s line %d: not a number: %r" % (path, n, row)) from None
            if times and t <= times[-1]:
                raise ValueError("%s line %d: t_s must increase" % (path, n))
            if not all(math.isfinite(x) for x in (t, pv, load)) or pv < 0 or load < 0:
                raise ValueError("%s line %d: values must be finite, pv and load >= 0" % (path, n))
            times.append(t)
            rows.append((pv, load))
    if not rows:
        raise ValueError("%s: no rows" % path)

    def profile(t: float) -> tuple[float, float]:
        i = bisect.bisect_right(times, t)
        if i == 0:
            return rows[0]
        if i == len(times):
            return rows[-1]
        t0, t1 = times[i - 1], times[i]
        w = (t - t0) / (t1 - t0)
        (p0, l0), (p1, l1) = rows[i - 1], rows[i]
        return p0 + (p1 - p0) * w, l0 + (l1 - l0) * w

    return profile


ESS_MAX_W = 3000.0  # what the ESS Multi can charge or discharge the house battery with

class World:
    """Steps the household, the charger's physics and Venus's registers in simulated time."""

    def __init__(
        self,
        charger: VirtualIP22,
        venus: VenusRegisters,
        profile: Profile,
        phases: int = 1,
        charger_phase: int = 1,
        meter_noise_w: float = 2.0,
        ess_setpoint_w: float | None = None,
        scripted: tuple[float, tuple[tuple[float, str, str], ...]] | None = None,
        scene: Callable[[float], str] | None = None,
    ) -> None:
        if phases not in (1, 3):
            raise ValueError("phases must be 1 or 3")
        if not 1 <= charger_phase <= phases:
            raise ValueError("charger phase must be 1..%d" % phases)
        self.charger = charger
        self.venus = venus
        self.profile = profile
        self.phases = phases
        self.charger_phase = charger_phase
        self.meter_noise_w = meter_noise_w  # a real meter's reading wanders by a watt or two
        # ESS: a Multi and a house battery that hold the grid at this setpoint (None: no ESS)
        self.ess_setpoint_w = ess_setpoint_w
        self.house_battery_w = 0.0  # + = charging, as Venus's 842
        self.rng = random.Random(7)
        self.now = 0.0
        self._next_venus = 0.0
        self.pv_w = self.load_w = 0.0
        self.grid_w = (0.0, 0.0, 0.0)
        self.power_back_at: float | None = None  # a power cut ends (the charger boots)
        self.scripted = scripted  # faults at fixed times of a repeating scenario
        self._next_scripted = 0  # index into the endless sequence of those faults
        self.scene = scene

    def _scripted_faults(self, now: float) -> None:
        if not self.scripted:
            return
        period, faults = self.scripted
        while True:
            cycle, k = divmod(self._next_scripted, len(faults))
            at, name, value = faults[k]
            if cycle * period + at > now:
                return
            apply_fault(self, name, value)
            self._next_scripted += 1

    def compute(self, now: float) -> Reading:
        pv, load = self.profile(now)
        self.pv_w, self.load_w = pv, load
        n = self.phases
        per_phase_pv = [pv / n if k < n else 0.0 for k in range(3)]
        consumption = [load / n if k < n else 0.0 for k in range(3)]
        consumption[self.charger_phase - 1] += self.charger.ac_w
        noise = [self.rng.uniform(-1, 1) * self.meter_noise_w if k < n else 0.0 for k in range(3)]
        grid = tuple(consumption[k] - per_phase_pv[k] + noise[k] for k in range(3))
        if self.ess_setpoint_w is not None:  # the Multi (on L1) takes up the difference
            net = sum(grid)
            battery = max(-ESS_MAX_W, min(ESS_MAX_W, self.ess_setpoint_w - net))
            self.house_battery_w = battery
            grid = (grid[0] + battery,) + grid[1:]
        self.grid_w = grid  # type: ignore[assignment]
        ph = self.charger.physics
        return Reading(
            grid_w=grid,  # type: ignore[arg-type]
            consumption_w=tuple(consumption),  # type: ignore[arg-type]
            pv_on_grid_w=tuple(per_phase_pv),  # type: ignore[arg-type]
            battery_v=ph.voltage,
            battery_a=ph.current_a,
            soc_percent=ph.battery.soc * 100,
            phases=n,
            house_battery_w=None if self.ess_setpoint_w is None else self.house_battery_w,
        )

    def step(self, now: float) -> None:
        """Advance the world to `now`; Venus sees a new reading once a second."""
        self.now = now
        self._scripted_faults(now)
        if self.power_back_at is not None and now >= self.power_back_at:
            self.power_back_at = None
            self.charger.set_mains(True, now)
        if now >= self._next_venus:
            self.venus.update(self.compute(now))
            self._next_venus = math.floor(now) + 1.0
        else:
            self.compute(now)

    def status(self) -> dict[str, Any]:
        return {
            "t_s": round(self.now, 1),
            "scene": self.scene(self.now) if self.scene else None,
            "pv_w": round(self.pv_w),
            "load_w": round(self.load_w),
            "charger_ac_w": round(self.charger.ac_w, 1),
            "grid_w": [round(g) for g in self.grid_w[: self.phases]],
            "grid_total_w": round(sum(self.grid_w)),
            "house_battery_w": round(self.house_battery_w),
            "charger": self.charger.status(self.now),
            "venus": {
                "faults": self.venus.faults.__dict__,
                "reads": self.venus.reads,
                "exceptions": self.venus.exceptions,
            },
        }


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean: %r" % (text,))


def parse_share(text: Any) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("a share must be 0..1, got %r" % (text,))
    return value


def parse_seconds(text: Any) -> float:
    value = float(text)
    if not 0 <= value <= 86400:
        raise ValueError("seconds must be 0..86400, got %r" % (text,))
    return value


def parse_error_code(text: Any) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise ValueError("an ERR code is 0..255, got %r" % (text,))
    return value


def parse_exception_code(text: Any) -> int:
    value = int(text)
    if value not in (0, 1, 2, 3, 4, 5, 6, 10, 11):
        raise ValueError("a Modbus exception code (1-6, 10, 11) or 0 for none, got %r" % (text,))
    return value


# name: (help, where it lives, attribute, parser); "charger.silence" and "charger.reboot" act
# relative to now and are handled in apply_fault
FAULT_TABLE: dict[str, tuple[str, str, str, Callable[[Any], Any]]] = {
    "charger.corrupt": (
        "share of bytes altered on the wire (0..1)",
        "charger",
        "corrupt",
        parse_share,
    ),
    "charger.drop": ("share of bytes lost on the wire (0..1)", "charger", "drop", parse_share),
    "charger.silence": (
        "seconds of silence on the line, from now",
        "charger",
        "silent_until",
        parse_seconds,
    ),
    "charger.no_replies": (
        "true: HEX requests get no answer",
        "charger",
        "no_replies",
        parse_bool,
    ),
    "charger.reply_delay": (
        "seconds before each HEX answer",
        "charger",
        "reply_delay_s",
        parse_seconds,
    ),
    "charger.error": (
        "an ERR code (2 = battery voltage too high, ...; 0 = none): CS fault, no output",
        "charger",
        "error",
        parse_error_code,
    ),
    "charger.text_pause": (
        "seconds without text blocks after each HEX request (older firmware)",
        "charger",
        "text_pause_s",
        parse_seconds,
    ),
    "charger.reboot": ("true: power-cycle the charger now", "charger", "", parse_bool),
    "charger.power_cut": (
        "seconds without mains from now: silence and no output, then a boot (uptime 0)",
        "charger",
        "",
        parse_seconds,
    ),
    "charger.reply_jitter": (
        "up to this many seconds more before each HEX answer, at random",
        "charger",
        "reply_jitter_s",
        parse_seconds,
    ),
    "venus.down": (
        "true: the Modbus TCP service is off (connection refused)",
        "venus",
        "down",
        parse_bool,
    ),
    "venus.exception": (
        "every read answers this Modbus exception code; 0 = none",
        "venus",
        "exception",
        parse_exception_code,
    ),
    "venus.frozen": ("true: Venus's values stop updating", "venus", "frozen", parse_bool),
    "venus.silent": (
        "true: the GX takes connections and requests but never answers (hung, or unreachable)",
        "venus",
        "silent",
        parse_bool,
    ),
    "venus.meter_dropout": (
        "true: the grid meter is gone (820-822 read 0, unit 30 missing)",
        "venus",
        "meter_dropout",
        parse_bool,
    ),
}
FAULTS = {name: entry[0] for name, entry in FAULT_TABLE.items()}


def apply_fault(world: World, name: str, value: Any) -> None:
    """Set one fault by name; ValueError with a clear message for anything else."""
    if name not in FAULT_TABLE:
        raise ValueError("unknown fault %r; known: %s" % (name, ", ".join(FAULTS)))
    _, where, attribute, parse = FAULT_TABLE[name]
    parsed = parse(value)
    if name == "charger.reboot":
        if parsed:
            world.charger.reboot(world.now)
        return
    if name == "charger.power_cut":
        if parsed:
            world.charger.set_mains(False, world.now)
            world.power_back_at = world.now + parsed
        return
    if name == "charger.silence":
        parsed = world.now + parsed
    target = world.charger.faults if where == "charger" else world.venus.faults
    setattr(target, attribute, parsed)
