"""Shared pytest set-up: firmware/ and tools/ on sys.path, paths to the tool binaries."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TOOLS = ROOT / "tools"
sys.path.insert(0, str(ROOT))  # tools.sim
sys.path.insert(0, str(FIRMWARE))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# ./dev test runs the files in parallel pytest-xdist workers, each file whole on one worker
# (--dist loadfile), handed out in the order collected (--no-loadscope-reorder). Most of the
# suite waits on real time, so it takes about as long as its slowest file from when that file
# starts: these go first, slowest first (seconds on their own, 2 cores). A new file that takes
# more than a minute belongs here too.
SLOW_FILES_FIRST = (
    "test_heap_core.py",  # ~630: ten minutes of the core on a small heap
    "test_control_regressions.py",  # ~290
    "test_control_e2e.py",  # 147
    "test_mqtt.py",  # 139
    "test_charger_link.py",  # 94
    "test_firmware_e2e.py",  # 77
    "test_flash.py",  # 67
    "test_bench_live.py",  # ~66 (tools/bench_live.py: several firmware processes)
    "test_heap.py",  # 58
    "test_vedirect_fuzz.py",  # 47, CPU (hypothesis)
    "test_ota.py",  # 46
    "test_api.py",  # 38
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: the files of SLOW_FILES_FIRST first (the same order in every worker;
    the tests of a file keep theirs). A serial run keeps pytest's order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: n for n, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def venv_tool(name: str) -> str | None:
    """A console script installed next to this interpreter (the .venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def need_tool(name: str) -> str:
    """The tool's path; in CI a missing tool fails the test instead of skipping it."""
    path = venv_tool(name)
    if path is None:
        if IN_CI:
            pytest.fail("%s is not installed (./dev test installs it)" % name)
        pytest.skip("%s is not installed" % name)
    return path
