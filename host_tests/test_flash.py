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

            # a board that stayed at its REPL, out of memory (bootstrap.py): a new install
            # starts the count anew
            (root / "ota.json").write_text(json.dumps({"active": "app_a", "oom": 3}))
            second = run(*base, "--set", "http.port=%d" % http_port)
            assert second.returncode == 0, second.stdout + second.stderr
            assert json.loads((root / "ota.json").read_text()) == {"active": "app_a"}
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


def test_a_board_too_small_for_the_core_is_told_at_once(tmp_path: Path) -> None:
    """The Unix port as a board with a 144K heap: the install goes through, then the firmware
    says it does not start, and flash.py says so (exit 6) without waiting for its timeout."""
    import time

    from tools.fakeboard import FakeBoard

    root = tmp_path / "board"
    root.mkdir()
    with FakeBoard(root, run_main=True, heapsize="144K") as board:
        t0 = time.monotonic()
        done = run("--port", board.url, "--chip", "unix", "--no-prompt", "--timeout", "120",
                   "--admin-password", "pw", timeout=200)
        took = time.monotonic() - t0
    assert done.returncode == 6, done.stdout + done.stderr
    assert "the firmware did not start: not started: 142 kB of heap" in done.stderr, done.stderr
    assert took < 100, "waited for the timeout: %.0f s" % took


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


# -- the ESP32-S3, esptool and PSRAM (no board here: esptool's and the board's answers faked) ----

# esptool 5.6's report when it connects (the lines of esptool/__init__.py, the features of
# targets/esp32s3.py and esp32c3.py); written from its source, not captured from a board
def esptool_report(chip: str, features: str) -> str:
    return (
        "esptool v5.6.0\nConnected to %s on /dev/ttyACM0:\n%-20s%s\n%-20s%s\n"
        "Crystal frequency:  40MHz\nUSB mode:           USB-Serial/JTAG\n"
        "MAC:                f4:12:fa:4e:21:90\n\nStub flasher running.\n\n"
        "Warning: %s has no chip ID. Reading MAC address instead.\n"
        "MAC:                f4:12:fa:4e:21:90\n\nHard resetting via RTS pin...\n"
        % (chip.split()[0], "Chip type:", chip, "Features:", features, chip.split()[0])
    )


S3_PSRAM = esptool_report(
    "ESP32-S3 (QFN56) (revision v0.2)",
    "Wi-Fi, BT 5 (LE), Dual Core + LP Core, 240MHz, Embedded Flash 4MB (XMC),"
    " Embedded PSRAM 2MB (AP_3v3)",
)
S3_NO_PSRAM = esptool_report(
    "ESP32-S3 (QFN56) (revision v0.2)",
    "Wi-Fi, BT 5 (LE), Dual Core + LP Core, 240MHz, Embedded Flash 8MB (GD)",
)
C3 = esptool_report(
    "ESP32-C3 (QFN32) (revision v0.4)",
    "Wi-Fi, BT 5 (LE), Single Core, 160MHz, Embedded Flash 4MB (XMC)",
)
S3_PSRAM_ESPTOOL4 = (  # esptool 4.x said "Chip is"
    "esptool.py v4.8.1\nSerial port /dev/ttyACM0\nConnecting...\n"
    "Chip is ESP32-S3 (QFN56) (revision v0.2)\nFeatures: WiFi, BLE, Embedded PSRAM 8MB (AP_3v3)\n"
    "Crystal is 40MHz\nMAC: f4:12:fa:4e:21:90\n"
)
SECURE_DOWNLOAD = (  # no features in secure download mode
    "esptool v5.6.0\nConnected to ESP32-S3 on /dev/ttyACM0:\n"
    "Chip type:          ESP32-S3 in Secure Download Mode\n"
)
WRONG_CHIP = "A fatal error occurred: This chip is ESP32-C3, not ESP32-S3. Wrong chip argument?\n"
S3_MACHINE = "Generic ESP32S3 module with ESP32S3"
C3_MACHINE = "ESP32C3 module with ESP32C3"
PSRAM_HEAP, INTERNAL_HEAP = 2_390_000, 330_000  # esp32.idf_heap_info(HEAP_DATA), summed
REAL_RUN = subprocess.run


class FakeTools:
    """subprocess.run for tools/flash.py run in this process: esptool answers with a recorded
    report (chip-id) or succeeds (erase, write); mpremote like a board with MicroPython 1.29,
    `machine`, and `idf_heap` bytes of ESP-IDF heap. Anything else (mpy-cross) really runs."""

    def __init__(self, report: str, machine: str, idf_heap: int, esptool_rc: int = 0) -> None:
        self.report, self.machine, self.idf_heap, self.rc = report, machine, idf_heap, esptool_rc
        self.esptool: list[list[str]] = []

    def __call__(self, command: list[str], *args: Any, **kwargs: Any) -> Any:
        if command[1:3] == ["-m", "esptool"]:
            self.esptool.append(command)
            if "chip-id" in command:
                return subprocess.CompletedProcess(command, self.rc, self.report, "")
            return subprocess.CompletedProcess(command, 0, "Hash of data verified.\n", "")
        if command[1:3] == ["-m", "mpremote"]:
            return subprocess.CompletedProcess(command, 0, self.mpremote(command[5:]), "")
        return REAL_RUN(command, *args, **kwargs)

    def mpremote(self, args: list[str]) -> str:
        import json
        import re

        script = args[1] if len(args) > 1 and args[0] == "exec" else ""
        if "idf_heap_info" in script:
            info = {"version": [1, 29, 0], "mpy": 6, "machine": self.machine,
                    "free": 1 << 20, "idf_heap": self.idf_heap}  # fmt: skip
            return json.dumps(info) + "\n"
        if "for name in" in script:  # the hashes: nothing on the board yet
            found = re.search(r"for name in (\[.*\]):", script)
            assert found, script
            return json.dumps({name: None for name in json.loads(found.group(1))}) + "\n"
        if "ota.json" in script:
            return "app_a\n"
        return "2\n" if args[:1] == ["eval"] else ""


def install_with(monkeypatch: Any, tools: FakeTools, *args: str) -> int:
    """flash.main(args) against FakeTools, one USB board at /dev/ttyACM0, and a start banner."""
    from time import monotonic
    from types import SimpleNamespace

    from tools import flash

    usb = [("/dev/ttyACM0", "ESP32-S3/C3 USB-Serial/JTAG (303a:1001)")]
    # the copy itself is the Unix-port test's: here one file stands for the bundle
    files = {"main.py": ROOT / "firmware" / "bootstrap.py"}
    lines = ["IP22 adapter 0.9", "HTTP on port 80", "WiFi connected to home, 192.168.1.7"]
    monkeypatch.setattr(subprocess, "run", tools)
    monkeypatch.setattr(flash, "time", SimpleNamespace(sleep=lambda s: None, monotonic=monotonic))
    monkeypatch.setattr(flash, "find_ports", lambda: usb)
    monkeypatch.setattr(flash, "bundle", lambda build, chip, app_dir: files)
    monkeypatch.setattr(flash, "wait_for_start", lambda port, timeout: lines)
    return flash.main(["--no-prompt", *args])


def test_the_s3_is_the_default_chip_in_a_dry_run(tmp_path: Path) -> None:
    image = tmp_path / "ESP32_GENERIC_S3-20250415-v1.29.0.bin"
    image.write_bytes(b"\xe9" + bytes(255))
    done = run("--dry-run", "--no-prompt", "--port", "socket://127.0.0.1:9",
               "--micropython", str(image))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--chip esp32s3 --port socket://127.0.0.1:9 --baud 460800 write-flash 0x0 %s" % image \
        in done.stdout, done.stdout  # fmt: skip


@pytest.mark.parametrize(
    "report, machine, heap, chip, warned",
    [
        (S3_PSRAM, S3_MACHINE, PSRAM_HEAP, "auto", False),  # the adapter's board
        (S3_PSRAM_ESPTOOL4, S3_MACHINE, PSRAM_HEAP, "auto", False),
        (S3_NO_PSRAM, S3_MACHINE, INTERNAL_HEAP, "auto", True),
        (C3, C3_MACHINE, INTERNAL_HEAP, "esp32c3", True),
        (SECURE_DOWNLOAD, S3_MACHINE, INTERNAL_HEAP, "auto", True),  # told by the heap, later
    ],
)
def test_micropython_written_with_esptool_and_psram_checked(
    tmp_path: Path, monkeypatch: Any, capsys: Any,
    report: str, machine: str, heap: int, chip: str, warned: bool,
) -> None:  # fmt: skip
    """esptool's report first (chip-id), then the write at 0x0 for the chip asked (the S3 by
    default); without PSRAM one warning that the adapter will most likely not start, and the install goes on."""
    image = tmp_path / "ESP32_GENERIC_S3-20250415-v1.29.0.bin"
    image.write_bytes(b"\xe9" + bytes(255))
    tools = FakeTools(report, machine, heap)
    code = install_with(monkeypatch, tools, "--micropython", str(image), "--chip", chip)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    esptool_chip = "esp32c3" if chip == "esp32c3" else "esp32s3"
    first, write = tools.esptool
    assert first[3:] == ["--chip", esptool_chip, "--port", "/dev/ttyACM0", "chip-id"]
    assert write[3:] == ["--chip", esptool_chip, "--port", "/dev/ttyACM0", "--baud", "460800",
                         "write-flash", "0x0", str(image)]  # fmt: skip
    assert out.out.count("will most likely not start") == (1 if warned else 0), out.out
    assert "the adapter runs: http://192.168.1.7/" in out.out


@pytest.mark.parametrize("heap, warned", [(PSRAM_HEAP, False), (INTERNAL_HEAP, True)])
def test_a_board_with_micropython_is_told_by_its_heap(
    monkeypatch: Any, capsys: Any, heap: int, warned: bool
) -> None:
    """Without --micropython esptool is not run: the board's ESP-IDF heap says whether it has
    PSRAM (MicroPython's own heap starts at 64 kB either way and grows on demand)."""
    tools = FakeTools("", S3_MACHINE, heap)
    code = install_with(monkeypatch, tools)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert tools.esptool == []
    assert out.out.count("will most likely not start") == (1 if warned else 0), out.out
    assert ("memory: %d kB (%s)" % (heap // 1024, "no PSRAM" if warned else "PSRAM")) in out.out


def test_another_chip_than_esptool_was_told_is_exit_7(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    image = tmp_path / "ESP32_GENERIC_S3-20250415-v1.29.0.bin"
    image.write_bytes(b"\xe9" + bytes(255))
    tools = FakeTools(WRONG_CHIP, C3_MACHINE, INTERNAL_HEAP, esptool_rc=2)
    code = install_with(monkeypatch, tools, "--micropython", str(image))
    err = capsys.readouterr().err
    assert code == 7 and "not ESP32-S3" in err and "--chip" in err, err
    assert len(tools.esptool) == 1  # nothing written


def test_the_s3_usb_ids_are_found(monkeypatch: Any) -> None:
    """303a:1001: the S3's USB-Serial/JTAG (download mode, esptool); 303a:4001: MicroPython's
    own USB console on the S3 once it runs."""
    from types import SimpleNamespace

    from serial.tools import list_ports

    from tools import flash

    ports = [
        SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001),
        SimpleNamespace(device="/dev/ttyACM1", vid=0x303A, pid=0x4001),
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None),
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x1234, pid=0x5678),
    ]
    monkeypatch.setattr(list_ports, "comports", lambda: ports)
    found = dict(flash.find_ports())
    assert set(found) == {"/dev/ttyACM0", "/dev/ttyACM1"}
    assert "ESP32-S3" in found["/dev/ttyACM0"] and "(303a:1001)" in found["/dev/ttyACM0"]
    assert "ESP32-S3" in found["/dev/ttyACM1"] and "(303a:4001)" in found["/dev/ttyACM1"]


def test_chip_report() -> None:
    from tools import flash

    assert flash.chip_report(S3_PSRAM) == (
        "ESP32-S3 (QFN56) (revision v0.2)",
        "Wi-Fi, BT 5 (LE), Dual Core + LP Core, 240MHz, Embedded Flash 4MB (XMC),"
        " Embedded PSRAM 2MB (AP_3v3)",
    )
    assert flash.chip_report(S3_PSRAM_ESPTOOL4) == (
        "ESP32-S3 (QFN56) (revision v0.2)", "WiFi, BLE, Embedded PSRAM 8MB (AP_3v3)"
    )
    assert flash.chip_report(SECURE_DOWNLOAD) is None
