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


def stage_libs(lib: Path, compiled: bool = False) -> Path:
    """lib/microdot/{__init__,microdot}.py (or .mpy): the layout the board's /lib has."""
    target = lib / "microdot"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for source in microdot_sources():
        if compiled:
            compile_mpy(source, target / (source.stem + ".mpy"))
        else:
            shutil.copy(source, target / source.name)
    return lib


def firmware_sources() -> list[Path]:
    return sorted(FIRMWARE.glob("*.py"))


if __name__ == "__main__":
    print(stage_libs(ROOT / "build" / "host" / "lib"))
