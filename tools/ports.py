"""Free TCP ports for the stand-ins that must come back on the same port after a fault.

A port from the kernel's ephemeral range (bind to port 0) can be handed out again as the source
port of any outgoing connection while its server is down; a client reconnecting to it can even
connect to itself there. Then the server cannot listen again. Ports below that range are only
ever taken by someone asking for them.

Under pytest-xdist each worker (and what it starts: the variables are inherited) asks in its own
slice of that range, so one worker never hands out a port that another has just been given and
not yet bound, or that a server of another worker left free while it is down. A process also
never hands out the same port twice.
"""

from __future__ import annotations

import os
import random
import re
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


_given: set[int] = set()


def port_range() -> tuple[int, int]:
    """(lowest, highest) port to hand out: below the ephemeral range, this xdist worker's
    slice of it (PYTEST_XDIST_WORKER "gw3" of PYTEST_XDIST_WORKER_COUNT)."""
    low, top = LOWEST, ephemeral_low() - 1
    worker = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if worker and count > 1 and int(worker.group(1)) < count:
        size = (top - low + 1) // count
        low += int(worker.group(1)) * size
        top = low + size - 1
    return low, top


def free_port(host: str = "127.0.0.1") -> int:
    low, top = port_range()
    for _ in range(TRIES):
        port = random.randint(low, top)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _given.add(port)
            return port
    raise RuntimeError("no free port in %d..%d on %s" % (low, top, host))
