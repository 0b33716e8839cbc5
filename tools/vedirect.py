#!/usr/bin/env python3
"""VE.Direct on the command line: decode captures, build frames, talk to an IP22 over a
USB-serial adapter (or the simulator: --port socket://127.0.0.1:PORT).

Exit codes: 0 ok, 2 bad usage or input, 3 no reply or a refusal from the charger.
The protocol itself lives in firmware/vedirect.py and firmware/ip22.py; this is only the shell.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
import ip22  # noqa: E402
import ip22text  # noqa: E402
import registers  # noqa: E402
import vedirect as codec  # noqa: E402

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CHARGER = 3
BAUDRATE = 19200


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- formatting -----------------------------------------------------------------------------


def event_json(ev: Any) -> dict[str, Any]:
    """One parser event as the JSON object `decode` and `monitor --json` print."""
    out: dict[str, Any] = {"kind": ev.kind, "ok": ev.ok}
    if not ev.ok:
        out["reason"] = ev.reason
        if ev.kind == "hex" and ev.nbytes:
            out["frame"] = ev.text()
        return out
    if ev.kind == "text":
        out["fields"] = dict(ev.fields())
        return out
    out["code"] = codec.CODE_NAMES.get(ev.code, "0x%X" % ev.code)
    reg = ev.register
    if reg is not None:
        out["register"] = "0x%04X" % reg
        name = ip22.register_name(reg)
        if name:
            out["name"] = name
        out["flags"] = ev.flags
        if ev.flags:
            out["flag_names"] = codec.flag_names(ev.flags)
    raw = ev.raw
    out["raw"] = raw.hex().upper()
    if reg is not None and ip22.register_name(reg) and not ev.flags:
        try:
            value, unit = ip22.decode(reg, raw)
        except ValueError:
            out["note"] = "unexpected value size %d" % len(raw)
        else:
            if not isinstance(value, bytes):
                out["value"] = value
                if unit:
                    out["unit"] = unit
    return out


def event_line(ev: Any) -> str:
    """One parser event for people: `monitor` without --json."""
    if not ev.ok:
        return "%s dropped: %s" % (ev.kind, ev.reason)
    if ev.kind == "text":
        parts = []
        for label, value in ev.fields():
            if label == "CS" and value.isdigit():
                value = "%s (%s)" % (value, ip22text.state_name(int(value)))
            elif label == "ERR" and value.isdigit():
                value = "%s (%s)" % (value, ip22text.error_name(int(value)))
            parts.append("%s=%s" % (label, value))
        return "text  " + " ".join(parts)
    info = event_json(ev)
    text = "%-5s %s" % (info["code"], info.get("register", ""))
    if "name" in info:
        text += " " + info["name"]
    if "value" in info:
        text += " = %s %s" % (info["value"], info.get("unit", ""))
    else:
        text += " raw " + info["raw"]
    if info.get("flags"):
        text += " [%s]" % ", ".join(info["flag_names"])
    return text.rstrip()


# -- arguments ------------------------------------------------------------------------------


def parse_register(text: str) -> int:
    """0xEDF0, 60912 or a register name from firmware/ip22.py."""
    if text in registers.BY_NAME:
        return registers.BY_NAME[text]
    try:
        reg = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "not a register: %r (use 0xEDF0 or a name)" % text
        ) from None
    if not 0 <= reg <= 0xFFFF:
        raise argparse.ArgumentTypeError("register out of range: %r" % text)
    return reg


def parse_amps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a current in A: %r" % text) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError("not a current in A: %r" % text)
    return value


# -- offline commands -----------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    except OSError as err:
        raise CliError("cannot read %s: %s" % (args.file, err.strerror), EXIT_USAGE) from None
    parser = codec.Parser()
    with stream:
        while True:
            chunk = stream.read(4096)
            if not chunk:
                break
            for ev in parser.feed(chunk, 0):
                out.write(json.dumps(event_json(ev)) + "\n")
    if args.summary:
        summary: dict[str, Any] = {"kind": "summary"}
        summary.update(parser.counters())
        summary["incomplete"] = parser.pending_bytes()
        out.write(json.dumps(summary) + "\n")
    return EXIT_OK


def build_frame(args: argparse.Namespace) -> bytes:
    if args.what == "ping":
        return codec.frame_ping()
    if args.what == "app-version":
        return codec.frame_app_version()
    if args.what == "product-id":
        return codec.frame_product_id()
    if args.what == "get":
        return codec.frame_get(args.register)
    try:
        return ip22.set_frame(args.register, args.value)
    except (ValueError, KeyError) as err:
        raise CliError(str(err), EXIT_USAGE) from None


def cmd_frame(args: argparse.Namespace, out: IO[str]) -> int:
    out.write(build_frame(args).decode().rstrip("\n") + "\n")
    return EXIT_OK


# -- talking to a charger -------------------------------------------------------------------


class Charger:
    """A serial port plus a parser: send one frame, wait for its answer, retry."""

    def __init__(self, port: Any, timeout: float, retries: int, on_event: Callable | None = None):
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.parser = codec.Parser()
        self.on_event = on_event
        self.last_text: dict[str, str] | None = None

    def events(self, seconds: float) -> Iterator[Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            chunk = self.port.read(self.port.in_waiting or 1)
            if not chunk:
                continue
            for ev in self.parser.feed(chunk, int(time.monotonic() * 1000)):
                if ev.ok and ev.kind == "text":
                    self.last_text = dict(ev.fields())
                if self.on_event:
                    self.on_event(ev)
                yield ev

    def request(self, frame: bytes, matches: Callable[[Any], bool]) -> dict[str, Any]:
        """Send `frame` until an answer satisfies `matches`; the answer as event_json."""
        for _ in range(1 + self.retries):
            self.port.write(frame)
            self.port.flush()
            for ev in self.events(self.timeout):
                if not ev.ok or ev.kind != "hex":
                    continue
                if matches(ev):
                    return event_json(ev)
                if ev.code == codec.UNKNOWN:
                    raise CliError("the charger does not know this command", EXIT_CHARGER)
                if ev.code == codec.ERROR:
                    break  # it saw a garbled frame: send again
        raise CliError(
            "no reply after %d tries of %.1f s (%s)"
            % (1 + self.retries, self.timeout, frame.decode().strip()),
            EXIT_CHARGER,
        )

    def ping(self) -> dict[str, Any]:
        return self.request(codec.frame_ping(), lambda ev: ev.code == codec.PING_REPLY)

    def product_id(self) -> int:
        answer = self.request(
            codec.frame_product_id(), lambda ev: ev.code == codec.DONE and ev.value_size() >= 2
        )
        raw = bytes.fromhex(answer["raw"])
        return raw[0] | raw[1] << 8

    def get(self, reg: int) -> dict[str, Any]:
        return self.request(
            codec.frame_get(reg), lambda ev: ev.code == codec.GET and ev.register == reg
        )

    def set(self, reg: int, value: float) -> dict[str, Any]:
        return self.request(
            ip22.set_frame(reg, value), lambda ev: ev.code == codec.SET and ev.register == reg
        )


def open_port(url: str) -> Any:
    import serial  # pyserial: only the port commands need it

    try:
        return serial.serial_for_url(url, baudrate=BAUDRATE, timeout=0.05)
    except (serial.SerialException, ValueError) as err:
        raise CliError("cannot open %s: %s" % (url, err), EXIT_USAGE) from None


def describe(answer: dict[str, Any]) -> str:
    if answer.get("flags"):
        return "refused: " + ", ".join(answer["flag_names"])
    if "value" in answer:
        return "%s %s" % (answer["value"], answer.get("unit", ""))
    return "raw " + answer["raw"]


def cmd_ping(charger: Charger, args: argparse.Namespace, out: IO[str]) -> int:
    answer = charger.ping()
    out.write("ping reply: %s\n" % answer["raw"])
    return EXIT_OK


def cmd_get(charger: Charger, args: argparse.Namespace, out: IO[str]) -> int:
    answer = charger.get(args.register)
    name = answer.get("name", "unknown register")
    out.write("%s %s: %s\n" % (answer["register"], name, describe(answer).strip()))
    return EXIT_CHARGER if answer["flags"] else EXIT_OK


def current_range(charger: Charger) -> tuple[float, float, str]:
    """(minimum, maximum, model) from the charger's own registers, the PID table as fallback."""
    pid = charger.product_id()
    model = ip22text.model_name(pid)
    rated = ip22text.rated_current(pid, charger.get(ip22.MAX_CURRENT).get("value"))
    if rated is None:
        raise CliError(
            "%s: the charger does not report its maximum current (0xEDDF) and the PID is not "
            "in the table; refusing to guess" % model,
            EXIT_CHARGER,
        )
    reported_min = charger.get(ip22.MIN_CURRENT).get("value")
    return ip22.min_current(rated, reported_min), rated, model


def cmd_set_current(charger: Charger, args: argparse.Namespace, out: IO[str]) -> int:
    low, high, model = current_range(charger)
    if not low <= args.amps <= high:
        raise CliError(
            "%.1f A is outside the range of this charger (%s): %.1f to %.1f A"
            % (args.amps, model, low, high),
            EXIT_USAGE,
        )
    out.write(
        "note: 0xEDF0 is stored in the charger's flash; every set is a flash write, so do not "
        "call this from a control loop\n"
    )
    answer = charger.set(ip22.CHARGE_CURRENT_LIMIT, args.amps)
    if answer["flags"]:
        out.write("charger refused %.1f A: %s\n" % (args.amps, ", ".join(answer["flag_names"])))
        return EXIT_CHARGER
    confirmed = answer.get("value")
    out.write("charger confirmed %s A (%s)\n" % (confirmed, model))
    if confirmed is None or abs(confirmed - args.amps) > 0.05:
        out.write("the confirmed value differs from the %.1f A asked for\n" % args.amps)
        return EXIT_CHARGER
    return EXIT_OK


def cmd_monitor(charger: Charger, args: argparse.Namespace, out: IO[str]) -> int:
    def show(ev: Any) -> None:
        text = json.dumps(event_json(ev)) if args.json else event_line(ev)
        out.write(text + "\n")
        out.flush()

    charger.on_event = show
    try:
        for _ in charger.events(args.seconds if args.seconds else float("inf")):
            pass
    except KeyboardInterrupt:
        pass
    out.write("# %s\n" % json.dumps(charger.parser.counters()))
    return EXIT_OK


PORT_COMMANDS = {
    "monitor": cmd_monitor,
    "ping": cmd_ping,
    "get": cmd_get,
    "set-current": cmd_set_current,
}


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vedirect.py",
        description="VE.Direct tool for the Blue Smart IP22 header (19200 8N1, 3.3 V).",
        epilog="exit codes: 0 ok, 2 bad usage or input, 3 no reply or refused by the charger",
    )
    ap.add_argument(
        "--port", help="serial port, e.g. /dev/ttyUSB0, or a pyserial URL (socket://host:port)"
    )
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds to wait per try (1.0)")
    ap.add_argument("--retries", type=int, default=2, help="extra tries without an answer (2)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decode", help="decode a capture file (- for stdin) to JSON lines")
    p.add_argument("file")
    p.add_argument("--summary", action="store_true", help="end with a line of counts")

    p = sub.add_parser("frame", help="print a HEX frame to send by hand")
    what = p.add_subparsers(dest="what", required=True)
    what.add_parser("ping")
    what.add_parser("app-version")
    what.add_parser("product-id")
    g = what.add_parser("get")
    g.add_argument("register", type=parse_register)
    s = what.add_parser("set")
    s.add_argument("register", type=parse_register)
    s.add_argument("value", type=parse_amps, help="physical value, e.g. 12.5 (A) for 0xEDF0")

    p = sub.add_parser("monitor", help="live decoded view (needs --port)")
    p.add_argument("--json", action="store_true", help="JSON lines as `decode` prints them")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    sub.add_parser("ping", help="ping the charger (needs --port)")
    p = sub.add_parser("get", help="read a register (needs --port)")
    p.add_argument("register", type=parse_register)
    p = sub.add_parser("set-current", help="set the charge current limit 0xEDF0 (needs --port)")
    p.add_argument("amps", type=parse_amps)
    return ap


def main(argv: list[str] | None = None, out: IO[str] = sys.stdout) -> int:
    args = make_parser().parse_args(argv)
    try:
        if args.command == "decode":
            return cmd_decode(args, out)
        if args.command == "frame":
            return cmd_frame(args, out)
        if not args.port:
            raise CliError("%s needs --port" % args.command, EXIT_USAGE)
        port = open_port(args.port)
        try:
            charger = Charger(port, args.timeout, args.retries)
            return PORT_COMMANDS[args.command](charger, args, out)
        finally:
            port.close()
    except CliError as err:
        sys.stderr.write("vedirect.py: %s\n" % err)
        return err.code
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
