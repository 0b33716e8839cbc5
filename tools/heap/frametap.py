"""The charger's frames counted where they leave the simulator, so that a frame the firmware
never counted shows as the difference to its own count."""

from __future__ import annotations

import time

from tools.sim import v  # firmware/vedirect.py on CPython
from tools.sim.serve import Background


class FrameTap:
    """Parses (with firmware/vedirect.py on CPython) exactly the bytes the simulator hands to
    the firmware's socket; at the end the line is silenced and the two counts compared."""

    def __init__(self, sim: Background) -> None:
        self.sim = sim
        self.parser = v.Parser()
        self.bytes = 0

        def install() -> None:
            inst = sim.installation
            assert inst is not None
            original = inst._to_host

            def to_host(data: bytes) -> None:
                if inst._writers:  # a firmware is connected: these bytes reach it
                    self.bytes += len(data)
                    for _ in self.parser.feed(data, int(time.monotonic() * 1000)):
                        pass
                original(data)

            inst._to_host = to_host  # type: ignore[method-assign]

        sim.call(install)

    def counts(self) -> dict[str, int]:
        return self.sim.call(lambda: dict(self.parser.counters(), bytes=self.bytes))

    def silence(self) -> None:
        def mute() -> None:
            self.sim.world.charger.faults.silent_until = self.sim.now() + 1e9

        self.sim.call(mute)
