"""tools/flash.py: what it refuses before touching anything, a stable dry run; and (with the Unix
port acting as a board, tools/fakeboard.py) a real install through mpremote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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


def test_install_on_the_unix_port_acting_as_a_board(tmp_path: Path, monkeypatch: Any) -> None:
    """First install copies everything, writes the config, and the firmware then answers;
    a second run copies nothing; the config is kept, or replaced with --reset-config; a board
    that is not what --chip says is refused."""
    import json
    import re
    import urllib.request

    from fwrun import Background, free_port, make_world

    from tools.fakeboard import FakeBoard

    root = tmp_path / "board"
    root.mkdir()
    http_port = free_port()
    with Background(make_world()) as sim:
        monkeypatch.setenv("IP22_UART", sim.endpoints["charger"])  # the fake board's "UART"
        with FakeBoard(root, run_main=True) as board:
            base = ("--port", board.url, "--chip", "unix", "--no-prompt", "--timeout", "60")
            port = ("--set", "http.port=%d" % http_port)
            wifi = ("--wifi-ssid", "home", "--wifi-password", "secret123")
            first = run(*base, "--admin-password", "pw", *wifi, *port)
            assert first.returncode == 0, first.stdout + first.stderr
            copied = re.search(r"^(\d+) of (\d+) files changed", first.stdout, re.M)
            assert copied and copied.group(1) == copied.group(2), first.stdout  # everything
            assert "the adapter runs: http://127.0.0.1:%d/" % http_port in first.stdout
            assert (root / "main.py").read_text() == (ROOT / "firmware/bootstrap.py").read_text()
            assert (root / "app_a" / "app.mpy").exists() and (root / "lib/microdot").is_dir()
            config = json.loads((root / "config.json").read_text())
            assert config["wifi"]["ssid"] == "home" and "pw" not in json.dumps(config)
            assert config["admin"]["password_hash"].startswith("sha256$")
            url = "http://127.0.0.1:%d/api/status" % http_port
            status = json.load(urllib.request.urlopen(url, timeout=10))
            assert status["ota"]["running"] == "app_a" and status["wifi"]["ssid"] == "home"

            second = run(*base, "--set", "http.port=%d" % http_port)
            assert second.returncode == 0, second.stdout + second.stderr
            assert re.search(r"^0 of \d+ files changed", second.stdout, re.M), second.stdout
            assert "config.json on the board is kept" in second.stdout
            assert json.loads((root / "config.json").read_text()) == config

            third = run(*base, "--reset-config", "--set", "http.port=%d" % http_port,
                        "--set", "control.mode=manual")  # fmt: skip
            assert third.returncode == 0, third.stdout + third.stderr
            replaced = json.loads((root / "config.json").read_text())
            assert replaced["control"]["mode"] == "manual" and replaced["wifi"]["ssid"] == ""

            wrong = run("--port", board.url, "--chip", "esp32c3", "--no-prompt")
            assert wrong.returncode == 4 and "ESP32" in wrong.stderr


@pytest.mark.parametrize(
    "machine, version, mpy, chip, ok",
    [
        ("ESP32C3 module with ESP32C3", [1, 29, 0], 6, "auto", True),
        ("ESP32C3 module with ESP32C3", [1, 22, 2], 6, "esp32c3", True),
        ("ESP32C3 module with ESP32C3", [1, 21, 0], 6, "auto", False),  # too old
        ("ESP32C3 module with ESP32C3", [1, 30, 0], 6, "auto", False),  # not known yet
        ("ESP32C3 module with ESP32C3", [1, 29, 0], 5, "auto", False),  # another .mpy
        ("ESP32 module with ESP32", [1, 29, 0], 6, "esp32c3", False),  # not the chip asked for
        ("ESP32 module with ESP32", [1, 29, 0], 6, "esp32", True),
        ("Raspberry Pi Pico with RP2040", [1, 29, 0], 6, "auto", False),
        ("linux", [1, 29, 0], 6, "unix", True),
        ("ESP32C3 module with ESP32C3", [1, 29, 0], 6, "unix", False),
    ],
)
def test_board_checks(machine: str, version: list[int], mpy: int, chip: str, ok: bool) -> None:
    from tools import flash

    info = {"machine": machine, "version": version, "mpy": mpy, "free": 1 << 20}
    if ok:
        flash.check_board(info, chip)
    else:
        with pytest.raises(flash.Failure) as caught:
            flash.check_board(info, chip)
        assert caught.value.code == flash.WRONG_BOARD
