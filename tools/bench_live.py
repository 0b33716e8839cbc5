#!/usr/bin/env python3
"""Real-time transient and fault bench: the REAL firmware (firmware/main.py on the MicroPython
Unix port, with its default settings in automatic mode) against the simulated installation
(tools/sim) over real sockets, at speed 1, through load steps, clouds, a start into grid import
and faults of the GX and of the charger.

    .venv/bin/python tools/bench_live.py                  # every case, ~9 minutes, a table
    .venv/bin/python tools/bench_live.py --short --case steps_mid --case gx_refused --json
    .venv/bin/python tools/bench_live.py --limits --config-patch '{"control": {"settle_s": 2}}'

Why: tools/bench.py runs control.py alone in simulated time with idealised latencies; it cannot
see what only the whole firmware does: the link's reply matching and retries against replies
that take 20-250 ms, the Modbus poller's timing and its fail-safe, start-up, the charger's
reboots, what the status page claims. Here every case is measured from the simulator's side,
sampled at every physics step (10 ms), against an instantaneous oracle:

- capture: DC energy charged / DC energy the oracle charges (the largest current in
  [min, max] whose AC draw the surplus covers; 0 if even the minimum does not fit);
- import share: grid import the charger causes / the charger's active draw;
- longest import / import seconds: stretches with more than 20 W of caused import;
- switches, stored writes (0xEDF0 and 0x0200), sets of 0x2015 and 0x200E, sets out of range;
- for faults: seconds from the fault's start to the safe state, and from its end until the
  current tracks the oracle again (for 3 s);
- belief mismatches: the status API's control.charging against the truth, once a second.

`--limits` adds the physical limit of current control on the same profiles (perfect
knowledge, no latency, the charger's 2 s time constant), in simulated time, beside each row.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.build import stage_libs  # noqa: E402
from tools.ports import free_port  # noqa: E402
from tools.sim.charger import ChargerFaults, ChargerOptions, VirtualIP22  # noqa: E402
from tools.sim.physics import Battery, ChargerPhysics, efficiency  # noqa: E402
from tools.sim.serve import Background  # noqa: E402
from tools.sim.venus import VenusRegisters  # noqa: E402
from tools.sim.world import Profile, World, apply_fault  # noqa: E402

LIB = ROOT / "build" / "bench_live" / "lib"
FIRMWARE_MAIN = ROOT / "firmware" / "main.py"

MODEL = 0xA334  # an IP22 24/12: 3.0 A minimum, 12.0 A rated
PRE_S = 10.0  # the sim runs this long before the firmware starts: the charger is at 12 A then
SHORT_SCALE = 0.3  # --short: every duration times this
REPLY_DELAY_S, REPLY_JITTER_S = 0.02, 0.23  # HEX replies after 20-250 ms
IMPORT_W = 20.0  # caused import above this counts (the meter's noise is +-2 W)
TRACK_A, TRACK_SHARE = 0.6, 0.10  # tracking: within max(0.6 A, 10 %) of the oracle ...
TRACK_IDLE_A = 0.3  # ... or below this (or off) when the oracle is off ...
TRACK_HOLD_S = 3.0  # ... for this long
BELIEF_S = 3.0  # the status may lag the truth this long before it counts as a mismatch
STATUS_TIMEOUT_S = 0.8
LIMIT_DT = 0.1  # the physical limit's step (simulated time)
LATE_STEP_S = 0.05  # the pump steps every 10 ms: a gap of 50 ms is a late simulator


# -- cases -------------------------------------------------------------------------------------


@dataclass
class Case:
    """One independent run. Times are seconds from the firmware's (planned) start."""

    name: str
    profile: Profile  # t from the firmware's start -> (pv W, load W); also before it (t < 0)
    length_s: float
    volatile: str = "supported"  # ChargerOptions.volatile: "absent" = 0xEDF0 only
    events: list[tuple[float, str, Any]] = field(default_factory=list)  # (t, fault, value)
    fault: tuple[float, float] | None = None  # (start, end) for s_to_minimum / s_to_tracking
    pre_s: float = PRE_S


def constant(pv: float, load: float) -> Profile:
    return lambda t: (pv, load)


def load_steps(pv: float, base_load: float, scale: float) -> Profile:
    """Warm-up, then each step up held, then back down for as long: 200, 500, 1000, 2000 W."""
    warm, hold = 40.0 * scale, 20.0 * scale
    steps = (200.0, 500.0, 1000.0, 2000.0)

    def profile(t: float) -> tuple[float, float]:
        k, into = divmod(t - warm, 2 * hold)
        if t < warm or k >= len(steps) or into >= hold:
            return pv, base_load
        return pv, base_load + steps[int(k)]

    return profile


def toggles(
    length_s: float, gaps: tuple[float, float], values: tuple[float, float], seed: int
) -> Callable[[float], float | None]:
    """Something that goes on and off at seeded intervals (`gaps`, s), with a seeded value in
    `values` each time it is on: t -> that value, or None while it is off."""
    rng = random.Random(seed)
    edges: list[float] = []
    drawn: list[float] = []
    t = 0.0
    while t < length_s:
        t += rng.uniform(*gaps)
        edges.append(t)
        drawn.append(rng.uniform(*values))

    def at(t: float) -> float | None:
        k = bisect.bisect_right(edges, t)
        return drawn[k - 1] if k % 2 == 1 else None  # odd edges behind: on

    return at


def random_steps(length_s: float, scale: float, seed: int = 5) -> Profile:
    """Midday: 1.5 kW of PV and a 500 W house (the 24/12 runs at its full 12 A), loads of
    300-1100 W switching on and off at seeded 20-60 s intervals for 8 minutes: the kind of
    load steps an outside run measured (only the larger ones take the charger down)."""
    load = toggles(length_s, (20.0 * scale, 60.0 * scale), (300.0, 1100.0), seed)
    return lambda t: (1500.0, 500.0 + (load(t) or 0.0))


def cloud_train(length_s: float, scale: float, seed: int = 11) -> Profile:
    """PV 750 W in the sun and 20-60 % of it in a cloud's shade (seeded), a 350 W house:
    400 W of surplus in the sun (the 24/12's full 12 A), -200..+100 W in the shade, so
    most shadows take the surplus below the charger's minimum. Edges at 20-90 s intervals."""
    shade = toggles(length_s, (20.0 * scale, 90.0 * scale), (0.2, 0.6), seed)
    return lambda t: (750.0 * (shade(t) or 1.0), 350.0)


def make_cases(scale: float = 1.0) -> list[Case]:
    s = scale
    cases: list[Case] = []
    pre = max(5.0, PRE_S * s)  # past the charger's 3 s start-up: it charges when we start
    steps_len = 200.0 * s
    # a 24/12 draws at most about 360 W: operating points inside its range (5, 8, 11 A)
    points = (("low", 500.0), ("mid", 600.0), ("high", 680.0))
    for suffix, pv in points:
        cases.append(Case("steps_" + suffix, load_steps(pv, 350.0, s), steps_len))
    cases.append(Case("clouds", cloud_train(480.0 * s, s), 480.0 * s))
    cases.append(Case("midday_steps", random_steps(480.0 * s, s), 480.0 * s))
    cases.append(
        Case("midday_steps_stored", random_steps(480.0 * s, s), 480.0 * s, volatile="absent")
    )
    for suffix, pv in points:
        cases.append(
            Case("steps_stored_" + suffix, load_steps(pv, 350.0, s), steps_len, volatile="absent")
        )
    cases.append(
        Case(
            "startup_import",
            lambda t: (1000.0, 1900.0 if t < 30.0 * s else 700.0),
            120.0 * s,
        )
    )
    # the fault lasts longer than the firmware's stale_s (10 s), even with --short
    steady, f0, f_len, after = constant(650.0, 350.0), 60.0 * s, max(15.0, 30.0 * s), 60.0 * s
    length = f0 + f_len + after
    for name, fault, on, off in (
        ("gx_refused", "venus.down", True, False),
        ("gx_silent", "venus.silent", True, False),
        ("gx_exception", "venus.exception", 4, 0),
        ("meter_gone", "venus.meter_dropout", True, False),
    ):
        events = [(f0, fault, on), (f0 + f_len, fault, off)]
        cases.append(Case(name, steady, length, events=events, fault=(f0, f0 + f_len)))
    cut = 10.0 * s
    cases.append(
        Case(
            "charger_restart_on",
            steady,
            length,
            events=[(f0, "charger.power_cut", cut)],
            fault=(f0, f0 + cut),
        )
    )
    # night until the end of the fault window (the cut comes at night: the charger boots into
    # the dark), then surplus: it must come back on; tracking is measured from the surplus
    night_until = f0 + f_len
    cases.append(
        Case(
            "charger_restart_off",
            lambda t: (0.0 if t < night_until else 650.0, 350.0),
            length,
            events=[(f0, "charger.power_cut", cut)],
            fault=(f0, night_until),
        )
    )
    cases.append(
        Case(
            "charger_silent",
            steady,
            length,
            events=[(f0, "charger.silence", cut)],
            fault=(f0, f0 + cut),
        )
    )
    for case in cases:
        case.pre_s = pre
    return cases


# -- the recorder ------------------------------------------------------------------------------


class Sample(NamedTuple):
    """The installation over the `dt` seconds up to `t` (sim time)."""

    t: float
    dt: float
    pv_w: float
    load_w: float
    ac_w: float  # the charger's AC draw
    grid_w: float  # all phases, with the meter's noise
    dc_w: float  # the charger's output, V * I
    current_a: float
    delivering: bool  # mains, on (0x0200) and an effective limit > 0
    mains: bool
    limit_raw: int  # the effective limit, 0.1 A
    soc: float
    target_v: float
    nvm_writes: int


class RecordingWorld(World):
    """The World with a sample at every step and scheduled faults, in the simulator's thread."""

    def __init__(self, *args: Any, events: list[tuple[float, str, Any]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.samples: list[Sample] = []
        self.events = sorted(events, key=lambda e: e[0])
        self.delivering = False  # the latest truth, read by the status poller's thread

    def step(self, now: float) -> None:
        last = self.now
        self.now = now
        while self.events and self.events[0][0] <= now:
            _, name, value = self.events.pop(0)
            apply_fault(self, name, value)
        super().step(now)
        c = self.charger
        ph = c.physics
        limit = c.effective_limit_raw(now)
        delivering = c.mains and c.on and limit > 0
        self.delivering = delivering
        voltage = ph.voltage
        self.samples.append(
            Sample(
                now, max(0.0, now - last), self.pv_w, self.load_w, c.ac_w, sum(self.grid_w),
                voltage * ph.current_a, ph.current_a, delivering, c.mains, limit,
                ph.battery.soc, ph.target_voltage, c.counters.nvm_writes,
            )
        )  # fmt: skip


def make_world(case: Case, t0: float) -> RecordingWorld:
    charger = VirtualIP22(
        ChargerOptions(model=MODEL, volatile=case.volatile),
        Battery(nominal_v=24, capacity_ah=200, soc=0.3),
        ChargerFaults(reply_delay_s=REPLY_DELAY_S, reply_jitter_s=REPLY_JITTER_S),
    )
    charger.sets = deque()  # every set of the run, not the last 1000
    events = [(t0 + t, name, value) for t, name, value in case.events]
    return RecordingWorld(charger, VenusRegisters(), lambda t: case.profile(t - t0), events=events)


# -- the oracle and the metrics ----------------------------------------------------------------


class Oracle:
    """The largest current in [min, max] (capped by what the battery takes) whose AC draw
    (the simulator's efficiency curve + its no-load draw) the surplus covers; 0 if even the
    minimum does not fit. Instantaneous: no time constant, no start-up."""

    def __init__(self, min_a: float, max_a: float) -> None:
        self.min_a, self.max_a = min_a, max_a
        self.battery = Battery(nominal_v=24, capacity_ah=200)
        self.ph = ChargerPhysics(rated_a=max_a, battery=self.battery)
        self.rated_w = self.ph.v_absorption * self.ph.rated_a
        self._cache: dict[tuple[float, float, float], float] = {}

    def draw_w(self, amps: float) -> float:
        out = self.battery.terminal_voltage(amps) * amps
        return self.ph.no_load_w + (out / efficiency(out, self.rated_w) if out > 0 else 0.0)

    def current(self, surplus_w: float, soc: float, target_v: float) -> float:
        key = (round(surplus_w, 1), round(soc, 5), target_v)
        if key not in self._cache:
            self.battery.soc = soc
            self._cache[key] = self._solve(surplus_w, target_v)
        return self._cache[key]

    def _solve(self, surplus_w: float, target_v: float) -> float:
        high = min(self.max_a, self.battery.accepts(target_v))
        low = min(self.min_a, high)
        if low <= 0 or self.draw_w(low) > surplus_w:
            return 0.0
        if self.draw_w(high) <= surplus_w:
            return high
        for _ in range(30):  # the draw rises with the current: bisect
            mid = (low + high) / 2
            if self.draw_w(mid) <= surplus_w:
                low = mid
            else:
                high = mid
        return low

    def dc_w(self, amps: float, soc: float) -> float:
        self.battery.soc = soc
        return self.battery.terminal_voltage(amps) * amps if amps > 0 else 0.0


def longest_run(flags: list[tuple[float, float, bool]]) -> tuple[float, float]:
    """(longest, total) seconds of (t, dt, flag) samples with the flag set."""
    longest = total = run = 0.0
    for _, dt, flag in flags:
        if flag:
            run += dt
            total += dt
            longest = max(longest, run)
        else:
            run = 0.0
    return longest, total


def tracking_since(
    samples: list[Sample], oracle_a: list[float], since: float, hold_s: float = TRACK_HOLD_S
) -> float | None:
    """Seconds from `since` until the current is within tolerance of the oracle's and stays
    so for `hold_s`; None if never."""
    start: float | None = None
    for s, want in zip(samples, oracle_a):
        if s.t < since:
            continue
        if want > 0:
            ok = abs(s.current_a - want) <= max(TRACK_A, TRACK_SHARE * want)
        else:
            ok = not s.delivering or s.current_a < TRACK_IDLE_A
        if not ok:
            start = None
            continue
        if start is None:
            start = s.t
        if s.t - start >= hold_s:
            return round(max(0.0, start - since), 2)
    return None


def energy_metrics(
    samples: list[Sample], t_from: float, t_to: float, min_raw: int, rated_raw: int,
    fault: tuple[float, float] | None = None, no_load_w: float = 1.0,
) -> dict[str, Any]:  # fmt: skip
    """The metrics the simulator alone can tell, over samples with t_from < t <= t_to."""
    window = [s for s in samples if t_from < s.t <= t_to]
    oracle = Oracle(min_raw / 10, rated_raw / 10)
    oracle_a = [oracle.current(s.pv_w - s.load_w, s.soc, s.target_v) for s in window]
    dc = sum(s.dc_w * s.dt for s in window) / 3600
    dc_oracle = sum(oracle.dc_w(a, s.soc) * s.dt for s, a in zip(window, oracle_a)) / 3600
    caused_total = active_total = 0.0
    importing: list[tuple[float, float, bool]] = []
    for s in window:
        # the draw above idle (standby is below it), also while the current still decays
        # after a limit of 0: what charging costs, as tools/bench.py's Plant counts it
        active = max(0.0, s.ac_w - no_load_w)
        caused = max(0.0, s.grid_w) - max(0.0, s.grid_w - active)
        caused_total += caused * s.dt
        active_total += active * s.dt
        importing.append((s.t, s.dt, caused > IMPORT_W))
    longest, total = longest_run(importing)
    switches = 0
    for a, b in zip(window, window[1:]):
        if a.delivering != b.delivering or a.mains != b.mains:
            switches += 1
    out: dict[str, Any] = {
        "capture": round(dc / dc_oracle, 4) if dc_oracle > 0 else None,
        "dc_wh": round(dc, 2),
        "oracle_dc_wh": round(dc_oracle, 2),
        "import_share": round(caused_total / active_total, 4) if active_total > 0 else 0.0,
        "import_wh": round(caused_total / 3600, 3),
        "longest_import_s": round(longest, 2),
        "import_s": round(total, 2),
        "switches": switches,
        "s_to_minimum": None,
        "s_to_tracking": None,
    }
    if fault is not None:
        start, end = fault
        for s in window:
            if s.t >= start and (s.limit_raw <= min_raw or not s.delivering):
                out["s_to_minimum"] = round(s.t - start, 2)
                break
        out["s_to_tracking"] = tracking_since(window, oracle_a, end)
    return out


def set_metrics(
    sets: list[tuple[float, int, bytes]], min_raw: int, rated_raw: int
) -> dict[str, Any]:
    """Counts of the HEX sets the charger received (the window's); the first out-of-range
    sets as "t s: 0xREG = raw" for a look."""
    out: dict[str, Any] = {
        "sets_2015": 0, "sets_200e": 0, "sets_0200": 0, "zero_2015_sets": 0, "out_of_range": 0,
    }  # fmt: skip
    seen: list[str] = []
    for t, reg, raw in sets:
        if reg == 0x2015:
            out["sets_2015"] += 1
        elif reg == 0x200E:
            out["sets_200e"] += 1
        elif reg == 0x0200:
            out["sets_0200"] += 1
        if reg not in (0x2015, 0xEDF0) or len(raw) != 2:
            continue
        value = raw[0] | raw[1] << 8
        if reg == 0x2015 and value == 0xFFFF:
            continue  # a release of the volatile limit
        if reg == 0x2015 and value == 0:
            out["zero_2015_sets"] += 1  # "off" where 0x2015 = 0 is the switch; counted below too
        if not min_raw <= value <= rated_raw:
            out["out_of_range"] += 1
            if len(seen) < 10:
                seen.append("%.1f s: 0x%04X = %d" % (t, reg, value))
    out["out_of_range_sets"] = seen
    return out


def belief_metrics(beliefs: list[tuple[float, bool | None, bool]], t0: float) -> dict[str, Any]:
    """Stretches where the status API's control.charging (None: no claim) disagreed with the
    truth: how many lasted more than BELIEF_S, the longest, and the first ten of those as
    (start s from t0, seconds, what the API said)."""
    stretches: list[tuple[float, float, bool | None]] = []
    began: tuple[float, bool | None] | None = None
    last_t = beliefs[-1][0] if beliefs else 0.0
    for t, said, truth in beliefs + [(math.inf, None, False)]:
        wrong = said is not None and said != truth
        if wrong and began is None:
            began = (t, said)
        elif not wrong and began is not None:
            stretches.append((began[0], min(t, last_t) - began[0], began[1]))
            began = None
    long = [(round(t - t0, 1), round(d, 1), said) for t, d, said in stretches if d > BELIEF_S]
    return {
        "belief_mismatches": len(long),
        "belief_longest_s": round(max((d for _, d, _ in stretches), default=0.0), 1),
        "belief_stretches": long[:10],
        "status_samples": len(beliefs),
    }


# -- the firmware ------------------------------------------------------------------------------


def micropython() -> str:
    beside = Path(sys.executable).parent / "micropython"
    if not beside.exists():
        raise SystemExit("micropython not found beside %s: run ./dev sim --help" % sys.executable)
    return str(beside)


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class Firmware:
    """firmware/main.py in a `micropython` process (as host_tests/fwrun.py starts it)."""

    def __init__(
        self, workdir: Path, uart: str, config: dict[str, Any], extra: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.extra = extra  # more arguments for main.py, e.g. ("--admin-password", PW)
        self.uart = uart
        self.port = free_port()
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / "firmware.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        args = [micropython(), str(FIRMWARE_MAIN), "--config", str(self.config_path)]
        args += ["--uart", self.uart, "--http-host", "127.0.0.1", "--http-port", str(self.port)]
        args += ["--state", str(self.workdir / "state.json"), *self.extra]
        env = dict(os.environ, MICROPYPATH="%s:.frozen" % LIB)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def status(self, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        url = "http://127.0.0.1:%d/api/status" % self.port
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # lets it save its counters
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- one case ----------------------------------------------------------------------------------


def sleep_until(sim: Background, t: float) -> None:
    while (left := t - sim.now()) > 0:
        time.sleep(min(left, 0.05))


def run_case(case: Case, config_patch: dict[str, Any]) -> dict[str, Any]:
    """Run one case in real time; its row of metrics (and "error" if the firmware failed)."""
    wall0 = time.monotonic()
    t0 = case.pre_s
    world = make_world(case, t0)
    charger = world.charger
    beliefs: list[tuple[float, bool | None, bool]] = []
    error: str | None = None
    with tempfile.TemporaryDirectory(prefix="bench_live_%s_" % case.name) as tmp:
        with Background(world) as sim:
            host, port = sim.endpoints["venus"].rsplit(":", 1)
            config = {"control": {"mode": "auto"}, "venus": {"host": host, "port": int(port)}}
            fw = Firmware(Path(tmp), sim.endpoints["charger"], merge(config, config_patch))
            sleep_until(sim, t0)
            t_start = sim.now()
            fw.spawn()
            end = t0 + case.length_s
            try:
                next_read = t_start + 1.0
                while sim.now() < end:
                    if fw.exited():
                        error = "firmware exited: " + fw.log_tail()
                        break
                    sleep_until(sim, min(next_read, end))
                    next_read += 1.0
                    if sim.now() >= end:
                        break
                    try:
                        said = fw.status()["control"]["charging"]
                    except (OSError, ValueError, KeyError, TypeError):
                        continue  # not serving yet, or too slow: no sample
                    beliefs.append((sim.now(), said, world.delivering))
            finally:
                fw.stop()
    # the simulator's thread has ended: its records are ours now
    samples = world.samples
    row = energy_metrics(
        samples, t_start, end, charger.min_raw, charger.rated_raw, shift(case.fault, t0)
    )
    before = [s.nvm_writes for s in samples if s.t <= t_start]
    during = [s.nvm_writes for s in samples if t_start < s.t <= end]
    nvm = during[-1] - (before[-1] if before else 0) if during else 0
    sets = [s for s in charger.sets if t_start <= s[0] <= end]
    counts = set_metrics(sets, charger.min_raw, charger.rated_raw)
    row.update(counts)
    row["stored_writes"] = nvm + counts["sets_0200"]
    row.update(belief_metrics(beliefs, t_start))
    # the simulator's own timeliness: steps far apart mean a loaded machine, a doubtful run
    gaps = [s.dt for s in samples if t_start < s.t <= end]
    row["sim_max_step_ms"] = round(1000 * max(gaps, default=0.0), 1)
    row["sim_late_steps"] = sum(1 for dt in gaps if dt > LATE_STEP_S)
    row["firmware_start_s"] = round(t_start, 2)
    row["fault_window_s"] = list(case.fault) if case.fault else None  # from the planned start
    row["wall_s"] = round(time.monotonic() - wall0, 1)
    row["error"] = error
    return row


def shift(window: tuple[float, float] | None, t0: float) -> tuple[float, float] | None:
    return None if window is None else (window[0] + t0, window[1] + t0)


# -- the physical limit ------------------------------------------------------------------------


def physical_limit(case: Case) -> dict[str, Any]:
    """Perfect knowledge, zero latency, on the charger's first-order lag (tau 2 s) that may be
    overdriven: every 0.1 s the limit that brings the current to the oracle's in one step
    (deadbeat), clamped to [min, max], or 0 (off, no start-up) when the oracle is off or the
    current must fall faster than the minimum allows. Wear-free. Simulated time, no sockets.
    It takes over at the firmware's planned start, from the same state (12 A stored limit)."""
    rated_raw = 120
    min_raw = rated_raw // 4
    min_a, max_a = min_raw / 10, rated_raw / 10
    battery = Battery(nominal_v=24, capacity_ah=200, soc=0.3)
    ph = ChargerPhysics(rated_a=max_a, battery=battery)
    ph.restart()
    oracle = Oracle(min_a, max_a)
    alpha = 1.0 - math.exp(-LIMIT_DT / ph.time_constant_s)
    t0 = case.pre_s
    samples: list[Sample] = []
    steps = int(round((t0 + case.length_s) / LIMIT_DT))
    for k in range(steps):
        t = k * LIMIT_DT
        pv, load = case.profile(t - t0)
        want = oracle.current(pv - load, battery.soc, ph.target_voltage)
        now_a = ph.current_a
        limit = now_a + (want - now_a) / alpha
        if want <= 0 or limit < min_a:
            limit = 0.0
        if t < t0 - 1e-9:
            limit = max_a  # before the firmware's start: the charger's stored 12 A, as live
        ph.limit_a = min(limit, max_a)
        ph.step(LIMIT_DT)
        ac = ph.ac_w
        samples.append(
            Sample(
                t + LIMIT_DT, LIMIT_DT, pv, load, ac, load + ac - pv, ph.output_w, ph.current_a,
                ph.limit_a > 0, True, round(ph.limit_a * 10), battery.soc, ph.target_voltage, 0,
            )
        )  # fmt: skip
    m = energy_metrics(samples, t0, t0 + case.length_s, min_raw, rated_raw)
    return {k: m[k] for k in ("capture", "import_share", "longest_import_s", "import_s")}


# -- output ------------------------------------------------------------------------------------


COLUMNS: list[tuple[str, str, Callable[[Any], str], int]] = [
    ("capture", "capture", lambda v: "%.1f%%" % (100 * v), 7),
    ("import", "import_share", lambda v: "%.2f%%" % (100 * v), 7),
    ("longest", "longest_import_s", lambda v: "%.1f" % v, 7),
    ("imp s", "import_s", lambda v: "%.1f" % v, 6),
    ("switch", "switches", str, 6),
    ("stored", "stored_writes", str, 6),
    ("2015", "sets_2015", str, 5),
    ("200E", "sets_200e", str, 5),
    ("range", "out_of_range", str, 5),
    ("to min", "s_to_minimum", lambda v: "%.1f" % v, 6),
    ("to track", "s_to_tracking", lambda v: "%.1f" % v, 8),
    ("belief", "belief", str, 9),
    ("sim ms", "sim_max_step_ms", lambda v: "%.0f" % v, 6),
]


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = "%-20s " % "case" + " ".join("%*s" % (width, title) for title, _, _, width in COLUMNS)
    lines = [head]
    for name, row in rows.items():
        if "capture" not in row:  # the case broke before it measured anything
            lines.append("%-20s ERROR: %s" % (name, row.get("error")))
            continue
        cells = []
        for _, key, fmt, width in COLUMNS:
            if key == "belief":
                text = "%d/%.0fs" % (row["belief_mismatches"], row["belief_longest_s"])
            else:
                value = row.get(key)
                text = "-" if value is None else fmt(value)
            cells.append("%*s" % (width, text))
        lines.append("%-20s " % name + " ".join(cells))
        limit = row.get("limit")
        if limit:
            cells = [
                "%*s" % (width, "-" if limit.get(key) is None else fmt(limit[key]))
                for _, key, fmt, width in COLUMNS[:4]
            ]
            lines.append("%-20s " % "  physical limit" + " ".join(cells))
        if row.get("error"):
            lines.append("  ERROR: " + row["error"].replace("\n", "\n    "))
    lines.append("")
    lines.append(
        "capture: DC energy / the instant oracle's; import: caused import / active draw;"
        " longest, imp s: caused import > %d W;" % IMPORT_W
    )
    lines.append(
        "stored: 0xEDF0 + 0x0200 writes; range: 0x2015/0xEDF0 sets outside [min, rated];"
        " to min / to track: s from the fault's start / end;"
    )
    lines.append(
        "belief: status claims wrong for > %g s (count/longest); sim ms: the simulator's"
        " longest step (10 ms when the machine keeps up)" % BELIEF_S
    )
    return "\n".join(lines)


def run_one(name: str, short: bool, patch: dict[str, Any], limits: bool) -> dict[str, Any]:
    """A worker's job (cases hold closures, so the worker builds its own from the name)."""
    case = {c.name: c for c in make_cases(SHORT_SCALE if short else 1.0)}[name]
    row = run_case(case, patch)
    if limits and case.fault is None:
        row["limit"] = physical_limit(case)
    return row


def main(argv: list[str] | None = None) -> int:
    names = [c.name for c in make_cases()]
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=names, help="run this case (repeatable)")
    ap.add_argument("--jobs", type=int, default=6, help="cases in parallel (6)")
    ap.add_argument("--short", action="store_true", help="durations scaled by %g" % SHORT_SCALE)
    ap.add_argument("--json", action="store_true", help="one JSON object")
    ap.add_argument("--limits", action="store_true", help="also the physical limit per profile")
    ap.add_argument(
        "--config-patch",
        default="{}",
        metavar="JSON",
        help='merged into the firmware\'s config, e.g. \'{"control": {"settle_s": 2}}\'',
    )
    args = ap.parse_args(argv)
    try:
        patch = json.loads(args.config_patch)
        if not isinstance(patch, dict):
            raise ValueError("must be a JSON object")
    except ValueError as err:
        print("bench_live: --config-patch: %s" % err, file=sys.stderr)
        return 2
    micropython()
    stage_libs(LIB)
    chosen = args.case or names
    lengths = {c.name: c.length_s for c in make_cases()}
    order = sorted(dict.fromkeys(chosen), key=lambda n: -lengths[n])  # longest first
    wall0 = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {
            name: pool.submit(run_one, name, args.short, patch, args.limits) for name in order
        }
        for name in order:
            try:
                rows[name] = futures[name].result()
            except Exception as err:  # a case that broke is reported, the others still count
                rows[name] = {"error": "%s: %s" % (type(err).__name__, err)}
            if not args.json:
                print("bench_live: %s done" % name, file=sys.stderr, flush=True)
    rows = {name: rows[name] for name in chosen}
    wall = round(time.monotonic() - wall0, 1)
    if args.json:
        print(json.dumps({"cases": rows, "wall_s": wall, "short": args.short}))
    else:
        print(table(rows))
        print("wall time %.0f s (%d cases, %d jobs)" % (wall, len(rows), args.jobs))
    return 1 if any(row.get("error") for row in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
