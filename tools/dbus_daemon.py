"""A private D-Bus for the Venus OS service's tests and benches: a real dbus-daemon on a unix
socket in a folder of ours, with a permissive policy (anyone may own any name and send anything,
as on a session bus). Point DBUS_SYSTEM_BUS_ADDRESS at `address` and the service, dbus-next and
`dbus-send --system` find it the way they find a GX's system bus."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


class DbusMissing(RuntimeError):
    pass


class DbusDaemon:
    """dbus-daemon with a permissive config, listening in `where`; stop() kills it."""

    def __init__(self, where: Path) -> None:
        exe = shutil.which("dbus-daemon")
        if exe is None:
            raise DbusMissing("dbus-daemon is not installed (./dev test installs it)")
        where.mkdir(parents=True, exist_ok=True)
        conf = where / "bus.conf"
        # a unix socket path has ~107 bytes at most: a deep tmp_path would not fit
        self.socket = where / "bus"
        if len(str(self.socket)) > 100:
            self.socket = Path(tempfile.mkdtemp(prefix="dbus-")) / "bus"
        conf.write_text(CONFIG.format(socket=self.socket))
        self.log = where / "dbus-daemon.log"  # a file: a pipe nobody reads would stall it
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [exe, "--config-file=%s" % conf, "--nofork", "--nopidfile", "--print-address"],
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # printed once it listens
        if not line:
            self.stop()
            raise RuntimeError("dbus-daemon did not start: %s" % self.log.read_text())
        self.address = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> DbusDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
