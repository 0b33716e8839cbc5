"""The hardware edge: the board the firmware runs on, and the only layer that touches it.

board_esp32.py is the adapter (machine.UART to the charger header, network.WLAN, machine.WDT);
board_host.py is the MicroPython Unix port and CPython (the charger as a stream to the
simulator, a TCP "host:port" or a pty/tty path, no WiFi). Only the one in use is loaded.
"""

import gc
import sys

try:
    import machine

    ESP32 = hasattr(machine, "UART")
except ImportError:  # CPython; the Unix port has a `machine` without UART
    ESP32 = False


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


def heap_total():
    """The GC heap's size (None where the port cannot say: CPython)."""
    if not hasattr(gc, "mem_free"):
        return None
    gc.collect()
    return gc.mem_free() + gc.mem_alloc()


def heap_can_have():
    """The heap this board can give the firmware: the ESP32's heap grows into the ESP-IDF's."""
    if ESP32:
        import board_esp32

        return board_esp32.heap_total()
    return heap_total()


def short_of(total, need_64, need_32):
    """(total, need) in kB where the heap a board can give (`total` bytes; None: not known) is
    below what a part needs on this word size (bytes, measured on 64 bits, estimated on 32);
    None where it is not."""
    need = need_64 if sys.maxsize > 0x7FFFFFFF else need_32
    if total is None or total >= need:
        return None
    return total // 1024, need // 1024


def free_heap():
    return gc.mem_free() if hasattr(gc, "mem_free") else None


def heap_used():
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None


def make(config, uart=None):
    if ESP32:
        import board_esp32

        return board_esp32.Esp32Board(config)
    import board_host

    return board_host.HostBoard(uart)
