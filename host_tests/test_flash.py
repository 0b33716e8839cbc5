"""tools/flash.py: what it refuses before touching anything, a stable dry run; and (with the Unix
port acting as a board, tools/fakeboard.py) a real install through mpremote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

FLASH = [sys.executable, str(ROOT / "tools" / "flash.py")]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FLASH + list(args), capture_output=True, text=True, timeout=timeout)


def test_dry_run_is_stable_and_touches_nothing() -> None:
    first = run("--dry-run", "--no-prompt", "--port", "socket://127.0.0.1:9")
    second = run("--dry-run", "--no-prompt", "--port", "socket://127.0.0.1:9")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    out = first.stdout
    for step in ("nowdt", "would compile", "app_a/app.mpy", "lib/microdot/microdot.mpy",
                 "main.py", "would write config.json", "would reset"):  # fmt: skip
        assert step in out, step


def test_bad_values_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for args, message in (
        (("--set", "control.mode=turbo"), "control.mode"),
        (("--max-current", "-3"), "charger.max_current_a"),
        (("--set", "nonsense"), "SECTION.FIELD=VALUE"),
        (("--set", "venus.unit=999"), "venus.unit"),
    ):
        # a port nobody listens on: had it got that far, the error would be "no board"
        done = run("--no-prompt", "--port", "socket://127.0.0.1:9", *args, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)


def test_no_board_is_exit_3() -> None:
    done = run("--no-prompt", "--port", "socket://127.0.0.1:9", timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
