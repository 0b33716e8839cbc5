"""Updates over the air, end to end on the MicroPython Unix port laid out as the board is: the
bootstrap as /main.py, the application in app_a, libraries in lib/. A process exit is a board
reset: the runner starts it again, as the ESP32 would boot again. tools/flash.py --ota sends the
bundles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import ota
import pytest
from conftest import ROOT, need_tool
from fwrun import Background, free_port, make_world

from tools import flash

PASSWORD = "update-me"


class BoardRunner:
    """firmware laid out in `root`, run by the bootstrap; restarted whenever it exits."""

    def __init__(self, root: Path, uart: str, healthy_s: int = 60) -> None:
        self.root = root
        self.healthy_s = healthy_s
        self.port = free_port()
        self.uart = uart
        self.boots = 0
        self.exits: list[int] = []
        self.stopping = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(root / "console.log", "ab")
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        micropython = need_tool("micropython")
        env = dict(os.environ, MICROPYPATH="lib:.frozen", IP22_UART=self.uart)
        env["IP22_HEALTHY_S"] = str(self.healthy_s)
        args = [micropython, "main.py", "--http-host", "127.0.0.1", "--http-port", str(self.port)]
        args += ["--admin-password", PASSWORD]
        while not self.stopping and self.boots < 12:
            self.boots += 1
            self.proc = subprocess.Popen(
                args, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT
            )
            self.exits.append(self.proc.wait())
            time.sleep(0.3)  # the board's reset

    def start(self) -> "BoardRunner":
        self.thread.start()
        return self

    def status(self) -> dict[str, Any]:
        url = "http://127.0.0.1:%d/api/status" % self.port
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)

    def wait_for(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.status()
                if check(status):
                    return status
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("timed out: %s\n%s" % (what, self.console()[-3000:]))

    def console(self) -> str:
        return (self.root / "console.log").read_text(errors="replace")

    def stop(self) -> None:
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        self.thread.join(10)
        self.log.close()


def api(board: BoardRunner, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """(status, body) of an authorised /api/ota/... request."""
    request = urllib.request.Request(
        "http://127.0.0.1:%d/api/ota/%s" % (board.port, path),
        data=body,
        headers={"Authorization": "Bearer " + PASSWORD},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def lay_out(root: Path) -> None:
    """What tools/flash.py puts on a new board."""
    files = flash.bundle(root.parent / "build", "unix", "app_a")
    for name, path in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def send(port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(ROOT / "tools" / "flash.py"), "--ota"]
    args += ["http://127.0.0.1:%d" % port, "--admin-password", PASSWORD, "--timeout", "90"]
    return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=150)


def test_update_applied_corrupt_refused_broken_rolled_back(tmp_path: Path) -> None:
    root = tmp_path / "board"
    root.mkdir()
    lay_out(root)
    with Background(make_world()) as sim:
        board = BoardRunner(root, sim.endpoints["charger"], healthy_s=6).start()
        try:
            st = board.wait_for(lambda st: st["charger"]["connected"], 30, "the first boot")
            assert st["ota"]["running"] == "app_a"

            # a good bundle: sent, checked, switched, the new directory runs (on trial)
            done = send(board.port)
            assert done.returncode == 0, done.stdout + done.stderr
            st = board.wait_for(lambda st: st["ota"]["running"] == "app_b", 30, "app_b runs")
            assert st["ota"]["trial"] and st["ota"]["boots"] == 1
            assert st["charger"]["connected"] or board.wait_for(
                lambda st: st["charger"]["connected"], 30, "the link after the update"
            )
            assert (root / "app_b" / "app.mpy").exists()

            # a corrupt upload: refused, nothing switched, the firmware keeps running
            manifest = {"version": "bad", "files": {"main.py": "0" * 64}}
            assert api(board, "POST", "begin", json.dumps(manifest).encode())[0] == 200
            code, answer = api(board, "PUT", "file/main.py", b"print('not what it says')\n")
            assert code == 400 and b"sha256" in answer
            code, answer = api(board, "POST", "commit", b"{}")
            assert code == 400 and b"has not been sent" in answer
            st = board.status()
            assert st["ota"]["running"] == "app_b" and st["charger"]["connected"]

            # a firmware that cannot start: three failed boots, then back to the one before
            broken = tmp_path / "broken"
            shutil.copytree(ROOT / "firmware", broken)
            (broken / "app.py").write_text("raise ImportError('this build is broken')\n")
            done = send(board.port, "--firmware", str(broken))
            assert done.returncode == flash.UPDATE_FAILED, done.stdout + done.stderr
            assert "rolled back" in done.stderr
            st = board.wait_for(lambda st: st["ota"]["rolled_back"], 30, "the rollback")
            assert st["ota"]["running"] == "app_b" and not st["ota"]["trial"]
            assert "this build is broken" in board.console()
            assert board.exits.count(1) >= ota.MAX_TRIAL_BOOTS

            # a firmware that starts but whose web server does not: not confirmed (nothing
            # could update it again), restarted, and back to the one before
            deaf = tmp_path / "deaf"
            shutil.copytree(ROOT / "firmware", deaf)
            (deaf / "web.py").write_text(
                "def make_app(app):\n    raise ImportError('no web server in this build')\n"
            )
            done = send(board.port, "--firmware", str(deaf))
            assert done.returncode == flash.UPDATE_FAILED, done.stdout + done.stderr
            assert "rolled back" in done.stderr
            st = board.wait_for(lambda st: st["ota"]["running"] == "app_b", 30, "app_b again")
            assert st["ota"]["rolled_back"] and not st["ota"]["trial"]
            assert "this update is not healthy (task web failed)" in board.console()
        finally:
            board.stop()


def boot_until_it_stays(root: Path, boots: int, heap: str = "1M") -> tuple[list[int], str]:
    """Boot the Unix port laid out as the board until a boot ends without a reset (exit 0,
    the board at its REPL) or `boots` ran: the exit codes and the console."""
    micropython = need_tool("micropython")
    exits: list[int] = []
    console = ""
    while len(exits) < boots:
        done = subprocess.run([micropython, "-X", "heapsize=" + heap, "main.py"], cwd=root,
                              capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, MICROPYPATH="lib"))
        exits.append(done.returncode)
        console += done.stdout + done.stderr
        if done.returncode == 0:
            break
    return exits, console


# a real MemoryError as a heap too small for the modules gives one: the heap filled up to the
# last block and held (the failed import keeps its module), or one allocation too big
FILLS_THE_HEAP = "keep = []\nwhile True:\n    keep.append(bytearray(16))\n"
TOO_BIG = "big = bytearray(1 << 44)\n"


@pytest.mark.parametrize("app", [FILLS_THE_HEAP, TOO_BIG], ids=["heap full", "one too big"])
def test_out_of_memory_at_start_is_no_reset_loop(tmp_path: Path, app: str) -> None:
    """An app that runs out of memory at every start (a board too small for it) is reset twice,
    in case it was a one-off, then left at the REPL with the reason, also when the heap is full
    to the last block; a power cycle tries once more. On trial an update that runs out of
    memory, or ends by itself, is rolled back as any broken one is."""
    root = tmp_path / "board"
    (root / "app_a").mkdir(parents=True)
    (root / "app_b").mkdir()
    shutil.copy(ROOT / "firmware" / "bootstrap.py", root / "main.py")
    (root / "app_a" / "main.py").write_text(app)
    exits, console = boot_until_it_stays(root, 6, heap="64K")
    assert exits == [1, 1, 0], console
    assert console.count("MemoryError") == 3 and console.count("Traceback") == 3, console
    assert "out of memory at every start: not restarted again" in console, console
    assert json.loads((root / "ota.json").read_text())["oom"] == 3
    exits, console = boot_until_it_stays(root, 3, heap="64K")  # power cycled: once more
    assert exits == [0] and console.count("Traceback") == 1, console
    for broken in (app, "print('not started: too small')\n"):  # an update on trial
        (root / "app_a" / "main.py").write_text("print('app_a runs')\n")
        (root / "app_b" / "main.py").write_text(broken)
        (root / "ota.json").write_text(json.dumps(
            {"active": "app_b", "trial": True, "previous": "app_a", "boots": 0, "version": "9"}))
        exits, console = boot_until_it_stays(root, 6, heap="64K")
        assert exits == [1, 1, 1, 0], console
        assert "back to app_a" in console and "app_a runs" in console, console
