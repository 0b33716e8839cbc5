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
sys.path.insert(0, str(ROOT / "venus_os"))  # the Venus OS service's flat modules

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# ./dev test runs the tests in 8 parallel pytest-xdist workers (--dist loadgroup): each test on
# its own, handed out one at a time in the order collected (--no-loadscope-reorder), except the
# files marked xdist_group (their tests share a module-scoped firmware), which go whole to one
# worker. Most of the suite waits on real time (the CPU is ~40 % busy on 2 cores), so it takes
# about as long as its slowest test from when that test starts: these files go first, the
# longest tests and groups first (seconds on their own, 2 cores). A test that takes more than a
# minute, or a grouped file of more than half a minute, belongs here too.
SLOW_FILES_FIRST = (
    "test_heap_core.py",  # 300 (IP22_CORE_SECONDS): the core on a small heap
    "test_demo_tour.py",  # 185: the tour, three minutes
    "test_web_abuse.py",  # ~110, one group
    "test_bench_live.py",  # ~66 (tools/bench_live.py: several firmware processes)
    "test_heap.py",  # 58
    "test_mqtt.py",  # 139 in all, the longest 54
    "test_flash.py",  # 52
    "test_ota.py",  # 48
    "test_control_regressions.py",  # ~290 in all, each 15-46
    "test_control_e2e.py",  # ~190 in all (two cases also as the Venus OS service), the longest 40
    "test_venus_bridge.py",  # ~30, one group
    "test_venus_service.py",  # ~80 in all, the longest 35
    "test_api.py",  # ~80, one group per runner (the Unix port, the Venus OS service)
    "test_page_chart.py",  # ~25, one group
    "test_page.py",  # ~30, one group
    "test_firmware_e2e.py",  # 77 in all, the longest 32
    "test_charger_link.py",  # 94 in all
    "test_vedirect_fuzz.py",  # 47, CPU (hypothesis)
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
