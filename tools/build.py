"""Stage what the board (or the Unix port) needs besides firmware/: the libraries from PyPI,
taken from this venv, as .py or compiled with mpy-cross. Used by the demo, the tests and
tools/flash.py. Nothing here is vendored into the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def microdot_sources() -> list[Path]:
    import microdot

    package = Path(microdot.__file__).resolve().parent
    return [package / "__init__.py", package / "microdot.py"]


def mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    return str(beside) if beside.exists() else "mpy-cross"


def compile_mpy(source: Path, target: Path) -> None:
    subprocess.run([mpy_cross(), "-O2", "-o", str(target), str(source)], check=True)


# umqtt.simple is frozen into the official ESP32 images (the board needs no copy); the Unix
# port gets PyPI's sdist, pinned. Its API differs a little from the frozen 1.8.0: mqttlink.py
# works with both.
UMQTT = ("micropython-umqtt.simple", "1.3.4", "umqtt/simple.py")
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
CACHE = ROOT / "build" / "cache"


def umqtt_source() -> Path:
    """umqtt/simple.py, downloaded once into build/cache (by one process at a time: the
    parallel test workers all want it on a fresh clone)."""
    target = CACHE / ("umqtt-simple-%s.py" % UMQTT[1])
    if not target.exists():
        from tools.fetch_sdist import fetch
        from tools.locks import file_lock

        with file_lock(CACHE / ".lock"):
            if not target.exists():  # another process may have fetched it while we waited
                part = target.with_suffix(".part")
                fetch(*UMQTT, part, sha256=UMQTT_SHA256)
                part.rename(target)
    return target


def stage_umqtt(lib: Path, compiled: bool = False) -> list[Path]:
    """lib/umqtt/simple.py (or .mpy) and the `ussl` alias PyPI's 1.3.4 imports: what the Unix
    port needs for MQTT (the ESP32 has umqtt frozen). The files written."""
    package = lib / "umqtt"
    package.mkdir(parents=True, exist_ok=True)
    init = package / "__init__.py"
    init.write_text("")
    if compiled:
        simple = package / "simple.mpy"
        compile_mpy(umqtt_source(), simple)
    else:
        simple = package / "simple.py"
        shutil.copy(umqtt_source(), simple)
    # PyPI's 1.3.4 imports `ussl`, which newer Unix ports no longer alias
    ussl = lib / "ussl.py"
    ussl.write_text("from ssl import *  # noqa: F403 (umqtt 1.3.4 on the Unix port)\n")
    return [init, simple, ussl]


def stage_libs(lib: Path, compiled: bool = False, umqtt: bool = True) -> Path:
    """lib/microdot/{__init__,microdot}.py (or .mpy): the layout the board's /lib has; with
    `umqtt`, lib/umqtt/simple.py too (what the Unix port lacks and the ESP32 has frozen)."""
    target = lib / "microdot"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for source in microdot_sources():
        if compiled:
            compile_mpy(source, target / (source.stem + ".mpy"))
        else:
            shutil.copy(source, target / source.name)
    if umqtt:
        stage_umqtt(lib, compiled)
    return lib


def firmware_sources() -> list[Path]:
    return sorted(FIRMWARE.glob("*.py"))


if __name__ == "__main__":
    print(stage_libs(ROOT / "build" / "host" / "lib"))
