"""HTTP with microdot: the JSON API (status, config, mode, reboot) and Prometheus metrics.
Reading needs no login; every change needs the admin password (auth.py)."""

import asyncio
import json

import cold
import webguard
from microdot import Microdot, Request, Response, redirect, send_file
from webguard import Refused

# bounded requests: a request line or header over 1 kB, or a body over 4 kB, is refused; only
# an update's file may be longer, and it is streamed to flash, never held in memory
MAX_BODY = 4096
DRAIN_MAX = 16 * 1024  # a refused body up to this size is read and dropped before the answer
Request.max_readline = 1024
Request.max_content_length = 262144  # ota.MAX_FILE_BYTES; everything else: MAX_BODY (below)
Request.max_body_length = MAX_BODY
# the page goes out in 512 B reads (microdot's default is 1 kB): on a fragmented heap a free
# block of 1 kB is what was missing now and then at 224K-232K
Response.send_file_buffer_size = 512
OTA_FILE = "/api/ota/file/"
WRONG_PASSWORD_DELAY_S = 1
STATIC = (__file__.rsplit("/", 1)[0] + "/" if "/" in __file__ else "") + "static/"


_write = Response.write


async def _write_with_reason(self, stream):
    """microdot says "N/A" for every status but 200: the standard phrase instead."""
    if self.reason is None:
        self.reason = webguard.REASONS.get(self.status_code, "Unknown")
    await _write(self, stream)


Response.write = _write_with_reason


async def _answer(writer, status, why):
    """An answer written by hand, for a request refused before microdot has one."""
    body = json.dumps({"error": why})
    head = "HTTP/1.0 %d %s\r\nContent-Type: application/json; charset=UTF-8\r\n" % (
        status, webguard.REASONS.get(status, "Unknown"))
    writer.write(("%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)).encode())
    await writer.drain()


async def drain(request):
    """Read and drop a refused body of modest size: a socket closed on unread bytes is reset,
    and the client may lose the answer before it reads it. A larger one is not worth the wait
    (the body's idle limit still bounds each read)."""
    left = request.content_length
    if left > DRAIN_MAX:
        return
    while left > 0:
        chunk = await request.stream.read(min(left, 512))
        if not chunk:
            return
        left -= len(chunk)


class Server(Microdot):
    """microdot with bounds (webguard): a cap on connections, a time limit on the head,
    bounded lines and headers, refused with the right status before they are read whole."""

    def __init__(self):
        super().__init__()
        self.connections = webguard.Connections()
        self.guard = webguard.PasswordGuard()
        self.refused = {}  # status -> requests refused while their head was read

    def _count(self, status):
        key = str(status)
        self.refused[key] = self.refused.get(key, 0) + 1

    async def handle_request(self, reader, writer):
        entry = self.connections.admit()
        try:
            if entry is None:
                self._count(503)
                await _answer(writer, 503, "busy: %d connections" % webguard.MAX_CONNECTIONS)
                return
            stream = webguard.BoundedStream(reader)
            try:
                making = Request.create(self, stream, writer, writer.get_extra_info("peername"))
                req = await asyncio.wait_for(making, webguard.HEAD_TIMEOUT_S)
            except Refused as err:
                self._count(err.status)
                await _answer(writer, err.status, err.why)
                return
            except asyncio.TimeoutError:
                self._count(408)
                await _answer(writer, 408, "no whole request in %d s" % webguard.HEAD_TIMEOUT_S)
                return
            except (ValueError, IndexError, EOFError, UnicodeError):
                self._count(400)
                await _answer(writer, 400, "malformed request")
                return
            if req is None:
                return  # closed before a request line
            entry[2] = True  # the head is in: busy, not idle
            stream.idle_s = webguard.BODY_IDLE_S
            res = await self.dispatch_request(req)
            if res != Response.already_handled:
                await res.write(writer)
        except asyncio.CancelledError:
            pass  # the oldest idle one, beyond the cap; or the server closes
        except OSError:
            pass  # the client went away
        finally:
            if entry is not None:
                self.connections.done(entry)
            try:
                await writer.aclose()  # MicroPython's close() alone leaves the socket open
            except Exception:  # noqa: BLE001  gone already
                pass

    def close(self):
        """The listening socket and every connection, so that a restart can bind again."""
        if getattr(self, "server", None) is not None:
            self.server.close()
        self.connections.close_all()

    def status(self):
        c, g = self.connections, self.guard
        return {
            "open": len(c.open),
            "connections_max": c.most,
            "cap": webguard.MAX_CONNECTIONS,
            "dropped": c.dropped,
            "refused": self.refused,
            "auth_failures": g.failures,
            "auth_delayed": g.delayed,
            "auth_busy": g.busy,
            "auth_wait_s": g.wait_s(),
        }


def make_app(app):
    server = Server()
    failures = {"auth": 0}

    async def authorised(request):
        """None if the request carries the admin password, else the error response."""
        stored = app.config["admin"]["password_hash"]
        if not stored:
            return {"error": "no admin password is set (admin.password_hash)"}, 403
        auth = cold.load("auth")  # only for changes
        password = auth.password_from_header(request.headers.get("Authorization"))
        ok = False
        if password is not None:
            later = await server.guard.wait()  # guesses are slowed for everyone
            if later:
                why = "too many wrong passwords: try again in %d s" % later
                return {"error": why}, 429, {"Retry-After": str(later)}
            try:
                ok = auth.verify(password, stored)
            finally:
                server.guard.result(ok)
        if not ok:
            failures["auth"] += 1
            await asyncio.sleep(WRONG_PASSWORD_DELAY_S)
            headers = {"WWW-Authenticate": 'Bearer realm="ip22-adapter"'}  # no browser dialog
            return {"error": "wrong or missing admin password"}, 401, headers
        return None

    async def change_body(request):
        """(the JSON body of an authorised change, None) or (None, the error response)."""
        refused = await authorised(request)
        if refused:
            return None, refused
        if request.headers.get("Transfer-Encoding"):  # chunked: the body is not read
            return None, ({"error": "send the body with a Content-Length"}, 411)
        try:
            return json.loads(request.body.decode()), None
        except (ValueError, UnicodeError):
            return None, ({"error": "the body is not valid JSON"}, 400)

    @server.before_request
    async def bounded(request):
        if request.content_length > MAX_BODY and not request.path.startswith(OTA_FILE):
            await drain(request)
            return {"error": "the body is over %d bytes" % MAX_BODY}, 413

    @server.errorhandler(404)
    async def not_found(request):
        """On the access point every unknown address leads to the page: that is how phones
        find it (their connectivity check lands here through the captive DNS)."""
        if app.wifi.ap_on and not request.path.startswith("/api/"):
            return redirect("http://192.168.4.1/")
        return {"error": "not found"}, 404

    @server.errorhandler(405)
    async def wrong_method(request):
        return {"error": "%s is not allowed on %s" % (request.method, request.path)}, 405

    @server.get("/api/ota")
    async def ota_status(request):
        return app.ota_status()

    @server.post("/api/ota/begin")
    async def ota_begin(request):
        manifest, bad = await change_body(request)
        if bad:
            return bad
        return app.ota_step(lambda updater: updater.begin(manifest))

    @server.put("/api/ota/file/<path:name>")
    async def ota_file(request, name):
        refused = await authorised(request)
        if refused:
            return refused
        try:
            await app.ota().receive(name, request.stream, request.content_length)
        except Exception as err:  # UpdateError, or the client went away, or the flash is full
            return app.ota_failed(err)
        return {"received": name}

    @server.post("/api/ota/commit")
    async def ota_commit(request):
        refused = await authorised(request)
        if refused:
            return refused
        result = app.ota_step(lambda updater: updater.commit())
        if isinstance(result, tuple):
            return result
        asyncio.create_task(app.reboot())
        return {"rebooting": True, "active": result["active"], "version": result["version"]}

    @server.get("/")
    async def page(request):
        return send_file(STATIC + "index.html", content_type="text/html; charset=UTF-8")

    @server.get("/api/history")
    async def history(request):
        return as_json(app.history())

    @server.get("/api/schema")
    async def schema(request):
        return as_json(cold.load("config").form_schema())

    @server.get("/api/status")
    async def status(request):
        result = app.status()
        result["counters"]["auth_failures"] = failures["auth"]
        return as_json(result)

    @server.get("/api/config")
    async def get_config(request):
        c = app.config
        return as_json(
            {
                "config": cold.load("config").redacted(c.values),
                "source": c.source,
                "errors": c.errors,
            }
        )

    @server.post("/api/config")
    async def post_config(request):
        patch, bad = await change_body(request)
        if bad:
            return bad
        errors, restart = app.update_config(patch)
        if errors:
            return {"errors": errors}, 400
        return {"saved": True, "restart_needed": restart}

    @server.post("/api/mode")
    async def post_mode(request):
        change, bad = await change_body(request)
        if bad:
            return bad
        if not isinstance(change, dict) or not change:
            return {"error": 'send an object, e.g. {"mode": "manual", "manual_current_a": 6}'}, 400
        errors = app.set_mode(change)
        if errors:
            return {"errors": errors}, 400
        return app.status()["control"]

    @server.post("/api/reboot")
    async def reboot(request):
        refused = await authorised(request)
        if refused:
            return refused
        asyncio.create_task(app.reboot())
        return {"rebooting": True}

    @server.get("/metrics")
    async def metrics(request):
        text = cold.load("metrics").text(app.status())
        return text, 200, {"Content-Type": "text/plain; version=0.0.4"}

    return server


def as_json(obj):
    """A JSON response written in pieces of about CHUNK bytes. The status, history and schema
    are 2-4 kB as one string, and a free block that size (or the 1-2 kB a section's own JSON
    grows to) is what a fragmented heap lacks first."""
    return Response(
        _chunks(_pieces(obj)), headers={"Content-Type": "application/json; charset=UTF-8"}
    )


CHUNK = 256
LIST_STEP = 8  # items of a long list (the history's series, the log) dumped at a time


def _pieces(obj, depth=0):
    """JSON text in small pieces: objects two levels deep key by key, long lists in steps."""
    if isinstance(obj, dict) and depth < 2:
        sep = "{"
        for key, value in obj.items():
            yield sep + json.dumps(key) + ":"
            yield from _pieces(value, depth + 1)
            sep = ","
        yield "}" if sep == "," else "{}"
    elif isinstance(obj, list) and len(obj) > LIST_STEP:
        for i in range(0, len(obj), LIST_STEP):
            yield ("[" if i == 0 else ",") + json.dumps(obj[i : i + LIST_STEP])[1:-1]
        yield "]"
    else:
        yield json.dumps(obj)


def _chunks(pieces):
    """The pieces joined into writes of about CHUNK bytes (not one socket write each). The
    status line went out before the body: a failure here (a full heap) can only end the answer
    early, and ending the generator lets microdot close the connection."""
    parts = []
    size = 0
    try:
        for piece in pieces:
            parts.append(piece)
            size += len(piece)
            if size >= CHUNK:
                yield "".join(parts)
                parts = []
                size = 0
        if parts:
            yield "".join(parts)
    except Exception as err:  # noqa: BLE001  the client sees a cut answer, never a hang
        print("web: answer cut short: %s %s" % (type(err).__name__, err))
