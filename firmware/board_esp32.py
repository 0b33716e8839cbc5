"""The adapter board: an ESP32-S3 (with PSRAM) with UART1 on the charger's header, WiFi, a
watchdog."""

import asyncio

import machine
import network

import board
from board import StreamPort

BAUDRATE = 19200
IDF_KEEP = 64 * 1024  # of the IDF's free heap: WiFi, lwIP's sockets and TLS need it
PSRAM_REGION = 512 * 1024  # a data region this big is PSRAM (internal RAM is 512 kB in all)


def heap_total():
    """What the GC heap can have: its size now plus what the IDF heap can still give it
    (MicroPython 1.21+ starts the heap small and grows it), less what WiFi and sockets keep.
    With PSRAM that is megabytes; a C3 or an S3 without PSRAM has ~150 kB. None where the IDF
    heap cannot be read: the heap now would say far too little, so nothing is left out."""
    try:
        import esp32

        regions = esp32.idf_heap_info(esp32.HEAP_DATA)
    except (ImportError, AttributeError):
        return None
    spare = sum(r[2] for r in regions) - IDF_KEEP
    return (board.heap_total() or 0) + max(0, spare)


class Esp32Board:
    """The adapter board: ESP32-S3-MINI-1-N4R2, UART1 on the header through the isolator."""

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

    def heap_total(self):
        return heap_total()

    def memory(self):
        """For the start line: PSRAM (if any) and the heap."""
        psram = 0
        try:
            import esp32

            psram = sum(r[0] for r in esp32.idf_heap_info(esp32.HEAP_DATA) if r[0] > PSRAM_REGION)
        except (ImportError, AttributeError):
            pass
        total = self.heap_total()
        heap = "heap %d kB" % (total // 1024) if total else "heap not known"
        if psram:
            return "PSRAM %d kB, %s" % (psram // 1024, heap)
        return "no PSRAM, " + heap


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
