"""Bounds for the web face, which anyone on the network can reach: how many connections are
held, how long a request head may take, how long its lines may be and how many there are, and
how fast passwords can be guessed. microdot reads each request through a BoundedStream, so a
head that breaks a bound is refused before it is read whole."""

import asyncio

from ticks import ticks_add, ticks_diff, ticks_ms

MAX_CONNECTIONS = 8  # lwIP on the board has ~10 sockets: one listens, Venus and MQTT need theirs
HEAD_TIMEOUT_S = 5  # the request line, the headers and a small body arrive within this
BODY_IDLE_S = 10  # a streamed body (an update's file) may pause this long between reads
MAX_LINE = 1024  # the request line (414 beyond) and each header line (431 beyond)
MAX_HEADERS = 32  # header lines (431 beyond)
CHUNK = 256  # what is read from the socket at a time while looking for the end of a line
AUTH_FREE_FAILURES = 3  # wrong passwords in AUTH_WINDOW_S before every attempt waits its turn
AUTH_WINDOW_S = 60
AUTH_DELAY_MAX_S = 16  # the wait doubles per failure up to this: about 4 guesses a minute

REASONS = {
    200: "OK", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


class Refused(Exception):
    """A request refused while its head is read: the status to answer and why."""

    def __init__(self, status, why):
        super().__init__(why)
        self.status = status
        self.why = why


class BoundedStream:
    """The connection's reader with bounded lines. What was read past a line waits in
    `pending` for the next line or for the body; a Content-Length given twice with two
    values is refused (which one would the body follow?)."""

    def __init__(self, reader):
        self.reader = reader
        self.pending = b""
        self.lines = 0
        self.length = None
        self.idle_s = None  # set once the head is read: each later read is bounded by this

    async def _read(self, n):
        if self.idle_s is None:
            return await self.reader.read(n)
        return await asyncio.wait_for(self.reader.read(n), self.idle_s)

    async def readline(self):
        while True:
            end = self.pending.find(b"\n")
            if end >= 0 or len(self.pending) > MAX_LINE:
                break
            data = await self._read(CHUNK)
            if not data:  # closed half-way: what there is
                line, self.pending = self.pending, b""
                return line
            self.pending += data
        if end < 0 or end + 1 > MAX_LINE:
            if self.lines == 0:
                raise Refused(414, "the request line is over %d bytes" % MAX_LINE)
            raise Refused(431, "a header line is over %d bytes" % MAX_LINE)
        line, self.pending = self.pending[: end + 1], self.pending[end + 1 :]
        self.lines += 1
        if self.lines > MAX_HEADERS + 2:  # the request line and the empty one end the head
            raise Refused(431, "over %d header lines" % MAX_HEADERS)
        if line[:15].lower() == b"content-length:":
            value = line[15:].strip()
            if self.length is not None and value != self.length:
                raise Refused(400, "two different Content-Length headers")
            self.length = value
        return line

    async def read(self, n=-1):
        if self.pending:
            data = self.pending[:n] if n >= 0 else self.pending
            self.pending = self.pending[len(data) :]
            return data
        return await self._read(n)

    async def readexactly(self, n):
        out = b""
        while len(out) < n:
            data = await self.read(n - len(out))
            if not data:
                raise EOFError
            out += data
        return out


class Connections:
    """The connections being served. Beyond MAX_CONNECTIONS the oldest one still reading its
    head goes (a slow or idle client); if every one is busy, the new one is refused."""

    def __init__(self):
        self.open = []  # [task, since ms, head read]
        self.most = 0
        self.dropped = 0
        self.refused = 0

    def admit(self):
        """The entry for this connection, or None: refuse it."""
        if len(self.open) >= MAX_CONNECTIONS:
            idle = [c for c in self.open if not c[2]]
            if not idle:
                self.refused += 1
                return None
            oldest = idle[0]
            self.open.remove(oldest)
            self.dropped += 1
            oldest[0].cancel()
        entry = [asyncio.current_task(), ticks_ms(), False]
        self.open.append(entry)
        self.most = max(self.most, len(self.open))
        return entry

    def done(self, entry):
        if entry in self.open:
            self.open.remove(entry)

    def close_all(self):
        for entry in self.open:
            entry[0].cancel()
        self.open = []


class PasswordGuard:
    """Wrong passwords count for everyone, not per connection (parallel guesses would get
    around a delay per connection): after AUTH_FREE_FAILURES in a window, every attempt waits
    its turn, each turn twice as long as the one before, up to AUTH_DELAY_MAX_S. Reads never
    wait; the right password gets in after its turn and clears the count."""

    def __init__(self):
        self.failed = []  # ms of the recent failures
        self.pending = 0  # attempts waiting or being checked
        self.turn_ms = None  # when the next attempt may be checked
        self.failures = 0
        self.delayed = 0
        self.busy = 0  # attempts sent away unchecked: every turn was taken

    def _recent(self, now):
        window = AUTH_WINDOW_S * 1000
        self.failed = [t for t in self.failed if ticks_diff(now, t) < window][-16:]
        return len(self.failed)

    async def wait(self):
        """Before a password is checked: None, and result() after, always. Or, when the turns
        already given reach further than AUTH_DELAY_MAX_S, the seconds to come back: nothing
        is checked (a queue that grew without end would hold every connection)."""
        now = ticks_ms()
        n = self._recent(now) + self.pending
        wait = 0
        if n >= AUTH_FREE_FAILURES:
            delay = min(AUTH_DELAY_MAX_S, 1 << min(n - AUTH_FREE_FAILURES, 8))
            turn = self.turn_ms
            start = now if turn is None or ticks_diff(now, turn) >= 0 else turn
            wait = ticks_diff(start, now)
            if wait > AUTH_DELAY_MAX_S * 1000:
                self.busy += 1
                return wait // 1000 + 1
            self.turn_ms = ticks_add(start, delay * 1000)
        self.pending += 1
        if wait > 0:
            self.delayed += 1
            try:
                await asyncio.sleep(wait / 1000)
            except BaseException:  # the connection went meanwhile: its turn is not pending
                self.pending -= 1
                raise
        return None

    def result(self, ok):
        self.pending = max(0, self.pending - 1)
        if ok:
            self.failed = []
            self.turn_ms = None
        else:
            self.failures += 1
            self.failed.append(ticks_ms())

    def wait_s(self):
        turn = self.turn_ms
        return max(0, ticks_diff(turn, ticks_ms()) // 1000) if turn is not None else 0
