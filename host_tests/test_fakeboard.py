"""tools/fakeboard.py: the MicroPython Unix port as a board that mpremote drives over socket://."""

from __future__ import annotations

import hashlib
import importlib.util
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from conftest import IN_CI, ROOT, need_tool
from tools.fakeboard import FakeBoard

BANNER = "FIRMWARE START v7"
# a firmware stand-in: prints its banner, then runs an asyncio loop until Ctrl-C. The banner is
# printed inside the try: a Ctrl-C sent as soon as it shows (the tests do) is always answered
# with "main.py stopped", however late the interpreter gets to the loop on a loaded machine
MAIN_PY = """\
import asyncio


async def tick():
    while True:
        await asyncio.sleep_ms(50)


try:
    print("%s")
    asyncio.run(tick())
except KeyboardInterrupt:
    print("main.py stopped")
""" % BANNER


def _need_mpremote() -> None:
    if importlib.util.find_spec("mpremote") is None:
        if IN_CI:
            pytest.fail("mpremote is not installed (./dev test installs requirements.txt)")
        pytest.skip("mpremote is not installed")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    need_tool("micropython")
    _need_mpremote()
    path = tmp_path / "board"
    path.mkdir()
    return path


@pytest.fixture
def board(root: Path) -> Iterator[FakeBoard]:
    with FakeBoard(root) as b:
        yield b


def mpremote(
    board: FakeBoard, *args: str, check: bool = True, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", board.url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, (proc.stdout, proc.stderr, board.output()[-2000:])
    return proc


def test_eval(board: FakeBoard) -> None:
    assert mpremote(board, "eval", "1+2").stdout.strip() == "3"


def test_exec_mpy_version_and_the_boards_paths(board: FakeBoard) -> None:
    out = mpremote(board, "exec", "import sys; print(sys.implementation._mpy & 0xff)").stdout
    assert out.strip() == "6"
    # the root is "/" inside, as on the ESP32: sys.path ['', '.frozen', '/lib'], cwd "/"
    out = mpremote(board, "exec", "import os, sys; print(os.getcwd(), sys.path)").stdout
    assert out.strip() == "/ ['', '.frozen', '/lib']"


def test_fs_cp_mkdir_sha256(board: FakeBoard, tmp_path: Path) -> None:
    local = tmp_path / "x.py"
    local.write_text("X = 42\n")
    mpremote(board, "fs", "cp", str(local), ":x.py")
    assert (board.root / "x.py").read_bytes() == local.read_bytes()
    assert "Up to date" in mpremote(board, "fs", "cp", str(local), ":x.py").stdout
    mpremote(board, "fs", "mkdir", ":lib")
    assert (board.root / "lib").is_dir()
    out = mpremote(board, "fs", "sha256sum", ":x.py").stdout
    assert hashlib.sha256(local.read_bytes()).hexdigest() in out
    # an absolute path stays inside the root: never the host's /
    name = "fakeboard-%s.py" % uuid.uuid4().hex
    mpremote(board, "fs", "cp", str(local), ":/" + name)
    assert (board.root / name).exists() and not Path("/" + name).exists()


def test_soft_reset_and_the_board_answers_again(board: FakeBoard) -> None:
    out = mpremote(board, "soft-reset", "+", "eval", "2+2").stdout
    assert out.strip() == "4"
    # the exact bytes mpremote's enter_raw_repl(soft_reset=True) waits for
    assert "OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>" in board.output()
    # machine.soft_reset(); `resume` skips mpremote's own soft reset before the exec
    before, at = board.resets.count("soft"), len(board.output())
    mpremote(board, "resume", "exec", "import machine; machine.soft_reset()")
    board.wait_output("MPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>", start=at)
    assert board.resets.count("soft") == before + 1
    assert mpremote(board, "eval", "3+3").stdout.strip() == "6"
    assert "hard" not in board.resets


def test_commands_chained_with_plus(board: FakeBoard, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("X = 'from app'\n")
    out = mpremote(
        board,
        "fs", "mkdir", ":app",
        "+", "fs", "cp", str(tmp_path / "a.py"), ":app/a.py",
        "+", "exec", "import sys; sys.path.append('/app'); import a; print(a.X)",
        "+", "fs", "ls", ":app",
    ).stdout  # fmt: skip
    assert "from app" in out and "a.py" in out
    assert (board.root / "app" / "a.py").exists()


def test_hard_reset_runs_main_py(root: Path) -> None:
    (root / "main.py").write_text(MAIN_PY)
    with FakeBoard(root, run_main=True) as board:
        at = board.wait_output(BANNER)  # power-on runs main.py
        # Ctrl-C from mpremote interrupts the running main.py, as on a board
        assert mpremote(board, "eval", "1+1").stdout.strip() == "2"
        assert "main.py stopped" in board.output()[at:]
        # mpremote's soft resets (raw REPL) do not run main.py
        assert board.output().count(BANNER) == 1
        mpremote(board, "reset")  # machine.reset() via the shim: a hard reset
        at = board.wait_output(BANNER, start=at)
        assert board.resets[-1] == "hard"
        board.hard_reset()
        at = board.wait_output(BANNER, start=at)
        # a soft reset in the friendly REPL (a terminal's Ctrl-D) runs main.py too
        with socket.create_connection(("127.0.0.1", board.port)) as term:
            term.sendall(b"\x03")  # stop main.py
            board.wait_output("main.py stopped", start=at)
            term.sendall(b"\x04")
            at = board.wait_output("MPY: soft reboot\r\n", start=at)
            board.wait_output(BANNER, start=at)
        assert mpremote(board, "eval", "5+5").stdout.strip() == "10"


def test_hard_reset_without_run_main_is_a_fresh_repl(board: FakeBoard) -> None:
    (board.root / "main.py").write_text(MAIN_PY)
    board.hard_reset()
    assert board.resets == ["power-on", "hard"]
    assert BANNER not in board.output()
    board.wait_output('Type "help()" for more information.\r\n>>> ')
    assert mpremote(board, "eval", "7*6").stdout.strip() == "42"


def test_command_line(root: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.fakeboard", str(root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        out = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", url, "eval", "1+2"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
        assert out.strip() == "3"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
