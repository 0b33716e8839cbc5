"""Free TCP ports for the stand-ins that must come back on the same port after a fault.

A port from the kernel's ephemeral range (bind to port 0) can be handed out again as the source
port of any outgoing connection while its server is down; a client reconnecting to it can even
connect to itself there. Then the server cannot listen again. Ports below that range are only
ever taken by someone asking for them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000
TRIES = 200


def ephemeral_low() -> int:
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    top = ephemeral_low() - 1
    for _ in range(TRIES):
        port = random.randint(LOWEST, top)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d..%d on %s" % (LOWEST, top, host))
