"""The firmware as the heap benchmark runs it: built as on the board (.mpy, the page, the
libraries), the Unix port that runs it, its -X heapsize argument, and the revision measured."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tools.build import FIRMWARE, ROOT, compile_mpy, firmware_sources, stage_libs

BUILD = ROOT / "build" / "heap"


def parse_size(text: str) -> int:
    """A -X heapsize argument (192K, 1M, 200000) in bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise ValueError("a heap size like 192K, 1M or 200000: %r" % text)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def size_arg(n: int) -> str:
    """Bytes as a -X heapsize argument, in K when it is whole kilobytes."""
    return "%dK" % (n // 1024) if n % 1024 == 0 else str(n)


# -- the build, as on the board -----------------------------------------------------------------


def build(dest: Path = BUILD) -> tuple[Path, Path]:
    """firmware/*.py -> dest/fw/*.mpy (main.py stays source: the entry point), the page in
    dest/fw/static/, microdot and umqtt.simple as .mpy in dest/lib. Returns (fw, lib)."""
    fw = dest / "fw"
    if fw.exists():
        shutil.rmtree(fw)
    fw.mkdir(parents=True)
    for source in firmware_sources():
        if source.name == "main.py":
            shutil.copy(source, fw / "main.py")
        else:
            compile_mpy(source, fw / (source.stem + ".mpy"))
    shutil.copytree(FIRMWARE / "static", fw / "static")
    (fw / "main_trace.py").write_text(TRACE_MAIN)
    lib = stage_libs(dest / "lib", compiled=True)
    return fw, lib


# --trace: the same firmware, entered through this wrapper, which prints the traceback of an
# exception that ends a supervised task (app.py logs only its type and message) and re-raises
# it, so the supervisor counts and restarts as always; and samples the live heap (gc.collect()
# every 20 ms, which changes the timing) during the first 30 s to find the start-up peak.
TRACE_MAIN = """import sys
import app

_supervise = app.App.supervise


def supervise(self, name, make):
    async def traced():
        try:
            return await make()
        except Exception as err:
            print("traceback of task", name)
            sys.print_exception(err)
            raise

    return _supervise(self, name, traced)


app.App.supervise = supervise
_run = app.App.run


async def sample_startup(seconds=30):
    # the live heap (after gc.collect()) every 20 ms during start-up, and its peak
    import asyncio
    import gc
    from ticks import ticks_diff, ticks_ms

    t0 = ticks_ms()
    peak = at = 0
    while ticks_diff(ticks_ms(), t0) < seconds * 1000:
        gc.collect()
        used = gc.mem_alloc()
        if used > peak:
            peak, at = used, ticks_diff(ticks_ms(), t0)
        await asyncio.sleep_ms(20)
    print("trace: live heap peak in the first %d s: %d B at %d ms" % (seconds, peak, at))


async def run(self):
    import asyncio

    asyncio.create_task(sample_startup())
    await _run(self)


app.App.run = run
import main  # noqa: E402,F401  (runs the firmware with sys.argv)
"""


def micropython_path() -> str:
    """The Unix port beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if beside.exists() else (shutil.which("micropython") or "micropython")


def firmware_revision() -> dict[str, Any]:
    """Which firmware was measured: the commit and the firmware files changed since."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
            return out.stdout.rstrip("\n")
        except OSError:
            return ""

    changed = git("status", "--porcelain", "--", "firmware")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "firmware_changes": [line[3:] for line in changed.splitlines()],
    }
