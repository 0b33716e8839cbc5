"""A minimal IP22 on a pty for the CLI tests: answers ping, product id, get and set with the
real byte protocol, and streams async frames and text blocks in between, as the charger does.
(The full simulator with charging physics lives in tools/sim/.)"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

import ip22
import vedirect as v

BLOCK_FIELDS = [
    (b"PID", b"0xA334"),
    (b"FWE", b"0342FF"),
    (b"SER#", b"HQ2230XY6XR"),
    (b"V", b"28680"),
    (b"I", b"9000"),
    (b"T", b"---"),
    (b"ERR", b"0"),
    (b"CS", b"3"),
    (b"HC#", b"1105659"),
]


def text_block() -> bytes:
    body = b"".join(b"\r\n" + k + b"\t" + val for k, val in BLOCK_FIELDS) + b"\r\nChecksum\t"
    return body + bytes([(-sum(body)) & 0xFF])


class FakeCharger:
    """`on_set` decides the answer to a set: "accept", "clamp" (flags 4 + nearest valid value,
    as the BMV does), "ignore" (no answer). Registers hold raw little-endian bytes."""

    def __init__(self, pid: int = 0xA334, on_set: str = "accept", silent: bool = False):
        self.pid = pid
        self.on_set = on_set
        self.silent = silent
        self.registers: dict[int, bytes] = {
            ip22.MAX_CURRENT: v.pack("un16", 120),
            ip22.CHARGE_CURRENT_LIMIT: v.pack("un16", 120),
        }
        self.received: list[str] = []
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "FakeCharger":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self._slave)

    def _send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _answer(self, ev: v.HexFrame) -> bytes | None:
        if ev.code == v.PING:
            return v.frame(v.PING_REPLY, b"\x42\x43")
        if ev.code == v.PRODUCT_ID:
            return v.frame(v.DONE, v.pack("un16", self.pid))
        reg = ev.register
        head = v.pack("un16", reg)
        if ev.code == v.GET:
            if reg not in self.registers:
                return v.frame(v.GET, head + b"\x01")
            return v.frame(v.GET, head + b"\x00" + self.registers[reg])
        if ev.code == v.SET:
            if self.on_set == "ignore":
                return None
            if reg not in self.registers:
                return v.frame(v.SET, head + b"\x01")
            value = ev.raw
            if self.on_set == "clamp" and reg == ip22.CHARGE_CURRENT_LIMIT:
                asked = v.unpack("un16", value)
                if asked < 30:  # 3.0 A, a quarter of the 12 A rating
                    self.registers[reg] = v.pack("un16", 30)
                    return v.frame(v.SET, head + b"\x04" + self.registers[reg])
            self.registers[reg] = bytes(value)
            return v.frame(v.SET, head + b"\x00" + self.registers[reg])
        return v.frame(v.UNKNOWN, bytes([ev.code]))

    def _run(self) -> None:
        parser = v.Parser()
        next_block = next_async = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if not self.silent and now >= next_async:
                self._send(b":A0920000022\n")
                next_async = now + 0.1
            if not self.silent and now >= next_block:
                self._send(text_block())
                next_block = now + 1.0
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            for ev in parser.feed(data, int(now * 1000)):
                if ev.kind != "hex" or not ev.ok:
                    continue
                self.received.append(ev.text())
                answer = None if self.silent else self._answer(ev)
                if answer:
                    self._send(answer)
