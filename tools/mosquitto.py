"""A real mosquitto broker on a free port of 127.0.0.1, with the faults (freeze, kill, restart
on the same port) that a mock broker cannot give. For the tests (host_tests/broker.py) and the
MQTT benchmark."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tools.ports import free_port

START_TIMEOUT_S = 10.0


def _sbin_tool(name: str) -> str | None:
    """Debian puts mosquitto in /usr/sbin, which is often not on a normal user's PATH."""
    for path in (shutil.which(name), "/usr/sbin/" + name, "/usr/bin/" + name):
        if path and os.access(path, os.X_OK):
            return path
    return None


class MosquittoMissing(RuntimeError):
    pass


def mosquitto_path() -> str:
    path = _sbin_tool("mosquitto")
    if path is None:
        raise MosquittoMissing("mosquitto is not installed (./dev test installs it)")
    return path


class Mosquitto:
    """One broker process. The port is chosen once, so `restart()` comes back where clients
    expect it, as a rebooted GX would."""

    def __init__(
        self,
        tmp_dir: str | Path,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """`tls`: (CA, certificate, key) files: the listener speaks TLS only."""
        self.binary = mosquitto_path()
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._host = "127.0.0.1"
        self._port = free_port(self._host)
        self.log_path = self.dir / "mosquitto.log"
        self.out_path = self.dir / "mosquitto.out"  # stderr: errors before the log file opens
        self.conf_path = self.dir / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            "listener %d %s" % (self._port, self._host),
            "persistence false",
            "log_dest file %s" % self.log_path,
            "log_type all",
            # as root, mosquitto 2 drops to user "mosquitto", which cannot write our tmp_dir
            "user %s" % pwd.getpwuid(os.geteuid()).pw_name,
        ]
        if tls is not None:
            lines += ["cafile %s" % tls[0], "certfile %s" % tls[1], "keyfile %s" % tls[2]]
        if users is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", "password_file %s" % self._password_file(users)]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _password_file(self, users: dict[str, str]) -> Path:
        tool = _sbin_tool("mosquitto_passwd")
        if tool is None:
            raise MosquittoMissing("mosquitto_passwd is missing (Debian package mosquitto)")
        path = self.dir / "passwd"
        for n, (user, password) in enumerate(users.items()):
            create = ["-c"] if n == 0 else []
            subprocess.run([tool, *create, "-b", str(path), user, password], check=True)
        return path

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.out_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        if self.running:
            return
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)], stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "mosquitto exited with %s:\n%s" % (self.proc.returncode, self.log_tail())
                )
            try:  # a TCP connect is enough to know it listens, TLS or not
                socket.create_connection((self._host, self._port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            "mosquitto did not listen on %d within %.0f s:\n%s"
            % (self._port, START_TIMEOUT_S, self.log_tail())
        )

    def stop(self) -> None:
        """SIGTERM, also for a frozen broker, which must be woken to act on it."""
        if not self.running:
            return
        assert self.proc
        self.proc.terminate()
        self.proc.send_signal(signal.SIGCONT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a power cut; clients see no DISCONNECT, only a dead socket."""
        if self.running:
            assert self.proc
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the TCP connections stay open but nothing is answered, like a hung GX."""
        if self.running:
            assert self.proc
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running:
            assert self.proc
            self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
