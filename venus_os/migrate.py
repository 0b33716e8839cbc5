#!/usr/bin/env python3
"""Take over the original project's settings: its config.ini becomes our config.json.

    python3 migrate.py --ini /data/etc/bluesmart-charger/config.ini \
                       --out /data/etc/bluesmart-charger/config.json

The original (wasn-eu/Victron_BlueSmart_IP22, now pvtex/Victron_BlueSmart_IP22) is a
daemontools service in the same directory, /data/etc/bluesmart-charger, with config.ini in its
[DEFAULT] section (bluesmart-charger/config.sample.ini and bluesmart-charger.py there):

    logging    ERROR/WARNING/INFO/DEBUG    (no such setting here: noted)
    ip         the GX's address            -> venus.host (Modbus TCP, unit 100, port 502)
    phase      the grid register it read   -> venus.source: 820 L1, 821 L2, 822 L3
               (its sample lists L2/L3 as 831/832, which are not grid registers: taken as L2/L3)
    interface  the serial device           -> uart.port
    interval   seconds between writes      -> not taken over (noted): the grid is read every
                                              venus.interval_s (1 s) and the volatile limit
                                              does not wear the flash
    maxcurrent the highest charge current  -> charger.max_current_a (a later key, not in the
                                              indexed sample: assumed to be amps)

Keys are read case-insensitively from [DEFAULT] or any section. Also set: venus.protocol
"modbus", control.mode "auto" (the original always controlled), http.port 8088. The result is
checked with the firmware's own config.validate and written atomically; an existing --out is
never overwritten, and a config.ini that cannot be read or holds a value that cannot be taken
over changes nothing (exit status 2, the reason on stderr).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
KNOWN = ("logging", "ip", "phase", "interface", "interval", "maxcurrent")
# the original's own defaults (bluesmart-charger.py), for keys its config.ini leaves out
ORIGINAL_DEFAULTS = {"ip": "127.0.0.1", "phase": "820", "interface": "/dev/ttyUSB1",
                     "interval": "30", "logging": "WARNING"}
REGISTERS = {820: "L1", 821: "L2", 822: "L3", 831: "L2", 832: "L3"}
HTTP_PORT = 8088  # Venus uses 80/443 (and 81, 502, 1880, 1883, 3000, 8883, 9001...)


class MigrationError(Exception):
    """config.ini cannot be taken over; nothing was written."""


def firmware_config() -> Any:
    """The firmware's config module (validate, defaults): from the package (firmware/ beside
    this file) or the repository (../firmware)."""
    for path in (os.path.join(HERE, "firmware"),
                 os.path.join(os.path.dirname(HERE), "firmware")):
        if os.path.isfile(os.path.join(path, "config.py")):
            if path not in sys.path:
                sys.path.insert(0, path)
            break
    import config

    return config


def read_ini(path: str) -> dict[str, str]:
    """The known keys of config.ini, lower-case, from [DEFAULT] or any section."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            parser.read_file(f, source=path)
    except OSError as err:
        raise MigrationError("cannot read %s: %s" % (path, err.strerror or err)) from err
    except configparser.Error as err:
        raise MigrationError("%s is not a valid INI file: %s" % (path, err)) from err
    found: dict[str, str] = {}
    where: dict[str, str] = {}
    for section in [parser.default_section] + parser.sections():
        items = parser.defaults() if section == parser.default_section else parser[section]
        for key, value in items.items():
            key = key.lower()
            if key not in KNOWN:
                continue
            value = (value or "").strip()
            if key in found and found[key] != value:
                raise MigrationError("%s: %s is %r in [%s] and %r in [%s]; which one?"
                                     % (path, key, found[key], where[key], value, section))
            found[key] = value
            where.setdefault(key, section)
    if not found:
        raise MigrationError("%s holds none of the original's settings (%s): not its "
                             "config.ini?" % (path, ", ".join(KNOWN)))
    return found


def _number(key: str, text: str, kind: type = float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise MigrationError("%s = %r is not a %s" % (
            key, text, "whole number" if kind is int else "number")) from None
    if value != value:  # NaN
        raise MigrationError("%s = %r is not a number" % (key, text))
    return value


def _limits(section: str, field: str, specs: dict) -> tuple[float, float]:
    spec = specs[section][field]
    return spec[2], spec[3]


def convert(ini: dict[str, str], specs: dict) -> tuple[dict, list[str], list[str]]:
    """(our settings, what was taken over, what was assumed or changed)."""
    taken: list[str] = []
    notes: list[str] = []
    values = dict(ini)
    for key in ("ip", "phase", "interface", "interval"):
        if not values.get(key):
            values[key] = ORIGINAL_DEFAULTS[key]
            notes.append("%s is not set in config.ini: the original's default %s is assumed"
                         % (key, ORIGINAL_DEFAULTS[key]))

    host = values["ip"]
    taken.append("ip = %s -> venus.host %s (Modbus TCP, port 502, unit 100)" % (host, host))

    register = int(_number("phase", values["phase"], int))
    if register not in REGISTERS:
        raise MigrationError("phase = %s is not a grid power register (820 L1, 821 L2, "
                             "822 L3): set venus.source (sum, L1, L2, L3) in config.json "
                             "by hand" % values["phase"])
    source = REGISTERS[register]
    taken.append("phase = %d -> venus.source %s" % (register, source))
    if register in (831, 832):
        notes.append("phase = %d: the original's config.sample.ini lists L2/L3 as 831/832, "
                     "but the grid power of %s is register %d (831/832 are no grid "
                     "registers); taken as %s" % (
                         register, source, register - 10, source))

    port = values["interface"]
    taken.append("interface = %s -> uart.port %s" % (port, port))

    interval = _number("interval", values["interval"])
    default_poll = specs["venus"]["interval_s"][1]
    notes.append("interval = %s: not taken over. The original computed and wrote the charge "
                 "current every %s s (each write went to the charger's flash); this app reads "
                 "the grid every venus.interval_s (%s s) and sets the current through the "
                 "volatile limit, which does not wear the flash (stored writes, where the "
                 "charger has no volatile limit, are spaced by charger.stored_min_interval_s "
                 "under a daily budget)" % (values["interval"], interval, default_poll))

    out: dict[str, Any] = {
        "uart": {"port": port},
        "http": {"port": HTTP_PORT},
        "venus": {"host": host, "protocol": "modbus", "port": 502, "unit": 100,
                  "source": source},
        "control": {"mode": "auto"},
    }

    if values.get("maxcurrent"):
        amps = _number("maxcurrent", values["maxcurrent"])
        low, high = _limits("charger", "max_current_a", specs)
        if not low < amps <= high:
            raise MigrationError("maxcurrent = %s is not a current in A above %s up to %s"
                                 % (values["maxcurrent"], low, high))
        out["charger"] = {"max_current_a": float(amps)}
        taken.append("maxcurrent = %s -> charger.max_current_a %s" % (values["maxcurrent"],
                                                                      float(amps)))
    else:
        notes.append("maxcurrent is not set in config.ini: charger.max_current_a stays 0 "
                     "(the charger's rating); set your battery's limit")

    level = values.get("logging") or ORIGINAL_DEFAULTS["logging"]
    notes.append("logging = %s: this app has no log level; the service log "
                 "(/data/log/bluesmart-charger) gets its events and errors, the status page "
                 "(port %d) the rest" % (level, HTTP_PORT))
    notes.append("set: control.mode auto (the original always controlled), venus.protocol "
                 "modbus (as the original read the grid), http.port %d (the status page; "
                 "Venus uses 80 and 443)" % HTTP_PORT)
    return out, taken, notes


def by_id(port: str, root: str) -> str | None:
    """The /dev/serial/by-id name of `port` (a /dev/ttyUSBn moves when another adapter is
    plugged in first; the by-id name stays), or None."""
    if not port.startswith("/dev/tty"):
        return None
    directory = root + "/dev/serial/by-id"
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    target = os.path.realpath(root + port)
    for name in names:
        if os.path.realpath(os.path.join(directory, name)) == target:
            return "/dev/serial/by-id/" + name
    return None


def write_atomic(path: str, text: str) -> None:
    """A new file, whole or not at all (a temp file beside it, fsync, rename)."""
    tmp = path + ".migrate.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def migrate(ini_path: str, out_path: str, root: str = "") -> tuple[list[str], list[str]]:
    """Convert `ini_path` into `out_path` (which must not exist): (taken over, notes)."""
    if os.path.lexists(out_path):
        raise MigrationError("%s exists: not overwritten" % out_path)
    config = firmware_config()
    specs = config.schema()
    ini = read_ini(ini_path)
    out, taken, notes = convert(ini, specs)
    stable = by_id(out["uart"]["port"], root)
    if stable:
        notes.append("uart.port %s instead of %s: the same adapter by its stable name"
                     % (stable, out["uart"]["port"]))
        out["uart"]["port"] = stable
    clean, errors = config.validate(out)
    if errors:
        raise MigrationError("the settings taken over do not fit: " + "; ".join(errors))
    write_atomic(out_path, json.dumps(out, indent=2) + "\n")
    return taken, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="migrate.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ini", required=True, help="the original's config.ini")
    ap.add_argument("--out", required=True, help="our config.json (must not exist)")
    ap.add_argument("--root", default="", help=argparse.SUPPRESS)  # tests: a throwaway /
    args = ap.parse_args(argv)
    try:
        taken, notes = migrate(args.ini, args.out, args.root)
    except MigrationError as err:
        print("migrate: %s; nothing was changed" % err, file=sys.stderr)
        return 2
    print("migrate: %s -> %s" % (args.ini, args.out))
    for line in taken:
        print("  taken over: " + line)
    for line in notes:
        print("  note: " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
