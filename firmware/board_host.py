"""The MicroPython Unix port (and CPython) as the board: the charger over TCP or a tty, the
host's network, no watchdog."""

import asyncio

import board
from board import StreamPort

# Linux termios values the MicroPython termios module does not name
B19200 = 14
VTIME = 5
VMIN = 6


class NoWatchdog:
    def feed(self):
        pass


class HostBoard:
    """The Unix port (or CPython): the charger over TCP or a tty, no WiFi, no watchdog."""

    name = "host"

    def __init__(self, uart):
        if not uart:
            raise ValueError(
                "on the host, say where the charger is: --uart HOST:PORT or a tty path"
            )
        self.uart = uart
        self.radio = HostRadio()
        self.dns_port = None  # no access point here; tests set one (IP22_DNS_PORT)
        try:
            from os import getenv

            self.dns_port = int(getenv("IP22_DNS_PORT") or 0) or None
        except (ImportError, ValueError):
            pass

    async def open_uart(self):
        spec = self.uart
        if spec.startswith("socket://"):
            spec = spec[len("socket://") :]
        if not spec.startswith("/"):
            host, _, port = spec.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            return StreamPort(reader, writer)
        return _open_tty(spec)

    def unique_id(self):
        return "host"

    def watchdog(self, timeout_ms):
        return NoWatchdog()

    def heap_total(self):
        return board.heap_total()  # -X heapsize on the Unix port

    def memory(self):
        total = self.heap_total()
        return "heap %d kB" % (total // 1024) if total else "heap not measured"

    def reset(self):
        raise SystemExit(0)


def _open_tty(path):
    """A pty or serial device in raw mode, 19200 baud, reads that never block (VMIN=0)."""
    import termios

    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = B19200
    attrs[6][VMIN] = 0  # without this a read blocks the whole event loop until n bytes came
    attrs[6][VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return StreamPort(asyncio.StreamReader(f), asyncio.StreamWriter(f, {}), f.close)


class HostRadio:
    """The Unix port's stand-in: the host's network is always there; the access point is only
    recorded (the status says which mode was asked for)."""

    stand_in = True

    def __init__(self):
        self.joined = None
        self.ap = None

    def connect(self, ssid, key):
        self.joined = ssid

    def disconnect(self):
        self.joined = None

    def isconnected(self):
        return self.joined is not None

    def ip(self):
        return "127.0.0.1"

    def rssi(self):
        return None

    def status(self):
        return "host network (stand-in)"

    def access_point(self, on, ssid, key):
        self.ap = (ssid, len(key)) if on else None

    def mac(self):
        return b"\x02\x00\x00\x00\x1a\x2b"
