"""Run the real firmware (firmware/main.py) on the MicroPython Unix port against the simulator,
for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from conftest import FIRMWARE, ROOT, need_tool
from tools.build import stage_libs
from tools.locks import file_lock
from tools.ports import free_port
from tools.sim.charger import ChargerOptions, VirtualIP22
from tools.sim.physics import Battery
from tools.sim.serve import Background
from tools.sim.venus import VenusRegisters
from tools.sim.world import SCENARIOS, World

LIB = ROOT / "build" / "test" / "lib"
_lib_checked = False


def staged_lib() -> Path:
    """LIB (microdot, umqtt.simple): what the Unix port needs besides firmware/. Shared by the
    parallel test workers: the first to get the lock stages it, the others wait and find it
    there (ussl.py is written last, so a half-staged LIB is staged again)."""
    global _lib_checked
    if not _lib_checked:
        with file_lock(LIB.parent / "lib.lock"):
            if not (LIB / "ussl.py").exists():
                stage_libs(LIB)
        _lib_checked = True
    return LIB


def make_world(soc: float = 0.3, **options: Any) -> World:
    charger = VirtualIP22(ChargerOptions(**options), Battery(soc=soc))
    return World(charger, VenusRegisters(), SCENARIOS["steady"])


class Firmware:
    """firmware/main.py in a `micropython` process; `status()` reads /api/status. With
    `gx=True` the same firmware under CPython as the Venus OS service runs it
    (venus_os/service.py, the charger through pyserial; no D-Bus unless `env` gives a bus)."""

    def __init__(
        self,
        workdir: Path,
        uart: str,
        config: Any = None,
        raw_config: str | None = None,
        extra: tuple[str, ...] = (),
        heapsize: str | None = None,
        build: tuple[Path, Path] | None = None,
        gx: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.gx = gx
        self.env = env
        self.workdir = workdir
        self.extra = extra
        self.heapsize = heapsize  # -X heapsize of the Unix port (None: its default)
        self.build = build  # (firmware, lib) compiled to .mpy as on the board (bench_heap.build)
        self.uart = uart
        self.port = free_port()
        self.config_path = workdir / "config.json"
        if raw_config is not None:
            self.config_path.write_text(raw_config)
        elif config is not None:
            self.config_path.write_text(json.dumps(config))
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self, timeout: float = 15) -> "Firmware":
        if self.gx:
            env = dict(os.environ, **(self.env or {}))
            args = [sys.executable, str(ROOT / "venus_os" / "service.py")]
            args += [] if self.env and "DBUS_SYSTEM_BUS_ADDRESS" in self.env else ["--no-dbus"]
        else:
            micropython = need_tool("micropython")
            firmware, lib = self.build or (FIRMWARE, staged_lib())
            env = dict(os.environ, MICROPYPATH="%s:.frozen" % lib)
            args = [micropython] + (["-X", "heapsize=" + self.heapsize] if self.heapsize else [])
            args += [str(firmware / "main.py")]
        args += ["--config", str(self.config_path)]
        args += ["--uart", self.uart, "--http-host", "127.0.0.1", "--http-port", str(self.port)]
        args += list(self.extra)
        self.log_file = open(self.workdir / "firmware.log", "w")
        self.proc = subprocess.Popen(
            args, stdout=self.log_file, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("firmware exited: " + self.read_log())
            try:
                self.status()
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("firmware did not serve /api/status: " + self.read_log())

    def status(self) -> dict[str, Any]:
        url = "http://127.0.0.1:%d/api/status" % self.port
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)

    def wait_for(self, check: Any, timeout: float = 15, what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if check(last):
                    return last
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(
            "timed out waiting for %s; last status: %s\n%s"
            % (what, json.dumps(last)[:3000], self.read_log())
        )

    def read_log(self) -> str:
        path = self.workdir / "firmware.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log_file.close()

    def __enter__(self) -> "Firmware":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def set_profile(sim: Background, pv: float, load: float) -> None:
    """A steady household from now on: `pv` W of PV, `load` W of load."""
    sim.call(lambda: setattr(sim.world, "profile", lambda t: (pv, load)))


def truth(sim: Background) -> dict[str, Any]:
    """The simulated installation as it is (the charger's own state, not the firmware's)."""
    return sim.call(lambda: sim.world.status())


def wait(check: Callable[[], bool], timeout: float, what: str, fw: Firmware) -> float:
    """Seconds until `check()` held; on a time-out the controller's status and the log."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError("timed out: %s\n%s\n%s" % (what, fw.status()["control"], fw.read_log()))


__all__ = ["Background", "Firmware", "make_world", "set_profile", "truth", "wait"]
