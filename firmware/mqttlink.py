"""One MQTT connection on umqtt.simple that can never stall the charger link for long.

umqtt.simple is blocking. Every socket call here is bounded by SOCKET_TIMEOUT_S, the same on the
ESP32 and the Unix port: the socket is made with the timeout already set (the PyPI 1.3.4 copy
has no connect(timeout=)), and after connecting it is wrapped so that umqtt's
`setblocking(True)`, which on the ESP32 means "wait forever", means "wait SOCKET_TIMEOUT_S".
A broker that stops answering pings is dropped and reconnected with back-off; so is a
connection that fails in its setup or soon after (a refused subscription): only one that held
HELD_MS resets the back-off. The broker's address is resolved once and kept. Used by mqtt.py
(our broker) and venusmqtt.py (the GX's).
"""

import socket

from ticks import ticks_add, ticks_diff, ticks_ms

try:
    from umqtt import simple
except ImportError:  # reported by Session.run(), the rest of the firmware runs without MQTT
    simple = None

SOCKET_TIMEOUT_S = 0.25  # a LAN broker answers in ms; kept under the parser's 500 ms gap reset
PING_MS = 10000  # nothing received, or nothing sent, this long: ping
PONG_MS = 5000  # no byte from the broker this long after a ping: it is gone
KEEPALIVE_S = 30  # told to the broker; we ping three times as often
BACKOFF_S = (1, 2, 5, 10, 30, 60)
HELD_MS = 10000  # a connection that lasted this long (set up, pinged) worked: back-off reset
MAX_MESSAGE = 4096  # a longer incoming payload is read and thrown away in pieces, never whole
SKIP_MS = 20  # spent on throwing one away per round
MAX_MESSAGES = 8  # handled per round: a flood must not starve the other tasks
QUEUE = 16  # received and not yet handled; more are dropped and counted
COUNTERS = (
    "connects",
    "failures",
    "published",
    "publish_errors",
    "received",
    "dropped",
    "too_long",
    "longest_block_ms",
)


def der(certificate):
    """A CA certificate as DER: MicroPython's ssl takes PEM only NUL-terminated, DER always."""
    if not certificate.lstrip().startswith(b"-----BEGIN"):
        return certificate
    from binascii import a2b_base64

    lines = certificate.split(b"\n")
    body = [x.strip() for x in lines if x.strip() and not x.startswith(b"-----")]
    return a2b_base64(b"".join(body))


class _Sockets:
    """What umqtt.simple sees as its `socket` module: sockets come with the timeout set, and
    the broker's address is the one resolved before (no DNS lookup per reconnect)."""

    def __init__(self, address):
        self.address = address

    def socket(self, *args):
        sock = socket.socket(*args)
        sock.settimeout(SOCKET_TIMEOUT_S)
        return sock

    def getaddrinfo(self, host, port, *args):
        return [(socket.AF_INET, socket.SOCK_STREAM, 0, "", self.address)]


def _bytes(text):
    """umqtt counts len() of what it is given: characters for a str, so a non-ASCII one makes
    a malformed packet. Bytes are counted right."""
    return text.encode() if isinstance(text, str) else text


class TimedSocket:
    """umqtt.simple's socket after connect: blocking means at most SOCKET_TIMEOUT_S; the times
    of the last byte received and sent are kept (how a dead broker is told from a quiet one,
    and when a ping is due); a message too long for the heap is skipped, not read whole."""

    def __init__(self, sock):
        self.sock = sock
        self.rx_ms = self.tx_ms = ticks_ms()
        self.reads = 0  # reads that returned data
        self.skip = 0  # bytes of a too long message still to throw away
        self.cut = False  # a read was skipped since Session._received last looked
        self.scratch = None
        self.setblocking(True)

    def setblocking(self, flag):
        try:
            self.sock.settimeout(SOCKET_TIMEOUT_S if flag else 0)
        except (AttributeError, OSError):  # a TLS socket without settimeout
            self.sock.setblocking(flag)

    def settimeout(self, seconds):
        self.setblocking(seconds != 0)

    def read(self, n):
        if self.skip:  # umqtt reads on while one is skipped (its wait for a SUBACK)
            self.setblocking(True)
            if not self.discard(SKIP_MS * 10):
                raise OSError("a message over %d B did not end" % MAX_MESSAGE)
        if n > MAX_MESSAGE:
            # umqtt would allocate n bytes at once (a retained 2 MB one: MemoryError, and the
            # same again on every reconnect): it gets b"" and Session.poll() reads them away
            self.skip = n
            self.cut = True
            return b""
        data = self.sock.read(n)
        if data:
            self.rx_ms = ticks_ms()
            self.reads += 1
        return data

    def discard(self, budget_ms):
        """Throw away up to budget_ms' worth of a skipped message; True once all of it is."""
        if self.scratch is None:
            self.scratch = bytearray(512)
        started = ticks_ms()
        while self.skip and ticks_diff(ticks_ms(), started) < budget_ms:
            got = self.sock.readinto(self.scratch, min(self.skip, len(self.scratch)))
            if got is None:  # nothing waiting (non-blocking)
                break
            if not got:
                raise OSError("connection closed")
            self.skip -= got
            self.rx_ms = ticks_ms()
        return not self.skip

    def write(self, buf, n=None):
        self.tx_ms = ticks_ms()
        if n is None:
            return self.sock.write(buf)
        return self.sock.write(buf, n)

    def close(self):
        self.sock.close()


class Session:
    """Connect, keep alive, reconnect; publish without blocking for long; queue what arrives.

    `on_connect(session)` subscribes and publishes what a fresh connection needs."""

    def __init__(self, name, host, port, client_id, log=print, user="", password="", ca_file=""):
        self.name = name
        self.host = host
        self.port = port
        self.client_id = client_id
        self.user = user
        self.password = password
        self.ca_file = ca_file
        self.log = log
        self.will = None  # (topic, payload): the broker publishes it, retained, when we vanish
        self.client = None
        self.address = None  # resolved once
        self.inbox = []
        self.connected_ms = None
        self.ping_ms = None
        self.last_error = None
        self.attempt = 0  # connections since the last one that held (HELD_MS)
        self.held = False
        self.retry_ms = None  # no connect before this
        self.counters = dict.fromkeys(COUNTERS, 0)

    @property
    def connected(self):
        return self.client is not None

    # -- connection -------------------------------------------------------------------------

    def _resolve(self):
        if self.address is None:  # one DNS lookup (it blocks; an IP address costs nothing)
            self.address = socket.getaddrinfo(self.host, self.port)[0][-1]
        return self.address

    def _ssl_params(self):
        if not self.ca_file:
            return None
        with open(self.ca_file, "rb") as f:
            ca = der(f.read())
        import ssl

        return {"cert_reqs": ssl.CERT_REQUIRED, "cadata": ca, "server_hostname": self.host}

    def connect(self):
        """Blocking, at most a few SOCKET_TIMEOUT_S. Raises on failure."""
        if simple is None:
            raise OSError("umqtt.simple is not installed")
        simple.socket = _Sockets(self._resolve())
        params = self._ssl_params()
        client = simple.MQTTClient(
            _bytes(self.client_id),
            self.host,
            self.port,
            user=_bytes(self.user) if self.user else None,
            password=_bytes(self.password or ""),  # umqtt sends one whenever there is a user
            keepalive=KEEPALIVE_S,
            ssl=params is not None,
            ssl_params=params or {},
        )
        if self.will:
            client.set_last_will(_bytes(self.will[0]), _bytes(self.will[1]), retain=True)
        client.set_callback(self._received)
        started = ticks_ms()
        try:
            try:
                client.connect(timeout=SOCKET_TIMEOUT_S)
            except TypeError:  # PyPI's 1.3.4 (the Unix port): our socket has the timeout
                client.connect()
        except Exception:
            self._timed(started)
            if client.sock is not None:
                try:
                    client.sock.close()
                except OSError:
                    pass
            raise
        self._timed(started)
        client.sock = TimedSocket(client.sock)
        self.client = client
        self.connected_ms = ticks_ms()
        self.ping_ms = None
        self.held = False
        self.counters["connects"] += 1
        self.last_error = None

    def close(self, why=None, clean=False):
        """`clean`: say DISCONNECT first, so that the broker does not publish the will."""
        if self.client is not None:
            try:
                sock = self.client.sock
                if clean:  # umqtt.simple's disconnect(), on any socket
                    (sock.write if hasattr(sock, "write") else sock.send)(b"\xe0\x00")
                sock.close()
            except (OSError, AttributeError):
                pass
        self.client = None
        self.connected_ms = None
        if why:
            self.last_error = why

    def _timed(self, started):
        took = ticks_diff(ticks_ms(), started)
        if took > self.counters["longest_block_ms"]:
            self.counters["longest_block_ms"] = took

    # -- traffic ----------------------------------------------------------------------------

    def publish(self, topic, payload, retain=False):
        """Qos 0, bytes on the wire (umqtt counts str characters, not bytes). False when
        not connected or the connection just failed (it is then closed)."""
        if self.client is None:
            return False
        topic, payload = _bytes(topic), _bytes(payload)
        started = ticks_ms()
        try:
            self.client.sock.setblocking(True)  # check_msg may have left it non-blocking
            self.client.publish(topic, payload, retain)
        except Exception as err:  # OSError, or umqtt's asserts on a broken stream
            self._timed(started)
            self.counters["publish_errors"] += 1
            self.close("publish: %s %s" % (type(err).__name__, err))
            return False
        self._timed(started)
        self.counters["published"] += 1
        return True

    def subscribe(self, topic):
        """False when not connected or the connection just failed (it is then closed)."""
        if self.client is None:
            return False
        started = ticks_ms()
        try:
            self.client.sock.setblocking(True)
            self.client.subscribe(_bytes(topic))
        except Exception as err:
            self._timed(started)
            self.close("subscribe: %s %s" % (type(err).__name__, err))
            return False
        self._timed(started)
        return True

    def _received(self, topic, payload):
        self.counters["received"] += 1
        sock = self.client.sock
        if sock.cut:  # too long: never handed on
            sock.cut = False
            self.counters["too_long"] += 1
            self.log("%s: skipped a message over %d B on %s" % (self.name, MAX_MESSAGE, topic))
            return
        if len(self.inbox) >= QUEUE:
            self.counters["dropped"] += 1
            return
        self.inbox.append((topic, payload))

    def poll(self):
        """Read what has arrived (without waiting), ping when due, notice a dead broker."""
        client = self.client
        if client is None:
            return
        started = ticks_ms()
        try:
            sock = client.sock
            if sock.skip:
                sock.setblocking(False)
                sock.discard(SKIP_MS)
            for _ in range(0 if sock.skip else MAX_MESSAGES):
                before = sock.reads
                client.check_msg()
                if sock.reads == before or sock.skip:
                    break  # nothing was waiting, or the rest of a long one is (next round)
            now = ticks_ms()
            if self.ping_ms is not None and ticks_diff(sock.rx_ms, self.ping_ms) >= 0:
                self.ping_ms = None  # the broker answered
            if self.ping_ms is not None and ticks_diff(now, self.ping_ms) > PONG_MS:
                raise OSError("no answer to a ping in %d s" % (PONG_MS // 1000))
            idle = max(ticks_diff(now, sock.rx_ms), ticks_diff(now, sock.tx_ms))
            if self.ping_ms is None and idle >= PING_MS:  # the broker drops a client that
                # sends nothing for 1.5 keepalives, however much it receives
                sock.setblocking(True)
                client.ping()
                self.ping_ms = now
        except Exception as err:
            self.close("%s %s" % (type(err).__name__, err))
        finally:
            self._timed(started)

    def take(self):
        """The messages received since the last call, oldest first."""
        inbox, self.inbox = self.inbox, []
        return inbox

    def tend(self, on_connect):
        """One round, called about every 100 ms: connect when due (after a failure, with
        back-off), else poll. Blocks at most a few SOCKET_TIMEOUT_S."""
        now = ticks_ms()
        if self.client is not None:
            self.poll()
            if self.client is None:
                self.log("%s: connection lost: %s" % (self.name, self.last_error))
                self._retry(now)
            elif not self.held and ticks_diff(now, self.connected_ms) >= HELD_MS:
                self.held = True  # latched: ticks_diff is meaningless days later
                self.attempt = 0
            return
        if self.retry_ms is not None and ticks_diff(self.retry_ms, now) > 0:
            return
        try:
            self.connect()
            self.log("%s: connected to %s:%s" % (self.name, self.host, self.port))
            on_connect(self)
            if self.client is None:  # a subscription refused, a publish failed
                raise OSError("setup: %s" % self.last_error)
            self.retry_ms = None
        except Exception as err:
            self.counters["failures"] += 1
            why = "%s %s" % (type(err).__name__, err)
            if self.attempt == 0 or self.last_error != why:
                self.log("%s: %s:%s %s" % (self.name, self.host, self.port, why))
            self.close(why)
            self._retry(ticks_ms())

    def _retry(self, now):
        """After a connection that held: at once. Else (it failed, in its setup or soon
        after) with back-off, so a broker that accepts and then drops us is not hammered."""
        if self.held:
            self.held = False
            self.retry_ms = now
            return
        if self.attempt >= 3:
            self.address = None  # look the name up again: it may have moved
        wait = BACKOFF_S[min(self.attempt, len(BACKOFF_S) - 1)]
        self.attempt += 1
        self.retry_ms = ticks_add(now, wait * 1000)

    def status(self):
        out = {
            "connected": self.connected,
            "broker": "%s:%s" % (self.host, self.port),
            "last_error": self.last_error,
        }
        out.update(self.counters)
        return out
