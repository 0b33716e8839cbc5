"""The Venus OS package (issue #17 items 4 and 5): tools/venus_package.py's .tar.gz, and
venus_os/install.sh, uninstall.sh, restart.sh and migrate.py run with `sh` (dash here, a fair
stand-in for the GX's busybox sh) in a throwaway root (ROOT=...), with stand-ins for svc,
svstat, udevadm, pkill and Venus's stop-tty.sh/remount-rw.sh that log their calls."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENUS_OS = ROOT / "venus_os"
sys.path.insert(0, str(ROOT))

from tools import venus_package  # noqa: E402

pytestmark = pytest.mark.xdist_group("test_venus_install")

NAME = "bluesmart-charger"
GX_DIR = "/data/etc/" + NAME
RC_LINE = "sh %s/install.sh --boot" % GX_DIR
RULES_DIR_REL = "etc/udev/rules.d"
RULES = RULES_DIR_REL + "/zz-%s.rules" % NAME
RULE = ('ACTION=="add", ENV{ID_BUS}=="usb", ENV{ID_VENDOR_ID}=="0403", '
        'ENV{ID_MODEL_ID}=="6001", ENV{ID_SERIAL_SHORT}=="A10K1234", ENV{VE_SERVICE}="ignore"')
BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
# what Venus listens on (docs: venus-service-notes.md section 6)
VENUS_PORTS = {22, 78, 80, 81, 443, 502, 1880, 1881, 1883, 3000, 5900, 5901, 8883, 9001}

ORIGINAL_INI = """[DEFAULT]
; Set logging level
; ERROR = shows errors only
; default: WARNING
logging = INFO

; Set IP of Venus Device
; DEFAULT = 127.0.0.1
ip = 192.168.1.20

; Set Phase the charger is connect to:
; L1 = 820
; L2 = 831
; L3 = 832
; DEFAULT = 820
phase = 831

; Interface the charger is connected to
; DEFAULT = /dev/ttyUSB1
interface = /dev/ttyUSB0

; Set interval in seconds for calculating and writing cherge current
; DEFAULT = 30
interval = 30

; the highest charge current in A
maxcurrent = 12.5
"""

FAKES = {
    # svstat's answer comes from FAKE_SVSTAT (up, down, or supervise not running)
    "svstat": 'echo "svstat $*" >> "$CALLS"\n'
              'case "${FAKE_SVSTAT:-}" in\n'
              '  up) echo "$1: up (pid 123) 50 seconds" ;;\n'
              '  down) echo "$1: down 5 seconds, normally up" ;;\n'
              '  *) echo "$1: supervise not running" ;;\n'
              'esac\n',
    "svc": 'echo "svc $*" >> "$CALLS"\n',
    "pkill": 'echo "pkill $*" >> "$CALLS"\nexit 1\n',
    "udevadm": 'echo "udevadm $*" >> "$CALLS"\n'
               'if [ "$1" = info ]; then\n'
               '  case "$*" in\n'
               '    *--name=/dev/ttyUSB0*|*--name=/dev/serial/by-id/*)\n'
               '      printf "DEVNAME=/dev/ttyUSB0\\nID_BUS=usb\\nID_VENDOR_ID=0403\\n'
               'ID_MODEL_ID=6001\\nID_SERIAL_SHORT=A10K1234\\nSUBSYSTEM=tty\\n" ;;\n'
               '    *--name=/dev/ttyUSB2*)\n'  # a CH340: no serial number
               '      printf "DEVNAME=/dev/ttyUSB2\\nID_BUS=usb\\nID_VENDOR_ID=1a86\\n'
               'ID_MODEL_ID=7523\\nID_PATH=platform-ci_hdrc.1-usb-0:1.2:1.0\\n'
               'SUBSYSTEM=tty\\n" ;;\n'
               '    *--name=/dev/ttyS4*)\n'  # a built-in port
               '      printf "DEVNAME=/dev/ttyS4\\nSUBSYSTEM=tty\\n" ;;\n'
               '    *) echo "device node not found" >&2; exit 4 ;;\n'
               '  esac\n'
               'fi\n',
}

BUSYBOX_APPLETS = ("sh", "cat", "chmod", "cp", "dirname", "find", "grep", "head", "ln", "mkdir",
                   "mv", "readlink", "rm", "sed", "sleep", "tail")


# --- the package ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two builds of the package (the wheels from build/cache/wheels, fetched once)."""
    first = venus_package.build(tmp_path_factory.mktemp("pkg1"))
    second = venus_package.build(tmp_path_factory.mktemp("pkg2"))
    return first, second


@pytest.fixture(scope="module")
def package(builds: tuple[Path, Path]) -> Path:
    return builds[0]


@pytest.fixture(scope="module")
def unpacked(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(package), "-C", str(target)], check=True)
    return target / NAME


def test_package_name_and_listing(package: Path) -> None:
    assert package.name == "%s-%s.tar.gz" % (NAME, venus_package.version())
    with tarfile.open(package) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(n == NAME or n.startswith(NAME + "/") for n in names)
    by_name = {m.name[len(NAME) + 1:]: m for m in members if m.name != NAME}
    for needed in ("service.py", "migrate.py", "install.sh", "uninstall.sh", "restart.sh",
                   "config.sample.json", "VERSION", "README.txt", "firmware/app.py",
                   "firmware/config.py", "firmware/static/index.html",
                   "ext/dbus_next/__init__.py", "ext/serial/__init__.py",
                   "ext/serial/urlhandler/protocol_socket.py", "ext/microdot/__init__.py",
                   "ext/microdot/microdot.py", "ext/licenses/dbus-next-LICENSE",
                   "ext/licenses/pyserial-LICENSE.txt", "ext/licenses/microdot-LICENSE"):
        assert needed in by_name, needed
    for py in VENUS_OS.glob("*.py"):
        assert py.name in by_name
    for py in (ROOT / "firmware").glob("*.py"):
        assert "firmware/" + py.name in by_name
    for script in ("install.sh", "uninstall.sh", "restart.sh"):
        assert by_name[script].mode == 0o755
    assert by_name["config.sample.json"].mode == 0o644
    assert by_name["firmware/app.py"].mode == 0o644
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root")
        assert m.mtime == venus_package.MTIME
        assert m.mode in (0o755, 0o644)
        assert m.isdir() or m.isfile()
        assert "__pycache__" not in m.name and not m.name.endswith((".pyc", ".so"))
    # never a user's file: unpacking over an installation keeps them
    for kept in ("config.json", "config.ini", "state.json", "gx-switch.json", "service",
                 "original"):
        assert kept not in by_name
    assert not any(n.startswith("ext/") and ".dist-info" in n for n in by_name)


def test_package_is_reproducible(builds: tuple[Path, Path]) -> None:
    first, second = builds
    assert first.read_bytes() == second.read_bytes()


def test_package_version_file(unpacked: Path) -> None:
    assert (unpacked / "VERSION").read_text() == venus_package.version() + "\n"


def test_package_imports_without_the_venv(unpacked: Path) -> None:
    """The GX's Python with nothing but the package: ext/ and firmware/ on sys.path."""
    python = shutil.which("python3")
    assert python
    code = (
        "import sys; sys.path[:0] = [sys.argv[1] + '/ext', sys.argv[1] + '/firmware']\n"
        "import dbus_next, dbus_next.aio, serial, microdot, app, config\n"
        "for m in (dbus_next, serial, microdot, app):\n"
        "    assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "s = serial.serial_for_url('loop://', timeout=1)\n"
        "s.write(b'x'); assert s.read(1) == b'x'\n"
        "serial.serial_for_url('socket://127.0.0.1:9', do_not_open=True)\n"
        "serial.serial_for_url('rfc2217://127.0.0.1:9', do_not_open=True)\n"
        "print(app.VERSION)\n"
    )
    # -I: no PYTHONPATH, no user site; -S: no site-packages at all
    out = subprocess.run([python, "-I", "-S", "-B", "-c", code, str(unpacked)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == venus_package.version()


def test_sample_config_is_valid_and_off_venus_ports() -> None:
    sys.path.insert(0, str(ROOT / "firmware"))
    import config

    sample = json.loads((VENUS_OS / "config.sample.json").read_text())
    clean, errors = config.validate(sample)
    assert errors == []
    assert clean["http"]["port"] == 8088 and 8088 not in VENUS_PORTS
    assert clean["uart"]["port"] == ""  # never a guess: it could be another device's
    assert clean["control"]["mode"] == "off"


def test_scripts_are_posix_sh() -> None:
    scripts = [VENUS_OS / n for n in ("install.sh", "uninstall.sh", "restart.sh")]
    for script in scripts:
        assert script.read_text().startswith("#!/bin/sh\n")
        out = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, (script.name, out.stderr)
    for checker in (["checkbashisms"], ["shellcheck", "-s", "sh", "-S", "error"]):
        if shutil.which(checker[0]):  # Debian's devscripts / shellcheck, only when present
            out = subprocess.run(checker + [str(s) for s in scripts],
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr


# --- a throwaway root -----------------------------------------------------------------------

class Gx:
    """A root with the package unpacked in data/etc, Venus's directories, and stand-ins."""

    def __init__(self, base: Path, package: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.bin = base / "bin"
        self.calls = base / "calls.log"
        self.dir = self.root / GX_DIR.lstrip("/")
        for d in ("data/etc", "data/log", "service", "etc/udev/rules.d", "dev/serial/by-id",
                  "opt/victronenergy/serial-starter", "opt/victronenergy/swupdate-scripts"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "dev/ttyUSB0").write_text("")
        os.symlink("../../ttyUSB0", self.root / BY_ID.lstrip("/"))
        self.bin.mkdir()
        for name, body in FAKES.items():
            self._script(self.bin / name, body)
        self._script(self.root / "opt/victronenergy/serial-starter/stop-tty.sh",
                     'echo "stop-tty.sh $*" >> "$CALLS"\n')
        self._script(self.root / "opt/victronenergy/swupdate-scripts/remount-rw.sh",
                     'echo "remount-rw.sh $*" >> "$CALLS"\n')
        self.package = package

    @staticmethod
    def _script(path: Path, body: str) -> None:
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def unpack(self) -> None:
        subprocess.run(["tar", "-xzf", str(self.package), "-C", str(self.root / "data/etc")],
                       check=True)

    def config(self, port: str) -> None:
        """A user's config.json with this uart.port."""
        data = json.loads((self.dir / "config.sample.json").read_text())
        data["uart"]["port"] = port
        (self.dir / "config.json").write_text(json.dumps(data))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PATH="%s:%s" % (self.bin, os.environ["PATH"]), ROOT=str(self.root),
                   CALLS=str(self.calls), PYTHONDONTWRITEBYTECODE="1", **extra)
        return env

    shell = "sh"

    def busybox(self) -> None:
        """Venus's userland: busybox's sh and its applets (grep, sed, find, readlink...)
        ahead of the host's on PATH."""
        busybox = shutil.which("busybox")
        assert busybox
        for applet in BUSYBOX_APPLETS:
            os.symlink(busybox, self.bin / applet)
        self.shell = str(self.bin / "sh")

    def sh(self, script: str, *args: str, check: bool = True,
           **extra: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([self.shell, str(self.dir / script), *args],
                             env=self.env(**extra), capture_output=True, text=True, timeout=120)
        if check:
            assert out.returncode == 0, out.stdout + out.stderr
        return out

    def log(self) -> list[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [line.replace(str(self.root), "$ROOT") for line in lines]

    def reset_log(self) -> None:
        if self.calls.exists():
            self.calls.unlink()

    def listing(self) -> dict[str, tuple]:
        """Every path under the root: (kind, mode, content or link target)."""
        out: dict[str, tuple] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = path.relative_to(self.root).as_posix()
                st = path.lstat()
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = ("dir", mode)
                else:
                    out[rel] = ("file", mode, path.read_bytes())
        return out


@pytest.fixture
def gx(tmp_path: Path, package: Path) -> Gx:
    g = Gx(tmp_path, package)
    g.unpack()
    return g


def rel(path: str) -> str:
    return path.lstrip("/")


def test_install_with_a_usb_adapter(gx: Gx) -> None:
    gx.config("/dev/ttyUSB0")
    out = gx.sh("install.sh")
    files = gx.listing()
    svc_dir = rel(GX_DIR) + "/service"
    assert files["service/" + NAME] == ("link", GX_DIR + "/service")
    run = files[svc_dir + "/run"]
    assert run[1] == 0o755
    text = run[2].decode()
    assert text.startswith("#!/bin/sh\n") and "\nexec 2>&1\n" in text
    assert text.rstrip().endswith(
        'exec python3 -u "$DIR/service.py" --config "$DIR/config.json"')
    assert "/opt/victronenergy/serial-starter/stop-tty.sh" in text
    log_run = files[svc_dir + "/log/run"]
    assert log_run[1] == 0o755
    assert log_run[2] == b"#!/bin/sh\nexec multilog t s25000 n4 /var/log/bluesmart-charger\n"
    assert files["data/log/" + NAME][0] == "dir"
    rc = files["data/rc.local"]
    assert rc[1] == 0o755
    assert rc[2].decode() == "#!/bin/sh\n%s\n" % RC_LINE
    rules = files[RULES]
    assert rules[1] == 0o644
    lines = rules[2].decode().splitlines()
    assert lines[-1] == RULE
    assert all(line.startswith("#") for line in lines[:-1])
    calls = gx.log()
    assert "udevadm info --query=property --name=/dev/ttyUSB0" in calls
    reload = calls.index("udevadm control --reload-rules")
    trigger = calls.index(
        "udevadm trigger --action=add --subsystem-match=tty --sysname-match=ttyUSB0")
    assert reload < trigger
    assert not any(c.startswith("remount-rw.sh") for c in calls)  # the root is writable
    assert "serial-starter keeps off /dev/ttyUSB0" in out.stdout
    # what install writes is POSIX sh too
    for script in (gx.dir / "service/run", gx.dir / "service/log/run"):
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
        if shutil.which("shellcheck"):
            checked = subprocess.run(["shellcheck", "-s", "sh", str(script)],
                                     capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout
    # the user's config.json untouched
    assert json.loads(files[rel(GX_DIR) + "/config.json"][2])["uart"]["port"] == "/dev/ttyUSB0"


def test_install_twice_is_once(gx: Gx) -> None:
    gx.config(BY_ID)
    gx.sh("install.sh")
    once = gx.listing()
    gx.reset_log()
    out = gx.sh("install.sh")
    assert gx.listing() == once
    assert once["data/rc.local"][2].decode().count(RC_LINE) == 1
    # an unchanged rule is not reloaded again
    assert not any(c.startswith("udevadm control") for c in gx.log())
    assert "already re-installs at boot" in out.stdout


def test_fresh_install_without_config(gx: Gx) -> None:
    out = gx.sh("install.sh")
    files = gx.listing()
    config = files[rel(GX_DIR) + "/config.json"]
    assert config[2] == (gx.dir / "config.sample.json").read_bytes()
    assert config[1] == 0o600
    assert RULES not in files
    assert not any(c.startswith("udevadm") for c in gx.log())
    assert "uart.port is not set" in out.stdout
    # the documented next step: set the port, install again -> the rule
    gx.config("/dev/ttyUSB0")
    gx.sh("install.sh")
    assert (gx.root / RULES).read_text().splitlines()[-1] == RULE


def test_install_adapter_without_serial_number_and_builtin_port(gx: Gx) -> None:
    gx.config("/dev/ttyUSB2")
    out = gx.sh("install.sh")
    # never every CH340 (a BMS's RS485 adapter is often one): the USB socket it is in
    assert (gx.root / RULES).read_text().splitlines()[-1] == (
        'ACTION=="add", ENV{ID_BUS}=="usb", ENV{ID_VENDOR_ID}=="1a86", '
        'ENV{ID_MODEL_ID}=="7523", ENV{ID_PATH}=="platform-ci_hdrc.1-usb-0:1.2:1.0", '
        'ENV{VE_SERVICE}="ignore"')
    assert "no serial number" in out.stdout and "USB socket" in out.stdout
    assert ("udevadm trigger --action=add --subsystem-match=tty --sysname-match=ttyUSB2"
            in gx.log())
    gx.config("/dev/ttyS4")  # not USB: no rule (run's stop-tty.sh covers it)
    out = gx.sh("install.sh")
    assert not (gx.root / RULES).exists()
    assert "not a USB serial adapter" in out.stdout


def test_install_network_port_writes_no_rule(gx: Gx) -> None:
    gx.config("socket://192.168.1.50:4001")
    out = gx.sh("install.sh")
    assert not (gx.root / RULES).exists()
    assert not any(c.startswith("udevadm") for c in gx.log())
    assert "not a local serial port" in out.stdout
    # from a USB port to a network one: the rule made for the USB port goes
    gx.config("/dev/ttyUSB0")
    gx.sh("install.sh")
    assert (gx.root / RULES).exists()
    gx.reset_log()
    gx.config("rfc2217://192.168.1.50:4001")
    gx.sh("install.sh")
    assert not (gx.root / RULES).exists()
    assert gx.log().count("udevadm control --reload-rules") == 1


def test_install_with_the_adapter_unplugged_keeps_the_rule(gx: Gx) -> None:
    gx.config("/dev/ttyUSB0")
    gx.sh("install.sh")
    rule = (gx.root / RULES).read_text()
    gx.config("/dev/ttyUSB7")  # not there: udevadm info fails
    out = gx.sh("install.sh")
    assert (gx.root / RULES).read_text() == rule
    assert "kept the udev rule" in out.stdout


def test_install_restarts_a_running_service_starts_a_stopped_one(gx: Gx) -> None:
    gx.config("socket://h:1")
    gx.sh("install.sh")
    assert not any(c.startswith("svc ") for c in gx.log())  # svscan starts it itself
    gx.reset_log()
    gx.sh("install.sh", FAKE_SVSTAT="up")
    assert "svc -t $ROOT/service/%s" % NAME in gx.log()
    gx.reset_log()
    gx.sh("install.sh", FAKE_SVSTAT="down")
    assert "svc -u $ROOT/service/%s" % NAME in gx.log()


def test_install_refuses_the_wrong_place(tmp_path: Path, package: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["tar", "-xzf", str(package), "-C", str(elsewhere)], check=True)
    root = tmp_path / "root"
    (root / "service").mkdir(parents=True)
    out = subprocess.run(["sh", str(elsewhere / NAME / "install.sh")],
                         env=dict(os.environ, ROOT=str(root)), capture_output=True, text=True)
    assert out.returncode != 0
    assert "must be in %s" % GX_DIR in out.stderr
    assert sorted(p.name for p in root.rglob("*")) == ["service"]


def run_service_script(gx: Gx) -> list[str]:
    """service/run as supervise starts it, with `python3 -u service.py` a stand-in (`python3
    -c`, reading config.json, the real one): the calls it made."""
    gx.reset_log()
    real = shutil.which("python3")
    stand_in = gx.bin / "python3"
    Gx._script(stand_in,
               'if [ "$1" = -c ]; then exec %s "$@"; fi\necho "python3 $*" >> "$CALLS"\n' % real)
    try:
        out = subprocess.run([gx.shell, str(gx.dir / "service/run")], env=gx.env(),
                             capture_output=True, text=True, timeout=60)
    finally:
        stand_in.unlink()
    assert out.returncode == 0, out.stdout + out.stderr
    return gx.log()


SERVICE_STARTED = "python3 -u $ROOT%s/service.py --config $ROOT%s/config.json" % (GX_DIR, GX_DIR)


def test_run_script_stops_serial_starter_on_the_resolved_tty(gx: Gx) -> None:
    gx.config(BY_ID)
    gx.sh("install.sh")
    assert run_service_script(gx) == ["stop-tty.sh ttyUSB0", SERVICE_STARTED]
    gx.config("/dev/ttyUSB3")  # not there (yet): its name as it is
    assert run_service_script(gx) == ["stop-tty.sh ttyUSB3", SERVICE_STARTED]
    gx.config("socket://10.0.0.5:4001")
    assert run_service_script(gx) == [SERVICE_STARTED]


def test_uninstall_leaves_what_was_there(gx: Gx) -> None:
    (gx.root / "data/rc.local").write_text("#!/bin/bash\n/data/other-thing.sh\n")
    (gx.root / "data/rc.local").chmod(0o755)
    before = gx.listing()
    gx.config("/dev/ttyUSB0")
    with_config = gx.listing()
    gx.sh("install.sh")
    assert (gx.root / "data/rc.local").read_text() == (
        "#!/bin/bash\n/data/other-thing.sh\n%s\n" % RC_LINE)
    (gx.root / "data/log" / NAME / "current").write_text("a log line\n")
    (gx.dir / "firmware/__pycache__").mkdir()  # what running the service leaves
    (gx.dir / "firmware/__pycache__/app.cpython-38.pyc").write_bytes(b"\0")
    gx.reset_log()
    out = gx.sh("uninstall.sh")
    calls = gx.log()
    link = "$ROOT/service/" + NAME
    assert calls.index("svc -d " + link) < calls.index("svc -d %s/log" % link)
    assert "udevadm control --reload-rules" in calls
    after = gx.listing()
    kept = {k: v for k, v in after.items() if k not in with_config}
    assert sorted(kept) == ["data/log/" + NAME, "data/log/%s/current" % NAME]
    assert {k: v for k, v in after.items() if k in with_config} == with_config
    assert "kept" in out.stdout
    gx.sh("uninstall.sh", "--purge")
    assert gx.listing() == before


def test_uninstall_purge_is_exactly_before(gx: Gx) -> None:
    before = gx.listing()
    gx.sh("install.sh")  # creates config.json and rc.local
    gx.config("/dev/ttyUSB0")
    gx.sh("install.sh")
    (gx.dir / "state.json").write_text("{}")
    (gx.dir / "gx-switch.json").write_text('{"last_on": "manual"}')  # the service's own
    gx.sh("uninstall.sh", "--purge")
    assert gx.listing() == before
    assert not (gx.root / "data/rc.local").exists()


def test_uninstall_twice_and_bad_argument(gx: Gx) -> None:
    gx.sh("install.sh")
    gx.sh("uninstall.sh")
    state = gx.listing()
    gx.sh("uninstall.sh")
    assert gx.listing() == state
    bad = gx.sh("uninstall.sh", "--everything", check=False)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_restart(gx: Gx) -> None:
    gx.sh("restart.sh")
    assert gx.log() == ["svc -t $ROOT/service/" + NAME]


# --- migration from the original project ----------------------------------------------------

def install_original(gx: Gx, ini: str | None = ORIGINAL_INI) -> None:
    """The original as its README installs it, in the same directory, before ours is
    unpacked over it: config.ini, its program, service/run, the link, its rc.local line
    (mode 777, as its install.sh makes it)."""
    d = gx.dir
    (d / "service/log").mkdir(parents=True)
    if ini is not None:
        (d / "config.ini").write_text(ini)
    (d / "config.sample.ini").write_text(ORIGINAL_INI)
    (d / (NAME + ".py")).write_text("#!/usr/bin/env python\n# the original\n")
    (d / "service/run").write_text(
        "#!/bin/sh\necho \"*** starting bluemart-charger ***\"\nexec 2>&1\n"
        "exec /data/etc/bluesmart-charger/bluesmart-charger.py\n")
    (d / "service/log/run").write_text(
        "#!/bin/sh\nexec multilog t s25000 n4 /var/log/bluesmart-charger\n")
    os.symlink(GX_DIR + "/service", gx.root / "service" / NAME)
    rc = gx.root / "data/rc.local"
    rc.write_text("#!/bin/bash\n\nbash %s/install.sh\n" % GX_DIR)
    rc.chmod(0o777)


@pytest.fixture
def original(tmp_path: Path, package: Path) -> Gx:
    g = Gx(tmp_path, package)
    install_original(g)
    g.unpack()  # ours over it, as docs say
    return g


def test_migration_takes_the_original_over(original: Gx) -> None:
    gx = original
    out = gx.sh("install.sh")
    config = json.loads((gx.dir / "config.json").read_text())
    assert config["venus"] == {"host": "192.168.1.20", "protocol": "modbus", "port": 502,
                               "unit": 100, "source": "L2"}  # the 1 s poll and 10 s stale kept
    assert config["control"] == {"mode": "auto"}
    # the stable name of the same adapter
    assert config["uart"] == {"port": BY_ID}
    assert config["charger"] == {"max_current_a": 12.5}
    assert config["http"] == {"port": 8088}
    text = out.stdout
    for said in ("taken over: ip = 192.168.1.20 -> venus.host 192.168.1.20",
                 "taken over: phase = 831 -> venus.source L2", "831/832",
                 "taken over: maxcurrent = 12.5 -> charger.max_current_a 12.5",
                 "logging = INFO: this app has no log level",
                 "interval = 30: not taken over",
                 "stopped the original's service", "removed the original's link",
                 "removed the original's line"):
        assert said in text, said
    calls = gx.log()
    link = "$ROOT/service/" + NAME
    assert calls[0] == "svc -d " + link
    assert "pkill -f %s/%s.py" % (GX_DIR, NAME) in calls
    rc = gx.root / "data/rc.local"
    assert rc.read_text() == "#!/bin/bash\n\n%s\n" % RC_LINE
    assert stat.S_IMODE(rc.stat().st_mode) == 0o755
    assert os.readlink(gx.root / "service" / NAME) == GX_DIR + "/service"
    assert "service.py" in (gx.dir / "service/run").read_text()
    for f in ("config.ini", "config.sample.ini", NAME + ".py"):
        assert not (gx.dir / f).exists()
        assert (gx.dir / "original" / f).exists()
    assert (gx.dir / "original/config.ini").read_text() == ORIGINAL_INI
    assert (gx.root / RULES).read_text().splitlines()[-1] == RULE
    # installed now: again is the same, and says nothing about the original
    once = gx.listing()
    out = gx.sh("install.sh")
    assert gx.listing() == once
    assert "original" not in out.stdout


def test_migration_never_overwrites_a_config_json(original: Gx) -> None:
    gx = original
    gx.config("socket://10.0.0.5:4001")
    mine = (gx.dir / "config.json").read_bytes()
    out = gx.sh("install.sh")
    assert (gx.dir / "config.json").read_bytes() == mine
    assert "config.json exists: kept; config.ini is not migrated" in out.stdout
    assert "svc -d $ROOT/service/" + NAME in gx.log()  # the original is still stopped
    assert (gx.dir / "original/config.ini").exists()


def test_migration_of_a_broken_config_ini_changes_nothing(tmp_path: Path, package: Path) -> None:
    for n, (ini, reason) in enumerate((
            ("[DEFAULT\nip = 1.2.3.4\n", "not a valid INI file"),
            (ORIGINAL_INI.replace("phase = 831", "phase = L1"), "phase = 'L1' is not"),
            (ORIGINAL_INI.replace("phase = 831", "phase = 868"), "not a grid power register"),
            (ORIGINAL_INI.replace("maxcurrent = 12.5", "maxcurrent = 250"), "maxcurrent"),
            ("[DEFAULT]\nfoo = 1\n", "none of the original's settings"))):
        gx = Gx(tmp_path / str(n), package)
        install_original(gx, ini)
        gx.unpack()
        before = gx.listing()
        out = gx.sh("install.sh", check=False)
        assert out.returncode != 0
        assert reason in out.stderr, out.stderr
        assert "nothing was changed" in out.stderr
        assert gx.listing() == before
        assert not any(c.startswith(("svc", "pkill", "udevadm")) for c in gx.log())


def test_original_without_config_ini(tmp_path: Path, package: Path) -> None:
    gx = Gx(tmp_path, package)
    install_original(gx, ini=None)
    gx.unpack()
    out = gx.sh("install.sh")
    assert "no config.ini: nothing to migrate" in out.stdout
    assert json.loads((gx.dir / "config.json").read_text())["control"]["mode"] == "off"


# --- migrate.py on its own ------------------------------------------------------------------

def load_migrate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("venus_migrate", VENUS_OS / "migrate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def migrate() -> ModuleType:
    return load_migrate()


def convert(migrate: ModuleType, text: str,
            tmp_path: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    ini = tmp_path / "config.ini"
    ini.write_text(text)
    out = tmp_path / "config.json"
    if out.exists():
        out.unlink()
    taken, notes = migrate.migrate(str(ini), str(out), root=str(tmp_path))
    return json.loads(out.read_text()), taken, notes


@pytest.mark.parametrize("phase, source, noted", [
    (820, "L1", False), (821, "L2", False), (822, "L3", False), (831, "L2", True),
    (832, "L3", True)])
def test_migrate_registers(migrate: ModuleType, tmp_path: Path, phase: int, source: str,
                           noted: bool) -> None:
    config, taken, notes = convert(migrate, "[DEFAULT]\nphase = %d\n" % phase, tmp_path)
    assert config["venus"]["source"] == source
    assert any("831/832" in n for n in notes) == noted


def test_migrate_defaults_case_and_sections(migrate: ModuleType, tmp_path: Path) -> None:
    # the original's own defaults for what is missing; keys in any case, in any section
    config, taken, notes = convert(migrate, "[bluesmart]\nIP = 10.1.1.1\nInterval = 5\n",
                                   tmp_path)
    assert config["venus"]["host"] == "10.1.1.1"
    assert config["venus"]["source"] == "L1"
    assert "interval_s" not in config["venus"] and "stale_s" not in config["control"]
    assert config["uart"]["port"] == "/dev/ttyUSB1"
    assert "charger" not in config
    assert any("phase is not set" in n for n in notes)
    assert any("maxcurrent is not set" in n for n in notes)


def test_migrate_interval_is_noted_not_taken(migrate: ModuleType, tmp_path: Path) -> None:
    """The original's interval spaced its flash writes; ours reads every second and writes
    the volatile limit: a 30 s poll would only make surplus charging slow."""
    for text in ("0.1", "30", "600"):
        config, _, notes = convert(migrate, "[DEFAULT]\ninterval = %s\n" % text, tmp_path)
        assert "interval_s" not in config["venus"] and "stale_s" not in config["control"]
        assert any(n.startswith("interval = %s: not taken over" % text) for n in notes)
    with pytest.raises(migrate.MigrationError):
        convert(migrate, "[DEFAULT]\ninterval = soon\n", tmp_path)


def test_migrate_result_fits_the_firmware_config(migrate: ModuleType, tmp_path: Path) -> None:
    config, _, _ = convert(migrate, ORIGINAL_INI, tmp_path)
    sys.path.insert(0, str(ROOT / "firmware"))
    import config as firmware_config

    clean, errors = firmware_config.validate(config)
    assert errors == []
    assert clean["venus"]["host"] == "192.168.1.20"


def test_migrate_cli(tmp_path: Path) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(ORIGINAL_INI)
    out = tmp_path / "config.json"
    # --root: /dev/serial/by-id of an empty root, not this machine's
    run = [sys.executable, "-B", str(VENUS_OS / "migrate.py"), "--root", str(tmp_path),
           "--ini", str(ini), "--out", str(out)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "taken over: interface = /dev/ttyUSB0 -> uart.port /dev/ttyUSB0" in done.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    first = out.read_bytes()
    again = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "exists: not overwritten" in again.stderr
    assert out.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.ini", "config.json"]
    missing = subprocess.run(run[:6] + [str(tmp_path / "nope.ini"), "--out",
                                        str(tmp_path / "x.json")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert not (tmp_path / "x.json").exists()


def test_migrate_runs_on_python_3_8() -> None:
    vermin = Path(sys.executable).parent / "vermin"
    if not vermin.exists():
        pytest.skip("vermin is not installed (./dev test installs it)")
    out = subprocess.run([str(vermin), "--no-tips", "-t=3.8-", "--violations",
                          str(VENUS_OS / "migrate.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox is not installed")
def test_migrate_install_uninstall_on_busybox(tmp_path: Path, package: Path) -> None:
    """The whole round on busybox's sh and applets, as on the GX (dash above)."""
    gx = Gx(tmp_path, package)
    gx.busybox()
    install_original(gx)
    gx.unpack()
    before = gx.listing()
    gx.sh("install.sh", FAKE_SVSTAT="down")
    config = json.loads((gx.dir / "config.json").read_text())
    assert config["venus"]["source"] == "L2" and config["uart"]["port"] == BY_ID
    assert (gx.root / RULES).read_text().splitlines()[-1] == RULE
    rc = gx.root / "data/rc.local"
    assert rc.read_text() == "#!/bin/bash\n\n%s\n" % RC_LINE
    assert stat.S_IMODE(rc.stat().st_mode) == 0o755
    assert "svc -u $ROOT/service/" + NAME in gx.log()
    once = gx.listing()
    gx.sh("install.sh")
    assert gx.listing() == once
    assert run_service_script(gx) == ["stop-tty.sh ttyUSB0", SERVICE_STARTED]
    gx.sh("uninstall.sh", "--purge")
    after = gx.listing()
    # what is left: the original's files, kept in original/, and its rc.local without its line
    gone = {k for k in before if k not in after}
    assert gone == {rel(GX_DIR) + "/" + f for f in ("config.ini", "config.sample.ini",
                                                    NAME + ".py", "service", "service/run",
                                                    "service/log", "service/log/run")} | {
        "service/" + NAME}
    assert sorted(k for k in after if k not in before) == [
        rel(GX_DIR) + "/original"] + [rel(GX_DIR) + "/original/" + f for f in (
            NAME + ".py", "config.ini", "config.sample.ini")]
    assert rc.read_text() == "#!/bin/bash\n\n"


def test_at_boot_a_read_only_root_is_left_alone(gx: Gx) -> None:
    """rc.local runs install.sh --boot after every firmware update, when the rule is gone and
    the root is read-only: remount-rw.sh would leave the root writable for good, unasked.
    At boot the rule waits for install.sh run by hand (which may remount)."""
    gx.config("/dev/ttyUSB0")
    rules_dir = gx.root / RULES_DIR_REL
    rules_dir.rmdir()  # as unwritable as it gets for root: not there
    out = gx.sh("install.sh", "--boot")
    assert "waits for install.sh run by hand" in out.stdout
    assert not any(c.startswith("remount-rw.sh") for c in gx.log())
    assert not (gx.root / RULES).exists()
    rules_dir.mkdir()
    out = gx.sh("install.sh")
    assert (gx.root / RULES).read_text().splitlines()[-1] == RULE


def test_rc_local_ending_in_exit_gets_the_line_before_it(gx: Gx) -> None:
    rc = gx.root / "data/rc.local"
    rc.write_text("#!/bin/sh\n/data/other-thing.sh\n# old\nsh %s/install.sh\nexit 0\n\n" % GX_DIR)
    rc.chmod(0o755)
    gx.config("/dev/ttyUSB0")
    gx.sh("install.sh")
    lines = rc.read_text().splitlines()
    assert lines[-2:] == [RC_LINE, "exit 0"] or lines[-3:] == [RC_LINE, "exit 0", ""]
    assert lines.count(RC_LINE) == 1 and "sh %s/install.sh" % GX_DIR not in lines  # the old one
    assert "/data/other-thing.sh" in lines
    gx.sh("install.sh")
    assert rc.read_text().splitlines().count(RC_LINE) == 1
