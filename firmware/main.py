"""Entry point, on the board and on the Unix port:

    micropython firmware/main.py --config FILE --uart HOST:PORT|TTY [--http-port P]
        [--http-host H] [--state FILE] [--admin-password PW]

Kept this small on purpose: MicroPython compiles a .py on the board at every start, in heap.
start.py (installed compiled) builds the app and is let go before the app runs.
"""

import asyncio
import sys

import cold

adapter = cold.load("start").make_app(sys.argv[1:] if len(sys.argv) > 1 else [])
try:
    if adapter is not None:  # None: too little heap even for the core, and said so
        asyncio.run(adapter.run())
except KeyboardInterrupt:  # Ctrl-C on the Unix port (or the REPL): keep the counters
    try:
        adapter.shutdown()
    except KeyboardInterrupt:  # a second Ctrl-C in the middle of it: once more, whole
        adapter.shutdown()
    print("stopped: counters saved")
