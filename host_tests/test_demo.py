"""The demo (README command one) headless: it serves the status, and Ctrl-C or the end of
--duration leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import ROOT, need_tool
from fwrun import free_port


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def start_demo(workdir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    """The demo with its files in `workdir`, not build/demo (which a demo beside the tests, or
    another test, would use at the same time)."""
    need_tool("micropython")
    args = ["--workdir", str(workdir), "--http-port", str(port), *extra]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "demo.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_status(port: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = "http://127.0.0.1:%d/api/status" % port
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = json.load(resp)
            if status["grid"]["power_w"] is not None and status["charger"]["min_a"] is not None:
                return status
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("the demo's firmware did not come up on port %d" % port)


def test_demo_runs_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    demo = start_demo(tmp_path, port, "--duration", "120")
    try:
        status = wait_status(port)
        assert status["charger"]["connected"] and status["charger"]["pid"] == "0xA334"
        assert processes_mentioning("--http-port %d" % port)
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=15)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out
    page = out.index("demo: page    http://127.0.0.1:%d/\n" % port)
    assert page < out.index("demo: API     http://127.0.0.1:%d/api/status" % port)
    assert "demo: stopped" in out
    assert processes_mentioning("--http-port %d" % port) == []


def test_ctrl_c_in_a_terminal_stops_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C goes to the whole process group, the demo and the firmware at once:
    the firmware saves once and says so, no traceback, exit 0 (a second SIGINT from the demo
    used to land in the middle of the save)."""
    port = free_port()
    need_tool("micropython")
    args = ["--workdir", str(tmp_path), "--http-port", str(port), "--duration", "120"]
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "demo.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        wait_status(port)
        os.killpg(demo.pid, signal.SIGINT)  # as the terminal does
        out, _ = demo.communicate(timeout=20)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "firmware | stopped: counters saved" in out, out
    assert processes_mentioning("--http-port %d" % port) == []


def test_demo_duration_ends_by_itself(tmp_path: Path) -> None:
    port = free_port()
    demo = start_demo(tmp_path, port, "--duration", "8", "--pty")
    out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, out
    assert "charger Blue Smart IP22 24/12 (1)" in out
    # the live line: the house, the charger and the controller's reason, without a browser
    live = [line for line in out.splitlines() if line.startswith("demo: PV ")]
    assert live and " W, house " in live[-1] and "setpoint" in live[-1], out
    quiet = start_demo(tmp_path / "quiet", free_port(), "--duration", "4", "--quiet")
    out, _ = quiet.communicate(timeout=60)
    assert quiet.returncode == 0 and "demo: PV " not in out, out
    assert processes_mentioning("--http-port %d" % port) == []
