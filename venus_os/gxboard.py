"""The GX as the firmware's board: the charger on a serial port that pyserial opens from a URL
(a USB-TTL cable, or a serial server), the GX's own network, a watchdog that lets daemontools
restart a hung service, and the GX's D-Bus for grid power.

The firmware's modules run unchanged on top of this; this file is the only GX-specific layer
between them and the machine (as board_esp32.py is on the adapter)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from typing import Any, Callable

BAUD = 19200
READ_TIMEOUT_S = 0.05  # the reader thread's poll: a text block's bytes arrive within ms anyway


def port_name(port: str) -> str:
    """A short name for a port: ttyUSB0, 127.0.0.1_4000 (for ids and the D-Bus name)."""
    real = os.path.realpath(port) if port.startswith("/dev/") else port
    parts = re.sub(r"^[a-z0-9+]+://", "", real).rstrip("/").rsplit("/", 2)
    tail = "_".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]
    return re.sub(r"[^A-Za-z0-9_-]", "_", tail) or "serial"  # /dev/pts/3: pts_3


class SerialPump:
    """A pyserial port as asyncio streams for the firmware's board.StreamPort.

    pyserial blocks; a reader thread hands what it reads to an asyncio.StreamReader in the
    loop's thread (call_soon_threadsafe is the only thing it touches there). Writes are a few
    dozen bytes of HEX and go straight to the port's OS buffer."""

    def __init__(self, ser: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.ser = ser
        self.loop = loop
        self.reader = asyncio.StreamReader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="serial-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.ser.read(max(1, self.ser.in_waiting or 0))
            except Exception as err:  # unplugged, or the serial server went away
                if not self._stop.is_set():
                    self.loop.call_soon_threadsafe(self._failed, err)
                return
            if data:
                self.loop.call_soon_threadsafe(self.reader.feed_data, data)

    def _failed(self, err: Exception) -> None:
        self.reader.set_exception(OSError("serial port: %s" % err))

    def write(self, data: bytes) -> None:
        self.ser.write(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self._stop.set()
        # rfc2217's close sleeps and joins its own thread (seconds): never in the loop
        threading.Thread(target=_close_quietly, args=(self.ser,), daemon=True).start()


def _close_quietly(ser: Any) -> None:
    try:
        ser.close()
    except Exception:
        pass


def open_serial(port: str) -> Any:
    import serial  # pyserial: Venus ships it (python3-pyserial), the package carries a copy

    ser = serial.serial_for_url(
        port, baudrate=BAUD, bytesize=8, parity="N", stopbits=1,
        timeout=READ_TIMEOUT_S, write_timeout=1.0,
        exclusive=True,  # a tty someone else holds (Venus's own driver) is refused, not shared
    )  # fmt: skip
    keep_alive(getattr(ser, "_socket", None))
    return ser


def keep_alive(sock: Any) -> None:
    """A serial server that loses power leaves a half-open TCP connection that reads nothing
    and never fails: keepalive probes turn it into an error within ~25 s, and the link opens
    the port again."""
    if sock is None:
        return
    import socket

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class ThreadWatchdog:
    """Exits the process when not fed in time: daemontools starts it again (the service's
    equivalent of the ESP32's hardware watchdog; a hung loop cannot exit by itself)."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_s = timeout_ms / 1000
        self.fed = time.monotonic()
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def feed(self) -> None:
        self.fed = time.monotonic()

    def _watch(self) -> None:
        while True:
            time.sleep(1)
            if time.monotonic() - self.fed > self.timeout_s:
                # printed, not the app's log: that lives in the loop this thread watches
                print("watchdog: not fed for %.0f s, exiting for a restart" % self.timeout_s,
                      flush=True)
                os._exit(3)


class WiredRadio:
    """The GX's own network: no WiFi to manage, no access point (wifi.py asks `wired`)."""

    stand_in = False
    wired = True

    def ip(self) -> str | None:
        """The address other machines reach the GX on (a UDP socket's source; nothing is
        sent)."""
        import socket

        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("192.0.2.1", 9))
                return s.getsockname()[0]
        except OSError:
            return None

    def rssi(self) -> None:
        return None

    def status(self) -> str:
        return "the GX's network"

    def mac(self) -> bytes:
        return b"\x02\x00\x00\x00\x00\x01"


class GxBoard:
    name = "gx"
    can_update = False  # updates come as a new package (docs/venus-os.md), not over the web

    def __init__(self, port: str, dbus_grid: Callable[..., Any] | None = None) -> None:
        if not port:
            raise ValueError(
                "say where the charger is: uart.port in the config (e.g. /dev/ttyUSB0,"
                " socket://host:port, rfc2217://host:port) or --uart"
            )
        self.uart = port
        self.radio = WiredRadio()
        self.dns_port = None
        self._dbus_grid = dbus_grid

    async def open_uart(self) -> Any:
        from board import StreamPort  # the firmware's port over asyncio streams

        loop = asyncio.get_event_loop()
        ser = await loop.run_in_executor(None, open_serial, self.uart)  # rfc2217 negotiates
        pump = SerialPump(ser, loop)
        return StreamPort(pump.reader, pump, pump.close)

    def unique_id(self) -> str:
        return "gx-" + port_name(self.uart)

    def watchdog(self, timeout_ms: int) -> ThreadWatchdog:
        return ThreadWatchdog(timeout_ms)

    def heap_total(self) -> None:
        return None  # not a fixed heap: the full set always runs

    def memory(self) -> str:
        return "Python %d.%d, %s" % (sys.version_info[0], sys.version_info[1], rss())

    def dbus_grid(self, settings: dict, log: Callable[[str], None]) -> Any:
        if self._dbus_grid is None:
            log("venus.protocol dbus: no D-Bus here (gx.dbus off?): no grid data")
            return None
        return self._dbus_grid(settings, log)

    def reset(self) -> None:
        raise SystemExit(0)  # daemontools starts the service again


def rss() -> str:
    """The process's resident memory, from /proc (Linux, as Venus is)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return "RSS %d MB" % (int(line.split()[1]) // 1024)
    except OSError:
        pass
    return "RSS not known"
