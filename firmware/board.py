"""The hardware edge, and the only module that touches it.

On an ESP32: machine.UART to the charger header, network.WLAN as a station with reconnect and
back-off, machine.WDT, reset. On the MicroPython Unix port (and CPython): the charger is a
stream to the simulator, a TCP "host:port" or a pty/tty path, and there is no WiFi.
"""

import asyncio
import gc


try:
    import machine
    import network

    ESP32 = hasattr(machine, "UART")
except ImportError:  # the Unix port has a `machine` without UART, and no `network`
    ESP32 = False

BAUDRATE = 19200
# Linux termios values the MicroPython termios module does not name
B19200 = 14
VTIME = 5
VMIN = 6
WIFI_RETRY_S = 5
WIFI_RETRY_MAX_S = 300


class StreamPort:
    """A charger port over asyncio streams: readinto(buf), write(data), drain(), close()."""

    def __init__(self, reader, writer, closer=None):
        self.reader = reader
        self.writer = writer
        self._closer = closer
        if not hasattr(reader, "readinto"):  # CPython's StreamReader
            self.readinto = self._read_copy

    async def readinto(self, buf):
        return await self.reader.readinto(buf)

    async def _read_copy(self, buf):
        data = await self.reader.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def write(self, data):
        self.writer.write(data)

    async def drain(self):
        await self.writer.drain()

    def close(self):
        try:
            if self._closer:
                self._closer()
            else:
                self.writer.close()
        except OSError:
            pass


def free_heap():
    return gc.mem_free() if hasattr(gc, "mem_free") else None


def heap_used():
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None


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
        import wifi

        self.radio = wifi.HostRadio()
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


class Esp32Board:
    """The adapter board: ESP32-C3, UART1 on the header through the isolator."""

    name = "esp32"

    def __init__(self, config):
        self.uart_config = config["uart"]
        self._port = None
        self.radio = Esp32Radio(config["hostname"])
        self.dns_port = 53  # the captive portal's DNS while the access point is open

    async def open_uart(self):
        if self._port is None:  # one UART for the life of the board
            u = self.uart_config
            uart = machine.UART(
                u["id"], baudrate=BAUDRATE, tx=u["tx"], rx=u["rx"], rxbuf=u["rxbuf"], timeout=0
            )
            self._port = StreamPort(asyncio.StreamReader(uart), asyncio.StreamWriter(uart, {}))
            self._port.close = lambda: None
        return self._port

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def unique_id(self):
        return "".join("%02x" % b for b in machine.unique_id())

    def reset(self):
        machine.reset()


class Esp32Radio:
    """network.WLAN, station and access point, for wifi.Supervisor."""

    def __init__(self, hostname):
        self.hostname = hostname
        self.sta = None
        self.ap = None

    def _station(self):
        if self.sta is None:
            try:
                network.hostname(self.hostname)  # before connect(): it is sent then
            except (AttributeError, ValueError, OSError):
                pass
            self.sta = network.WLAN(network.STA_IF)
            self.sta.active(True)
            try:
                self.sta.config(pm=0)  # mains powered: no power save (answers late by seconds)
            except (ValueError, OSError):
                pass
        return self.sta

    def connect(self, ssid, key):
        self._station().connect(ssid, key)

    def disconnect(self):
        if self.sta is not None:
            try:
                self.sta.disconnect()
            except OSError:
                pass

    def isconnected(self):
        return self.sta is not None and self.sta.isconnected()

    def ip(self):
        return self.sta.ifconfig()[0] if self.sta is not None else None

    def rssi(self):
        try:
            return self.sta.status("rssi")
        except (AttributeError, ValueError, OSError):
            return None

    def status(self):
        return "status %s" % (self.sta.status() if self.sta is not None else "off")

    def access_point(self, on, ssid, key):
        if self.ap is None:
            self.ap = network.WLAN(network.AP_IF)
        if on:
            try:
                self.ap.config(essid=ssid, key=key, security=3)  # WPA2-PSK
            except (TypeError, ValueError):  # before 1.23 the name was authmode
                self.ap.config(essid=ssid, key=key, authmode=3)
        self.ap.active(on)

    def mac(self):
        return self._station().config("mac")


def make(config, uart=None):
    return Esp32Board(config) if ESP32 else HostBoard(uart)
