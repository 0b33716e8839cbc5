"""Install the adapter's firmware on an ESP32 running MicroPython, over USB, with mpremote.

    python tools/flash.py                                   # find the board, install, configure
    python tools/flash.py --micropython ESP32_GENERIC_S3-v1.29.0.bin --erase   # MicroPython first
    python tools/flash.py --wifi-ssid Home --wifi-password ... --venus-host 192.168.1.20
    python tools/flash.py --dry-run                         # every step, nothing done

The board is an ESP32-S3 (ESP32-S3-MINI-1-N4R2, 2 MB PSRAM): esptool writes an esp32s3 unless
--chip says esp32c3 or esp32. MicroPython is not downloaded: give the image,
ESP32_GENERIC_S3-<date>-v1.29.x.bin from micropython.org/download/ESP32_GENERIC_S3/. Without
PSRAM (a C3, an S3 without it) it warns that the adapter will most likely not start (even the
core, without MQTT, needs more heap than such a board has) and goes on.

Steps: find the board (USB id, then MicroPython answering; with --micropython a board without
it yet), optionally write MicroPython with esptool (which first says whether the chip has
PSRAM), read the board's MicroPython version, .mpy ABI and memory, compile firmware/ with mpy-cross
(main.py stays source), copy only what changed (sha256 compared on the board), microdot into
/lib (umqtt.simple is frozen in the official images), write config.json (validated by the
firmware's own config.py; the admin password hashed here, never sent in clear; an existing
config is kept unless --reset-config), reset, wait for the firmware's start banner and print
the address.

Exit codes: 0 done; 2 a bad option or setting (nothing written); 3 no board, or several (say
which with --port); 4 not an ESP32, or an unsupported MicroPython; 5 the board's filesystem
is full, or a copy failed; 6 the firmware did not start; 7 esptool failed; 8 the update over
the air was refused, or the board did not come back with it.

    python tools/flash.py --ota http://192.168.1.50 --admin-password ...   # over WiFi
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware"))

import auth  # noqa: E402  (the firmware's own: the hash the board will check)
import config as fwconfig  # noqa: E402  (the firmware's own validation)

from tools.build import compile_mpy, microdot_sources, stage_umqtt  # noqa: E402
from tools.locks import file_lock  # noqa: E402

OK, BAD_OPTION, NO_BOARD, WRONG_BOARD, COPY_FAILED, NO_START, ESPTOOL_FAILED = 0, 2, 3, 4, 5, 6, 7
UPDATE_FAILED = 8
SUPPORTED = ((1, 22), (1, 29))  # MicroPython versions the firmware is known to fit (.mpy 6)
MPY_MAJOR = 6
USB_IDS = {  # vid:pid -> what it is
    # the S3 in download mode (esptool), and the C3's only USB
    (0x303A, 0x1001): "ESP32-S3/C3 USB-Serial/JTAG",
    # the S3 once MicroPython runs: its console is MicroPython's own USB CDC (TinyUSB)
    (0x303A, 0x4001): "ESP32-S3 USB CDC (MicroPython's console)",
    (0x10C4, 0xEA60): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
    (0x0403, 0x6001): "FTDI",
}
FLASH_OFFSET = {"esp32c3": "0x0", "esp32s3": "0x0", "esp32": "0x1000"}
DEFAULT_CHIP = "esp32s3"  # the adapter's board: ESP32-S3-MINI-1-N4R2
# more ESP-IDF heap than this is PSRAM: an ESP32's internal RAM leaves it well under 512 kB
PSRAM_HEAP_B = 1 << 20
NO_PSRAM = (
    "the adapter will most likely not start: even its core (without MQTT and Home Assistant"
    " discovery) needs about 208 kB of heap, and a board without PSRAM has about 140-180 kB;"
    " it then says 'not started' on the console and leaves the charger on its own settings"
    " (docs/install.md, 'A board without PSRAM')"
)
SOURCE_FILES = ("main.py",)  # stay source: MicroPython runs main.py, not main.mpy
BOOTSTRAP = "bootstrap.py"  # the board's /main.py: runs app_a or app_b, never updated
BANNER = "IP22 adapter "
START_TIMEOUT_S = 60


class Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- the board ---------------------------------------------------------------------------------


class Board:
    """mpremote against one port; every call a subprocess with a timeout."""

    def __init__(self, port: str, dry_run: bool = False) -> None:
        self.port = port
        self.dry_run = dry_run

    def mpremote(self, *args: str, timeout: float = 60) -> str:
        command = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        if self.dry_run:
            say("would run: mpremote connect %s %s" % (self.port, " ".join(args)))
            return ""
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(NO_BOARD, "%s did not answer in %d s" % (self.port, timeout)) from None
        if done.returncode:
            raise Failure(COPY_FAILED, "mpremote %s: %s" % (args[0], (done.stderr or done.stdout)))
        return done.stdout


def say(text: str) -> None:
    print(text, flush=True)


def find_ports() -> list[tuple[str, str]]:
    """(device, what) for every serial port with a known ESP32/USB-serial id."""
    from serial.tools import list_ports

    found = []
    for p in list_ports.comports():
        if p.vid is None:
            continue
        what = USB_IDS.get((p.vid, p.pid)) or ("Espressif" if p.vid == 0x303A else None)
        if what:
            found.append((p.device, "%s (%04x:%04x)" % (what, p.vid, p.pid)))
    return found


def answers(port: str) -> bool:
    try:
        Board(port).mpremote("eval", "1+1", timeout=10)
        return True
    except Failure:
        return False


def choose_port(port: str, flashing: bool = False) -> str:
    """The board's port. With --micropython (`flashing`) it need not answer yet: a new board has
    no MicroPython, and esptool talks to its ROM; one USB candidate is enough."""
    if port != "auto":
        if not flashing and not answers(port):
            raise Failure(NO_BOARD, "no MicroPython answers on %s" % port)
        return port
    candidates = find_ports()
    if not candidates:
        raise Failure(NO_BOARD, "no ESP32 board found on USB (is the cable a data cable?)")
    if flashing and len(candidates) == 1:
        return candidates[0][0]
    alive = [(d, w) for d, w in candidates if answers(d)]
    if len(alive) == 1:
        return alive[0][0]
    listing = "\n".join("  %s  %s" % c for c in (alive or candidates))
    if not alive and not flashing:
        raise Failure(
            NO_BOARD,
            "found a board but MicroPython does not answer on it:\n%s\n"
            "install MicroPython first: --micropython FILE.bin --erase" % listing,
        )
    raise Failure(NO_BOARD, "several boards answer:\n%s\nwhich one? say --port DEVICE" % listing)


# idf_heap: the ESP-IDF heap that MicroPython's own grows into, PSRAM included (None: not an
# ESP32). gc.mem_free() + gc.mem_alloc() would not tell: since MicroPython 1.21 the heap starts at
# 64 kB on every ESP32 and grows on demand, PSRAM or not.
INFO_SCRIPT = """
import json, os, sys
try:
    import esp32
    idf = sum(r[0] for r in esp32.idf_heap_info(esp32.HEAP_DATA))
except Exception:
    idf = None
s = os.statvfs('/')
print(json.dumps({'version': list(sys.implementation.version[:3]),
    'mpy': sys.implementation._mpy & 0xff,
    'machine': os.uname().machine if hasattr(os, 'uname') else sys.platform,
    'free': s[0] * s[3], 'idf_heap': idf}))
"""


def board_info(board: Board) -> dict[str, Any]:
    out = board.mpremote("exec", INFO_SCRIPT)
    return json.loads(out.strip().splitlines()[-1])


def warn_no_psram(why: str) -> None:
    say("warning: no PSRAM (%s): %s" % (why, NO_PSRAM))


def board_chip(machine: str) -> str:
    """"ESP32S3 module with ESP32S3" -> "esp32s3"; "ESP32 module with ESP32" -> "esp32"."""
    name = machine.upper()
    for variant in ("ESP32C3", "ESP32S3", "ESP32S2", "ESP32C6"):
        if variant in name:
            return variant.lower()
    return "esp32"


def check_board(info: dict[str, Any], chip: str) -> None:
    version = tuple(info["version"][:2])
    machine = info["machine"]
    if chip == "unix":
        if "ESP32" in machine.upper():
            raise Failure(WRONG_BOARD, "--chip unix, but the board is %s" % machine)
    elif "ESP32" not in machine.upper():
        raise Failure(WRONG_BOARD, "not an ESP32: the board says %r" % machine)
    elif chip != "auto" and board_chip(machine) != chip:
        raise Failure(WRONG_BOARD, "--chip %s, but the board is %s" % (chip, machine))
    if info["mpy"] != MPY_MAJOR or not SUPPORTED[0] <= version <= SUPPORTED[1]:
        raise Failure(
            WRONG_BOARD,
            "MicroPython %s (.mpy %s) is not supported: use %d.%d to %d.%d"
            % (".".join(map(str, info["version"])), info["mpy"], *SUPPORTED[0], *SUPPORTED[1]),
        )


# -- what goes on the board --------------------------------------------------------------------


def app_files(build: Path, firmware: Path = ROOT / "firmware") -> dict[str, Path]:
    """The application directory's files (what an update replaces): firmware/ as .mpy, its
    main.py as source, the page."""
    files: dict[str, Path] = {}
    build.mkdir(parents=True, exist_ok=True)
    for source in sorted(firmware.glob("*.py")):
        if source.name == BOOTSTRAP:
            continue
        if source.name in SOURCE_FILES:
            files[source.name] = source
            continue
        target = build / (source.stem + ".mpy")
        compile_mpy(source, target)
        files[target.name] = target
    for page in sorted((firmware / "static").iterdir()):
        files["static/" + page.name] = page
    return files


def bundle(build: Path, chip: str, app_dir: str) -> dict[str, Path]:
    """board path -> local file: the bootstrap as /main.py, the application in `app_dir`,
    microdot in /lib. For the Unix port acting as a board, umqtt.simple too (the ESP32 has
    it frozen)."""
    files = {"main.py": ROOT / "firmware" / BOOTSTRAP}
    for name, path in app_files(build / "app").items():
        files[app_dir + "/" + name] = path
    for source in microdot_sources():
        target = build / "lib" / "microdot" / (source.stem + ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        compile_mpy(source, target)
        files["lib/microdot/" + target.name] = target
    if chip == "unix":
        lib = build / "lib"
        for path in stage_umqtt(lib, compiled=True):
            files[path.relative_to(build).as_posix()] = path
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


HASH_SCRIPT = """
import json, hashlib, binascii
out = {}
for name in %s:
    try:
        h = hashlib.sha256()
        with open(name, 'rb') as f:
            while True:
                b = f.read(1024)
                if not b:
                    break
                h.update(b)
        out[name] = binascii.hexlify(h.digest()).decode()
    except OSError:
        out[name] = None
print(json.dumps(out))
"""


def board_hashes(board: Board, names: list[str]) -> dict[str, str | None]:
    out = board.mpremote("exec", HASH_SCRIPT % json.dumps(names))
    return json.loads(out.strip().splitlines()[-1]) if out else {}


def disarm_watchdog(board: Board) -> None:
    """A running adapter has armed the ESP32's watchdog, which no one feeds while mpremote
    holds the REPL: leave the firmware's `nowdt` flag and reset, so this boot has none."""
    if board.dry_run:
        say("would leave the firmware's nowdt flag and reset the board, if it runs the adapter")
        return
    out = board.mpremote(
        "exec",
        "import os\nif 'app_a' in os.listdir() or 'app_b' in os.listdir():\n"
        " open('nowdt', 'w').close()\n print('flagged')",
    )
    if "flagged" in out:
        board.mpremote("reset")
        time.sleep(3)


# ota.json's "active", and its count of boots that ran out of memory dropped (bootstrap.py): a
# new install starts that count anew
ACTIVE_SCRIPT = """
import json, os
try:
    state = json.loads(open('ota.json').read())
    if state.pop('oom', None) is not None:
        with open('ota.json.tmp', 'w') as f:
            f.write(json.dumps(state))
        os.rename('ota.json.tmp', 'ota.json')
    print(state['active'])
except Exception:
    print('app_a')
"""


def active_dir(board: Board) -> str:
    """The application directory the board runs (ota.json), app_a on a new board; the boots
    that ran out of memory before this install are forgotten."""
    out = board.mpremote("exec", ACTIVE_SCRIPT)
    active = out.strip().splitlines()[-1] if out.strip() else "app_a"
    return active if active in ("app_a", "app_b") else "app_a"


def copy(board: Board, files: dict[str, Path], changed: list[str], stale: list[str]) -> None:
    folders = sorted({str(Path(n).parent) for n in changed if "/" in n})
    args: list[str] = []
    made: set[str] = set()
    for folder in folders:
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                made.add(sub)
                mkdir = "import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass" % sub
                args += ["exec", mkdir, "+"]
    for name in stale:
        args += ["exec", "import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass" % name, "+"]
    for name in changed:
        args += ["fs", "cp", str(files[name]), ":" + name, "+"]
    if args:
        board.mpremote(*args[:-1], timeout=300)


# -- config.json -------------------------------------------------------------------------------


def config_from(args: argparse.Namespace, prompt: bool) -> tuple[dict[str, Any], str]:
    """(validated config values, the access point's password) from options and prompts."""
    values = fwconfig.defaults()

    def ask(value: str | None, question: str, secret: bool = False) -> str | None:
        if value is not None or not prompt:
            return value
        answer = getpass.getpass(question) if secret else input(question)
        return answer or None

    ssid = ask(args.wifi_ssid, "WiFi name (empty: set it later from the access point): ")
    if ssid:
        values["wifi"]["ssid"] = ssid
        values["wifi"]["password"] = ask(args.wifi_password, "WiFi password: ", True) or ""
    venus = ask(args.venus_host, "Venus GX address (empty: none yet): ")
    if venus:
        values["venus"]["host"] = venus
        values["venus"]["unit"] = args.venus_unit
        values["venus"]["source"] = args.venus_source
    if args.max_current is not None:
        values["charger"]["max_current_a"] = args.max_current
    password = ask(args.admin_password, "admin password for changes (empty: none): ", True)
    if password:
        values["admin"]["password_hash"] = auth.make_hash(password)
    ap_password = args.ap_password or secrets.token_urlsafe(9)
    values["wifi"]["ap_password"] = ap_password
    for item in args.set or []:
        key, _, raw = item.partition("=")
        section, _, field = key.partition(".")
        if not field or section not in values or not isinstance(values[section], dict):
            raise Failure(BAD_OPTION, "--set %s: say SECTION.FIELD=VALUE" % item)
        try:
            values[section][field] = json.loads(raw)
        except ValueError:
            values[section][field] = raw  # plain text
    clean, errors = fwconfig.validate(values)
    if errors:
        raise Failure(BAD_OPTION, "config: " + "; ".join(errors))
    return clean, ap_password


# -- after the copy ----------------------------------------------------------------------------


def wait_for_start(port: str, timeout: float) -> list[str]:
    """Reset the board and read its console: the firmware's banner, its web server, and how
    it is reached (the home WiFi's address, or its own access point)."""
    import serial

    lines: list[str] = []
    with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as con:
        con.write(b"\r\x03\x03")  # stop whatever runs: the friendly REPL
        time.sleep(0.3)
        con.reset_input_buffer()
        con.write(b"import machine; machine.reset()\r")
        deadline = time.monotonic() + timeout
        served = None  # when "HTTP on" came
        buffer = b""
        while time.monotonic() < deadline:
            buffer += con.read(512)
            *complete, buffer = buffer.split(b"\n")
            lines += [raw.decode(errors="replace").rstrip() for raw in complete]
            # the firmware's own word that this board's heap is too small: no use waiting
            small = [x for x in lines if "not started:" in x or "not restarted again" in x]
            if small:
                raise Failure(NO_START, "the firmware did not start: %s" % small[-1].strip())
            started = any(BANNER in x for x in lines)
            if started and served is None and any("HTTP on" in x for x in lines):
                served = time.monotonic()
            reached = any("WiFi connected to" in x or "access point" in x for x in lines)
            if served is not None and (reached or time.monotonic() - served > 20):
                return lines
    raise Failure(
        NO_START, "the firmware did not start in %d s:\n%s" % (timeout, "\n".join(lines[-20:]))
    )


def address(lines: list[str], http_port: int) -> str:
    for line in lines:
        if "WiFi connected to" in line:
            ip = line.rsplit(",", 1)[-1].strip()
            return "http://%s/" % ip if http_port == 80 else "http://%s:%d/" % (ip, http_port)
    for line in lines:
        if "access point" in line and "http://" in line:
            return "http://192.168.4.1/ (join the access point %s first)" % line.split()[3]
    return "(address unknown: see the board's log above)"


# -- the steps ---------------------------------------------------------------------------------


def esptool_chip(chip: str) -> str:
    """esptool's --chip: the adapter's S3 unless --chip says another."""
    return DEFAULT_CHIP if chip in ("auto", "unix") else chip


def chip_report(output: str) -> tuple[str, str] | None:
    """(chip, features) from the report esptool prints when it connects, e.g. ("ESP32-S3 (QFN56)
    (revision v0.2)", "Wi-Fi, BT 5 (LE), Dual Core + LP Core, 240MHz, Embedded Flash 4MB (XMC),
    Embedded PSRAM 2MB (AP_3v3)"); esptool 4 said "Chip is ...". None: not reported (secure
    download mode)."""
    chip = re.search(r"^\s*(?:Chip type:|Chip is)\s*(.+?)\s*$", output, re.M)
    features = re.search(r"^\s*Features:\s*(.+?)\s*$", output, re.M)
    if not chip or not features:
        return None
    return chip.group(1), features.group(1)


def probe_chip(port: str, chip: str) -> bool | None:
    """Whether the chip has PSRAM, from esptool's own report (its chip-id command), so a board
    without it is known before MicroPython is written. None: esptool did not say. esptool sees
    PSRAM in the chip's package (every S3 module with PSRAM); the board's heap, read once
    MicroPython runs, has the last word."""
    command = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "chip-id"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise Failure(ESPTOOL_FAILED, "esptool did not reach the board in 120 s") from None
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
        raise Failure(ESPTOOL_FAILED, "esptool found no %s on %s (is the board in download mode?"
                      " another chip: say --chip):\n%s" % (chip, port, tail))  # fmt: skip
    report = chip_report(done.stdout)
    if report is None:
        say("esptool: the chip's features were not reported; the board's memory is read later")
        return None
    say("chip: %s; %s" % report)
    return "PSRAM" in report[1].upper()


def flash_micropython(
    port: str, image: Path, chip: str, erase: bool, dry_run: bool
) -> bool | None:
    """Write MicroPython with esptool, after asking it whether the chip has PSRAM (warned here,
    and returned; None: not known)."""
    if not image.is_file():
        raise Failure(BAD_OPTION, "%s: no such file" % image)
    chip = esptool_chip(chip)
    psram = None
    if dry_run:
        say("would ask esptool (chip-id) whether the %s has PSRAM" % chip)
    else:
        psram = probe_chip(port, chip)
        if psram is False:
            warn_no_psram("esptool finds none in the chip")
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port]
    steps = []
    if erase:
        steps.append(base + ["erase-flash"])
    steps.append(base + ["--baud", "460800", "write-flash", FLASH_OFFSET[chip], str(image)])
    for step in steps:
        say("esptool: %s" % " ".join(step[3:]))
        if not dry_run and subprocess.run(step).returncode:
            raise Failure(ESPTOOL_FAILED, "esptool failed (is the board in download mode?)")
    if not dry_run:
        time.sleep(3)  # the first boot formats the filesystem
    return psram


def port_after_flash(port: str, requested: str, timeout: float = 30) -> str:
    """The port MicroPython answers on once esptool has reset the board. An S3 in download mode
    is its USB-Serial/JTAG (303a:1001); under MicroPython its console is MicroPython's own USB
    CDC (303a:4001), which may come up as another device: with --port auto it is looked for
    again."""
    deadline = time.monotonic() + timeout
    while True:
        if requested != "auto":
            if answers(port):
                return port
        else:
            alive = [device for device, _ in find_ports() if answers(device)]
            if len(alive) == 1:
                return alive[0]
        if time.monotonic() >= deadline:
            raise Failure(NO_BOARD, "MicroPython does not answer in %d s after it was written (on"
                          " %s; its own USB console may be another device: say --port)"
                          % (timeout, port))  # fmt: skip
        time.sleep(1)


def http(url: str, password: str, method: str = "GET", body: bytes | None = None) -> Any:
    import urllib.error
    import urllib.request

    headers = {"Authorization": "Bearer " + password}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise Failure(UPDATE_FAILED, "%s %s: %s %s" % (method, url, err.code, detail)) from None
    except OSError as err:
        raise Failure(UPDATE_FAILED, "%s %s: %s" % (method, url, err)) from None


def update_over_the_air(args: argparse.Namespace) -> int:
    """Send the application bundle to a running adapter; it checks every file, switches and
    restarts, and goes back by itself if the new one does not come up healthy."""
    base = args.ota.rstrip("/")
    password = args.admin_password or (getpass.getpass("admin password: ") if sys.stdin.isatty()
                                       else "")  # fmt: skip
    build = ROOT / "build" / "ota"
    # build/ota is one per checkout: one update at a time fills it and sends from it
    with file_lock(build.parent / "ota.lock"):
        if build.exists():
            shutil.rmtree(build)
        files = app_files(build, Path(args.firmware))
        digest = hashlib.sha256("".join(sha256(p) for p in files.values()).encode()).hexdigest()
        version = "%s+%s" % (firmware_version(Path(args.firmware)), digest[:8])
        manifest = {"version": version, "files": {n: sha256(p) for n, p in files.items()}}
        say("update %s: %d files, %d kB" % (version, len(files),
                                           sum(p.stat().st_size for p in files.values()) // 1024))
        if args.dry_run:
            for name in sorted(files):
                say("would send %s" % name)
            say("would commit, and wait for %s to come back with it" % base)
            return OK
        http(base + "/api/ota/begin", password, "POST", json.dumps(manifest).encode())
        for name, path in files.items():
            http(base + "/api/ota/file/" + name, password, "PUT", path.read_bytes())
        result = http(base + "/api/ota/commit", password, "POST", b"{}")
    say("sent; the board restarts into %s" % result["active"])
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            status = http(base + "/api/status", password)
        except Failure:
            continue  # restarting
        running = status["ota"]
        if running["running"] == result["active"] and running["version"] == version:
            say("the board runs %s (on trial until it has run healthy for a minute)" % version)
            return OK
        if running.get("rolled_back") and running["running"] != result["active"]:
            raise Failure(UPDATE_FAILED, "the new firmware did not start: rolled back")
    raise Failure(UPDATE_FAILED, "the board did not come back with %s in %d s"
                  % (version, args.timeout))  # fmt: skip


def firmware_version(firmware: Path = ROOT / "firmware") -> str:
    import re

    text = (firmware / "app.py").read_text()
    found = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    return found.group(1) if found else "?"


def install(args: argparse.Namespace) -> int:
    prompt = sys.stdin.isatty() and not args.no_prompt and not args.dry_run
    values, ap_password = config_from(args, prompt)  # a bad value stops here: nothing written
    if args.dry_run and args.port == "auto":
        say("would find the board: a USB id of %s, and MicroPython answering on it"
            % ", ".join("%04x:%04x" % i for i in USB_IDS))  # fmt: skip
    port = args.port if args.dry_run else choose_port(args.port, bool(args.micropython))
    psram = None
    if args.micropython:
        psram = flash_micropython(port, Path(args.micropython), args.chip, args.erase,
                                  args.dry_run)  # fmt: skip
        if not args.dry_run:
            port = port_after_flash(port, args.port)
    board = Board(port, args.dry_run)
    say("board: %s" % port)
    disarm_watchdog(board)
    if not args.dry_run:
        info = board_info(board)
        say(
            "MicroPython %s on %s, .mpy %d, %d kB free"
            % (".".join(map(str, info["version"])), info["machine"], info["mpy"],
               info["free"] // 1024)
        )  # fmt: skip
        check_board(info, args.chip)
        heap = info.get("idf_heap")  # None: not an ESP32
        if heap is not None:
            has = heap > PSRAM_HEAP_B
            say("memory: %d kB (%s)" % (heap // 1024, "PSRAM" if has else "no PSRAM"))
            if not has and psram is not False:  # esptool's report did not warn already
                warn_no_psram("the board has %d kB of memory" % (heap // 1024))
    build = ROOT / "build" / "flash"
    # build/flash is one per checkout: one install at a time fills it and copies from it
    with file_lock(build.parent / "flash.lock"):
        if build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True)
        app_dir = "app_a" if args.dry_run else active_dir(board)
        files = bundle(build, args.chip, app_dir)
        names = sorted(files)
        hashes = {} if args.dry_run else board_hashes(board, names + [n[:-4] + ".py" for n in names
                                                                         if n.endswith(".mpy")])
        changed = [n for n in names if hashes.get(n) != sha256(files[n])]
        stale = sorted(n for n, h in hashes.items() if h and n not in files)  # .py beside our .mpy
        size = sum(files[n].stat().st_size for n in changed)
        if args.dry_run:
            changed, stale = names, []
            say("would compile %d files with mpy-cross, then copy only those whose sha256 differs:"
                % len([n for n in names if n.endswith(".mpy")]))  # fmt: skip
            for name in names:
                say("  %s" % name)
        else:
            say("%d of %d files changed (%d kB)" % (len(changed), len(names), size // 1024))
            if size > info["free"] - 16384:
                raise Failure(COPY_FAILED, "the board's filesystem is full: %d kB needed,"
                              " %d kB free" % (size // 1024, info["free"] // 1024))  # fmt: skip
            copy(board, files, changed, stale)
    has_config = False if args.dry_run else board_hashes(board, ["config.json"])["config.json"]
    if args.dry_run:
        say("would write config.json (unless the board has one and --reset-config is not given)")
    elif has_config and not args.reset_config:
        say("config.json on the board is kept (--reset-config replaces it)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(values))
            board.mpremote("fs", "cp", str(path), ":config.json")
        say("config.json written; the access point's password: %s" % ap_password)
    if args.dry_run:
        say("would reset the board and wait for its banner %r" % BANNER)
        return OK
    lines = wait_for_start(port, args.timeout)
    for line in lines[-8:]:
        say("  | " + line)
    say("the adapter runs: %s" % address(lines, values["http"]["port"]))
    return OK


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="exit codes: 0 done, 2 bad option or setting, 3 no board or several, 4 not an"
        " ESP32 or unsupported MicroPython, 5 filesystem full or copy failed, 6 the firmware did"
        " not start, 7 esptool failed, 8 the update over the air failed",
    )
    ap.add_argument("--port", default="auto", help="auto, a device, or socket://HOST:PORT")
    ap.add_argument(
        "--chip",
        default="auto",
        choices=["auto", "esp32c3", "esp32s3", "esp32", "unix"],
        help="auto: esptool writes an esp32s3 (the adapter's), the board may be any ESP32;"
        " unix: the MicroPython Unix port acting as a board (tests)",
    )
    ap.add_argument("--micropython", metavar="FILE.bin",
                    help="write MicroPython first (esptool), e.g. ESP32_GENERIC_S3-<date>-v1.29.x"
                    ".bin from micropython.org/download/ESP32_GENERIC_S3/")  # fmt: skip
    ap.add_argument("--erase", action="store_true", help="erase the flash before --micropython")
    ap.add_argument("--wifi-ssid")
    ap.add_argument("--wifi-password")
    ap.add_argument("--ap-password", help="the board's own access point (default: random)")
    ap.add_argument("--venus-host")
    ap.add_argument("--venus-unit", type=int, default=100)
    ap.add_argument("--venus-source", default="sum", choices=["sum", "L1", "L2", "L3"])
    ap.add_argument("--max-current", type=float, help="your battery's limit in A")
    ap.add_argument("--admin-password")
    ap.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                    help="any other setting, e.g. --set mqtt.host=192.168.1.5")  # fmt: skip
    ap.add_argument("--reset-config", action="store_true", help="replace the board's config")
    ap.add_argument("--no-prompt", action="store_true", help="never ask: options only")
    ap.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    ap.add_argument("--dry-run", action="store_true", help="print every step, do nothing")
    ap.add_argument("--ota", metavar="http://ADDRESS", help="update a running adapter over WiFi")
    ap.add_argument(
        "--firmware", default=str(ROOT / "firmware"), help="the firmware directory to send"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return update_over_the_air(args) if args.ota else install(args)
    except Failure as err:
        print("flash: %s" % err, file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
