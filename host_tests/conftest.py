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
