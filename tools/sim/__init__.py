"""A simulated installation: a virtual IP22 on a socket or pty, a virtual Venus OS GX (Modbus
TCP), and the household with PV around them. `python -m tools.sim --help`."""

import sys
from pathlib import Path

FIRMWARE = str(Path(__file__).resolve().parent.parent.parent / "firmware")
if FIRMWARE not in sys.path:
    sys.path.insert(0, FIRMWARE)

import ip22  # noqa: E402  (the protocol lives once, in firmware/)
import ip22text  # noqa: E402
import vedirect as v  # noqa: E402

__all__ = ["ip22", "ip22text", "v"]
