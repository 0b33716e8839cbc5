"""Entry point, on the board and on the Unix port:

    micropython firmware/main.py --config FILE --uart HOST:PORT|TTY [--http-port P]
        [--http-host H] [--state FILE] [--admin-password PW]

Kept this small on purpose: MicroPython compiles a .py on the board at every start, in heap;
the code is in start.py, which is installed compiled (.mpy).
"""

import sys

import start

start.main(sys.argv[1:] if len(sys.argv) > 1 else [])
