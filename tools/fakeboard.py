"""A fake MicroPython board for mpremote: the Unix port on a raw pty, bridged to a TCP port.

    with FakeBoard(root, run_main=True) as board:
        subprocess.run([sys.executable, "-m", "mpremote", "connect", board.url, "eval", "1+2"])
        board.hard_reset()
        board.wait_output("started")

    python -m tools.fakeboard ROOT [--run-main] [--echo]   # prints socket://127.0.0.1:PORT

`board.url` is "socket://127.0.0.1:PORT" (pyserial's serial_for_url, so mpremote takes it as a
device). The board's filesystem is the directory ROOT: inside the interpreter ROOT is mounted at
"/" (a VfsPosix), the cwd is "/" and sys.path is ['', '.frozen', '/lib'] as on an ESP32, so
`mpremote fs cp x.py :/x.py` writes ROOT/x.py and never the host's /.

Emulated (what mpremote and a flasher see on the serial line):
* Soft reset. Ctrl-D on an empty raw-REPL line, Ctrl-D at the friendly prompt,
  machine.soft_reset(), or the process exiting for any other reason: the Unix port exits, so a
  new process is started in the same ROOT, "MPY: soft reboot\\r\\n" is printed, and the board
  comes back in the REPL mode it was in. In raw mode the client sees exactly
  "OK\\r\\nMPY: soft reboot\\r\\nraw REPL; CTRL-B to exit\\r\\n>" (the Unix port's own banner is
  swallowed), which is what mpremote's enter_raw_repl(soft_reset=True) waits for.
* Hard reset: machine.reset() (a shim `machine` module: the Unix port's plus reset() and
  soft_reset()), `mpremote reset`, or board.hard_reset(). The process is killed and restarted
  in friendly-REPL mode; nothing is printed for the reset itself (no ROM boot log); input the
  client sent during the reset is dropped. The TCP connection stays up (a C3 on its native
  USB would drop off the bus).
* With run_main=True: boot.py then main.py run after power-on and hard resets, and after a
  soft reset only in friendly-REPL mode (raw mode: boot.py only), as on an ESP32. Their output
  goes to the console, then the REPL banner. An exception prints a traceback and the REPL
  follows; sys.exit() in main.py drops to the REPL.
* Ctrl-C (0x03) from the client interrupts running code (SIGINT, i.e. KeyboardInterrupt) when
  the interpreter is executing with its interrupt character armed (read from /proc: Linux only);
  at a prompt, or while code disabled it with micropython.kbd_intr(-1), it is passed through
  as a byte.

Not emulated: the ESP32 ROM boot messages, os.uname() (it says Linux), print() line endings
(the Unix port prints "\\n" where a board prints "\\r\\n"), sys.exit() at the REPL (it resets
this board; a real one ignores it), baud rates and DTR/RTS, any hardware module.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Callable

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_MARK = b'Type "help()" for more information.\r\n'
SOFT_REBOOT = b"MPY: soft reboot\r\n"
CTRL_C = b"\x03"
GATE_S = 1.0  # a fresh process takes client input at its first output or after this long
POLL_S = 0.05
PTY_BACKLOG = 65536  # bytes from the client queued for the pty before the client is throttled

# phases of the current process
_BOOT_RAW = "boot-raw"  # soft reboot into raw mode: waiting for the Unix port's friendly banner
_BOOT_RAW2 = "boot-raw2"  # sent Ctrl-A, waiting for "raw REPL; CTRL-B to exit\r\n>"
_GATE = "gate"  # friendly boot: running, but client input is held until the first output
_RUNNING = "running"

_SHIM = '''\
# The fake board's machine: the Unix port's module plus reset() and soft_reset(), which ask
# tools/fakeboard.py to restart this interpreter as a board would restart.
from umachine import *
import umachine as _m

_soft = False


def _ask(what):
    import socket, time
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", {port})[0][-1])
    s.send(what)
    s.close()
    while True:
        time.sleep_ms(100)


def reset():
    _ask(b"hard")


def soft_reset():
    global _soft
    _soft = True
    _m.soft_reset()
'''

# Run with -i -c: mount ROOT at "/", then boot.py / main.py in __main__'s globals, then the
# Unix port's REPL. A SystemExit in -c code would not end the process under -i, so
# machine.soft_reset() there asks the bridge instead.
_BOOTSTRAP = """\
def _fakeboard(shim, root, frozen, files):
    import sys, os, vfs
    sys.path.insert(0, shim)
    import machine
    sys.path.pop(0)
    vfs.umount('/')
    vfs.mount(vfs.VfsPosix(root), '/')
    for i, d in enumerate(frozen):
        vfs.mount(vfs.VfsPosix(d), '/.fakeboard-frozen%%d' %% i)
    os.chdir('/')
    sys.argv.clear()
    g = globals()
    for f in files:
        try:
            os.stat(f)
        except OSError:
            continue
        try:
            exec(compile(open(f).read(), f, 'exec'), g)
        except SystemExit:
            if machine._soft:
                machine._ask(b'soft')
        except BaseException as e:
            sys.print_exception(e)
_fakeboard(%r, %r, %r, %r)
del _fakeboard
"""


def find_micropython() -> str:
    """The Unix port: beside this interpreter (the .venv's console script), else on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise FileNotFoundError("micropython (the Unix port) is not installed")
    return found


def _sigint_armed(pid: int) -> bool:
    """True when the process catches SIGINT: the Unix port arms it only while executing code."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False


class FakeBoard:
    """The Unix port as a board on socket://127.0.0.1:PORT. See the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        port: int = 0,
        run_main: bool = False,
        micropython: str | None = None,
        heapsize: str | None = None,
        frozen_dirs: tuple[str | os.PathLike[str], ...] = (),
        echo: Callable[[bytes], None] | None = None,
    ) -> None:
        """root: the board's filesystem (must exist). run_main: run boot.py/main.py on resets.
        heapsize: e.g. "192K" (-X heapsize). frozen_dirs: directories importable like the
        ESP32 image's frozen modules (e.g. one with umqtt/), searched after '.frozen' and
        before /lib; each is mounted at /.fakeboard-frozenN, which os.listdir('/') shows.
        echo: called with every chunk the console prints."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(str(self.root))
        self.run_main = run_main
        self._micropython = micropython or find_micropython()
        self._heapsize = heapsize
        self._frozen = [str(Path(d).resolve()) for d in frozen_dirs]
        self._echo = echo
        self._want_port = port
        self._lock = threading.Condition()
        self._log = bytearray()
        self._resets: list[str] = []
        self._request: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._client: socket.socket | None = None
        self._inbox = bytearray()  # from the client, not yet given to the interpreter
        self._to_pty = bytearray()
        self._to_client = bytearray()
        self._phase = _RUNNING
        self._mode = "friendly"
        self._tail = b""
        self._bootbuf = bytearray()
        self._spawned_at = 0.0
        self._shim_dir: str | None = None
        self._listener: socket.socket | None = None
        self._ctl: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self.port = 0

    # ---- public API

    @property
    def url(self) -> str:
        return "socket://127.0.0.1:%d" % self.port

    def start(self) -> FakeBoard:
        self._listener = socket.socket()
        self._ctl = socket.socket()
        self._wake_r, self._wake_w = os.pipe()
        self._shim_dir = tempfile.mkdtemp(prefix="fakeboard-")
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", self._want_port))
            self._listener.listen(4)
            self.port = self._listener.getsockname()[1]
            self._ctl.bind(("127.0.0.1", 0))  # where the shim's machine.reset() calls
            self._ctl.listen(4)
            shim = _SHIM.replace("{port}", str(self._ctl.getsockname()[1]))
            Path(self._shim_dir, "machine.py").write_text(shim)
            self._spawn()
        except BaseException:
            self._cleanup()
            raise
        self._resets.append("power-on")
        self._thread = threading.Thread(target=self._loop, name="fakeboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(10)
        self._thread = None
        if self._error is not None:
            raise RuntimeError("the fake board's bridge failed") from self._error

    def __enter__(self) -> FakeBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        """Everything the console printed since start (also with no client connected)."""
        with self._lock:
            return self._log.decode("utf-8", "replace")

    def wait_output(self, text: str, timeout: float = 10.0, start: int = 0) -> int:
        """Wait until output() contains text at or after index start; the index after it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                out = self._log.decode("utf-8", "replace")
                i = out.find(text, start)
                if i >= 0:
                    return i + len(text)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%r not printed; console: %r" % (text, out[-2000:]))
                self._lock.wait(left)

    @property
    def resets(self) -> list[str]:
        """The boots so far: "power-on", then "soft" / "hard" for each reset."""
        with self._lock:
            return list(self._resets)

    def hard_reset(self, timeout: float = 10.0) -> None:
        """Reset as the reset button would (returns once the new interpreter is started)."""
        self._reset("hard", timeout)

    def soft_reset(self, timeout: float = 10.0) -> None:
        """Soft reset as machine.soft_reset() would (back into the current REPL mode)."""
        self._reset("soft", timeout)

    # ---- the bridge

    def _reset(self, kind: str, timeout: float) -> None:
        with self._lock:
            n = len(self._resets)
            self._request = kind
        self._wake()
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._resets) <= n:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    raise TimeoutError("the fake board did not reset")
                self._lock.wait(left)

    def _wake(self) -> None:
        if self._thread is None:
            return
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass

    def _spawn(self) -> None:
        files: list[str] = []
        if self.run_main:
            files = ["boot.py", "main.py"] if self._mode == "friendly" else ["boot.py"]
        code = _BOOTSTRAP % (self._shim_dir, str(self.root), self._frozen, files)
        args = [self._micropython, "-i"]
        if self._heapsize:
            args += ["-X", "heapsize=" + self._heapsize]
        args += ["-c", code]
        frozen = ["/.fakeboard-frozen%d" % i for i in range(len(self._frozen))]
        env = dict(os.environ, MICROPYPATH=":".join([".frozen", *frozen, "/lib"]))
        master, slave = os.openpty()
        tty.setraw(slave)  # else the line discipline turns "\r\n" into "\r\r\n"
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=str(self.root),
                env=env,
                start_new_session=True,  # no SIGINT from the terminal running the tests
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._phase = _GATE if self._mode == "friendly" else _BOOT_RAW
        self._bootbuf = bytearray()
        self._spawned_at = time.monotonic()

    def _loop(self) -> None:
        try:
            while not self._stopping:
                self._step()
        except BaseException as err:  # a bug in the bridge: stop() re-raises it
            self._error = err
        finally:
            self._cleanup()
            with self._lock:
                self._lock.notify_all()

    def _cleanup(self) -> None:
        self._kill(drain=False)
        for s in (self._client, self._listener, self._ctl):
            if s is not None:
                s.close()
        self._client = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._shim_dir:
            shutil.rmtree(self._shim_dir, ignore_errors=True)

    def _step(self) -> None:
        assert self._listener is not None and self._ctl is not None
        rl: list[int | socket.socket] = [self._listener, self._ctl, self._wake_r]
        wl: list[int | socket.socket] = []
        if self._master is not None:
            rl.append(self._master)
            if self._to_pty:
                wl.append(self._master)
        if self._client is not None:
            if len(self._inbox) + len(self._to_pty) < PTY_BACKLOG:
                rl.append(self._client)
            if self._to_client:
                wl.append(self._client)
        r, w, _ = select.select(rl, wl, [], POLL_S)
        exited = False
        if self._wake_r in r:
            os.read(self._wake_r, 512)
        if self._listener in r:
            self._accept()
        if self._ctl in r:
            self._control()
        if self._master is not None and self._master in r:
            exited = not self._read_pty()
        if self._client is not None and self._client in r:
            self._read_client()
        if self._client is not None and self._client in w:
            self._send_client()
        if self._inbox and self._phase == _RUNNING:
            self._pump_inbox()
        if self._master is not None and self._master in w:
            self._flush_pty()
        with self._lock:
            request, self._request = self._request, None
        if request is not None:
            self._reboot(request)
        elif exited or (self._proc is not None and self._proc.poll() is not None):
            self._reboot("soft")
        elif self._phase == _GATE and time.monotonic() - self._spawned_at > GATE_S:
            self._phase = _RUNNING

    def _accept(self) -> None:
        assert self._listener is not None
        conn, _ = self._listener.accept()
        # a serial port has one user at a time: the newest wins, but what the previous one
        # wrote before it closed (mpremote's Ctrl-B on leaving) still reaches the board
        old = self._client
        while old is not None:
            try:
                data = old.recv(65536)
            except OSError:  # BlockingIOError: nothing more
                break
            if not data:
                break
            self._inbox += data
        self._drop_client()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        self._client = conn
        self._to_client.clear()
        self._quickack()

    def _control(self) -> None:
        assert self._ctl is not None
        conn, _ = self._ctl.accept()
        conn.settimeout(2)
        try:
            what = conn.recv(16)
        except OSError:
            what = b""
        conn.close()
        if what in (b"hard", b"soft"):
            with self._lock:
                self._request = what.decode()

    def _read_pty(self) -> bool:
        """Pass on what the interpreter printed; False once it has gone."""
        assert self._master is not None
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return True
        except OSError as err:
            if err.errno == errno.EIO:  # the slave side is closed: the process exited
                return False
            raise
        if not data:
            return False
        self._on_output(data)
        return True

    def _on_output(self, data: bytes) -> None:
        if self._phase == _BOOT_RAW:
            # soft reboot in raw mode: show boot.py's output, not the Unix port's banner
            self._bootbuf += data
            j = self._bootbuf.rfind(FRIENDLY_MARK)
            if j >= 0 and self._bootbuf.endswith(b">>> "):
                i = self._bootbuf.rfind(b"MicroPython ", 0, j)
                self._emit(bytes(self._bootbuf[: i if i >= 0 else j]))
                self._bootbuf = bytearray()
                self._phase = _BOOT_RAW2
                self._to_pty[0:0] = b"\x01"  # Ctrl-A: into the raw REPL
                self._flush_pty()
            return
        if self._phase == _BOOT_RAW2:
            self._bootbuf += data
            k = self._bootbuf.find(RAW_BANNER)
            if k >= 0 and len(self._bootbuf) > k + len(RAW_BANNER):  # the ">" too
                self._emit(bytes(self._bootbuf[k:]))
                self._bootbuf = bytearray()
                self._mode = "raw"
                self._phase = _RUNNING
            return
        self._phase = _RUNNING
        # the REPL mode a soft reset returns to: the last banner printed
        seen = self._tail + data
        r, f = seen.rfind(RAW_BANNER), seen.rfind(FRIENDLY_MARK)
        if r != f:
            self._mode = "raw" if r > f else "friendly"
        self._tail = seen[-64:]
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self._log += data
            self._lock.notify_all()
        if self._client is not None:
            self._to_client += data
            self._send_client()
        if self._echo is not None:
            self._echo(data)

    def _read_client(self) -> None:
        """Take what the client sent into the inbox."""
        assert self._client is not None
        try:
            data = self._client.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self._quickack()
        self._inbox += data

    def _pump_inbox(self) -> None:
        """Inbox to the interpreter; a Ctrl-C interrupts running code as on a board."""
        parts = bytes(self._inbox).split(CTRL_C)
        self._inbox.clear()
        for n, part in enumerate(parts):
            if n:
                self._flush_pty()
                proc = self._proc
                if proc is not None and proc.poll() is None and _sigint_armed(proc.pid):
                    os.kill(proc.pid, signal.SIGINT)  # the board's interrupt character
                else:
                    self._to_pty += CTRL_C
            self._to_pty += part
        self._flush_pty()

    def _quickack(self) -> None:
        """ACK at once: pyserial's socket:// leaves Nagle on, so with delayed ACKs every small
        write of mpremote after the first waits ~40 ms (50 ms per exec instead of 10 ms)."""
        quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux; it does not stick: per recv
        if quickack is not None and self._client is not None:
            try:
                self._client.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            except OSError:
                pass

    def _send_client(self) -> None:
        assert self._client is not None
        try:
            n = self._client.send(self._to_client)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client()
            return
        del self._to_client[:n]

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._to_client.clear()

    def _flush_pty(self) -> None:
        if self._master is None or not self._to_pty:
            return
        try:
            n = os.write(self._master, self._to_pty)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the process is going away; the reboot handles it
            return
        del self._to_pty[:n]

    def _kill(self, drain: bool = True) -> int | None:
        """End the current process; pass on what it printed first. Its exit code."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self._master is not None:
            while drain:
                try:
                    data = os.read(self._master, 65536)
                except OSError:
                    break
                if not data:
                    break
                self._on_output(data)
            os.close(self._master)
            self._master = None
        return code

    def _reboot(self, kind: str) -> None:
        self._kill()
        self._bootbuf = bytearray()
        self._tail = b""
        if kind == "hard":
            self._to_pty.clear()  # what arrives during a reset is lost
            self._discard_client_input()
            self._mode = "friendly"
        else:
            self._emit(SOFT_REBOOT)
        self._spawn()
        with self._lock:
            self._resets.append(kind)
            self._lock.notify_all()

    def _discard_client_input(self) -> None:
        self._inbox.clear()
        while self._client is not None:
            try:
                if not self._client.recv(65536):
                    self._drop_client()
            except BlockingIOError:
                return
            except OSError:
                self._drop_client()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fakeboard",
        description="The MicroPython Unix port as a board for mpremote (socket://127.0.0.1:PORT).",
    )
    parser.add_argument("root", help="the board's filesystem (a directory)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument(
        "--run-main", action="store_true", help="run boot.py and main.py on resets, as a board"
    )
    parser.add_argument("--echo", action="store_true", help="copy the console to stdout")
    parser.add_argument("--heapsize", help="the interpreter's heap, e.g. 192K")
    parser.add_argument(
        "--frozen", action="append", default=[], help="a directory importable as frozen"
    )
    args = parser.parse_args(argv)

    def echo(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    board = FakeBoard(
        args.root,
        port=args.port,
        run_main=args.run_main,
        heapsize=args.heapsize,
        frozen_dirs=tuple(args.frozen),
        echo=echo if args.echo else None,
    )
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background
    with board:
        print(board.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
