"""Bridge mode (issue #17 item 3): the GX follows an ESP32 adapter on the LAN, so that its
charger is on the GX's D-Bus (GUI, VRM) although the GX has no wire to it.

Two ways to follow it, chosen by gx.bridge_via:
  http  GET <bridge_url>/api/status every second; /Mode writes are POST /api/mode with the
        adapter's admin password (gx.bridge_password). Standard library only (asyncio
        streams): the GX may have no pip, and a request can never outlive its 2 s timeout.
  mqtt  the adapter's retained JSON state (<bridge_topic>/state) and its online/offline
        (<bridge_topic>/status, offline being its last will) on the broker of the "mqtt"
        section; /Mode writes are <bridge_topic>/set/mode (authorised by the broker login; the
        adapter needs mqtt.commands on), confirmed by the next state. paho-mqtt runs in its
        own thread; what it receives is handed into the loop with call_soon_threadsafe.

Either way the adapter's answer becomes the normalized view dbus_charger.py publishes
(view_from_status: one normalization for the app, the bridge over HTTP and over MQTT). When the
adapter is unreachable or silent for more than SILENT_S the view says connected False and has
no measurements: the D-Bus service stays and shows the charger disconnected. Anything bad from
the adapter (not JSON, wrong types, too big) is dropped and counted, never raised.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from dbus_charger import ModeSwitch, view_from_status

POLL_S = 1.0  # /api/status this often (the adapter's text blocks come every second)
TIMEOUT_S = 2.0  # one HTTP request, all of it: connect, send, answer
SILENT_S = 10.0  # no state this long: the adapter is gone (disconnected on D-Bus)
BACKOFF_S = (1.0, 2.0, 4.0)  # between failed attempts: a few s at most (SILENT_S must see 2)
CONFIRM_S = 5.0  # an MQTT mode command: the adapter's state shows it within this
MAX_PAYLOAD = 16384  # an answer or a state over this is not the adapter's
MAX_HEADERS = 64
MQTT_KEEPALIVE_S = 30
LOG_EVERY_S = 60.0  # bad input is logged at most this often (it is counted always)
MODES = ("auto", "manual", "off")

# the view's keys (dbus_charger.py consumes them)
FLOATS = ("voltage_v", "current_a", "temperature_c", "limit_a")
INTS = ("product_id", "state_code", "error_code")
TEXTS = ("product_name", "firmware", "serial", "mode")
IDENTITY = ("product_id", "product_name", "firmware", "serial")  # kept while disconnected
# what view_from_status reads from the adapter's status, and the types it may have there
STATUS_TYPES = (
    ("charger", "connected", "bool"),
    ("charger", "pid", "pid"),
    ("charger", "model", "text"),
    ("charger", "firmware", "text"),
    ("charger", "serial", "text"),
    ("charger", "voltage_v", "number"),
    ("charger", "current_a", "number"),
    ("charger", "temperature_c", "number"),
    ("charger", "state_code", "int"),
    ("charger", "error_code", "int"),
    ("charger", "limit_a", "number"),
    ("control", "mode", "mode"),
    ("control", "charging", "bool"),
    ("control", "manual_charging", "bool"),
    ("control", "can_switch_off", "bool"),
)


class BadInput(ValueError):
    """The adapter said something that is not a state of ours."""


def disconnected(view: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The view while the adapter cannot be followed: who the charger is (its D-Bus identity
    stays), nothing about its present state."""
    out: Dict[str, Any] = dict.fromkeys(FLOATS + INTS + TEXTS + ("charging", "switched_off"))
    for key in IDENTITY:
        out[key] = (view or {}).get(key)
    out["connected"] = False
    return out


def _fits(value: Any, kind: str) -> bool:
    if value is None:
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "mode":
        return value in MODES
    if kind == "text":
        return isinstance(value, str)
    if isinstance(value, bool):  # an int to Python, never a number here
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "pid":
        return isinstance(value, (int, str))
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def checked_status(status: Any) -> Dict[str, Any]:
    """`status` if what the view is made of has the right types, else BadInput. A state with
    a wrong one is dropped whole: view_from_status would read it as unknown, and the GUI
    would show a gap until the next good one, for what is a fault at the other end."""
    if not isinstance(status, dict):
        raise BadInput("not a JSON object")
    for section in ("charger", "control"):
        if not isinstance(status.get(section), dict):
            raise BadInput("%s is not an object" % section)
    for section, key, kind in STATUS_TYPES:
        value = status[section].get(key)
        if not _fits(value, kind):
            raise BadInput("%s.%s is not %s: %r" % (section, key, kind, value))
    return status


def _flag(value: Any) -> Optional[bool]:
    """The MQTT state's booleans are Home Assistant's ON/OFF (mqtt._shown)."""
    if value is None or isinstance(value, bool):
        return value
    if value in ("ON", "OFF"):
        return value == "ON"
    raise BadInput("not ON/OFF: %r" % (value,))


def status_from_state(state: Any) -> Dict[str, Any]:
    """The adapter's MQTT state (firmware/mqtt.py Mqtt.state()) in the shape of its
    /api/status, so view_from_status normalizes both the same way."""
    if not isinstance(state, dict):
        raise BadInput("the state is not a JSON object")
    charger = {
        "connected": _flag(state.get("link")),
        "pid": state.get("pid"),
        "model": state.get("model"),
        "firmware": state.get("firmware"),
        "serial": state.get("serial"),
        "voltage_v": state.get("battery_v"),
        "current_a": state.get("battery_a"),
        "temperature_c": state.get("temperature_c"),
        "state": state.get("charger_state"),
        "state_code": state.get("state_code"),
        "error": state.get("charger_error"),
        "error_code": state.get("error_code"),
        "limit_a": state.get("limit_a"),
    }
    control = {"mode": state.get("mode"), "charging": _flag(state.get("charging")),
               "manual_charging": _flag(state.get("manual_charging")),
               "can_switch_off": _flag(state.get("can_switch_off"))}
    return {"charger": charger, "control": control}


def _shown_change(view: Dict[str, Any]) -> Tuple[Any, Any]:
    """(mode, held off) as a view shows them: what a command waits to see."""
    return view.get("mode"), view.get("switched_off")


def _endpoint(url: str) -> Tuple[str, int, str]:
    """(host, port, path prefix) of gx.bridge_url; ValueError with the reason."""
    if any(ord(c) > 126 or ord(c) < 33 for c in url.strip()):
        raise ValueError("gx.bridge_url must be plain ASCII without spaces: %r" % url)
    parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
    if parts.scheme != "http":
        raise ValueError("gx.bridge_url must be http://<ip>[:port] (the adapter serves http)")
    if not parts.hostname:
        raise ValueError("gx.bridge_url has no host: %r" % url)
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


async def http_request(
    host: str, port: int, method: str, path: str, headers: Dict[str, str], body: bytes = b""
) -> Tuple[int, bytes]:
    """(status, body) of one HTTP/1.0 exchange (the adapter's microdot answers 1.0: the body
    runs to the end of the connection). Bounded in size; the caller bounds it in time."""
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_PAYLOAD)
    try:
        where = host if port == 80 else "%s:%d" % (host, port)
        head = "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n" % (method, path, where)
        for name, value in headers.items():
            head += "%s: %s\r\n" % (name, value)
        if body or method == "POST":
            head += "Content-Length: %d\r\n" % len(body)
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        line = b""
        try:
            line = await reader.readline()
            words = line.split(None, 2)
            status = int(words[1])
        except (ValueError, IndexError, asyncio.LimitOverrunError):
            raise BadInput("not an HTTP answer: %r" % line[:60]) from None
        length = None
        for _ in range(MAX_HEADERS):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise BadInput("a bad Content-Length: %r" % value.strip()) from None
        else:
            raise BadInput("over %d header lines" % MAX_HEADERS)
        if length is not None and length > MAX_PAYLOAD:
            raise BadInput("an answer of %d B (over %d)" % (length, MAX_PAYLOAD))
        data = b""
        while len(data) <= MAX_PAYLOAD:
            chunk = await reader.read(MAX_PAYLOAD + 1 - len(data))
            if not chunk:
                break
            data += chunk
            if length is not None and len(data) >= length:
                break
        if len(data) > MAX_PAYLOAD:
            raise BadInput("an answer over %d B" % MAX_PAYLOAD)
        return status, data
    finally:
        writer.close()


def _error_text(status: int, data: bytes) -> str:
    """The adapter's reason for a refusal ({"error": ...} or {"errors": [...]}), with the code."""
    why = ""
    try:
        answer = json.loads(data.decode())
        if isinstance(answer, dict):
            errors = answer.get("errors")
            why = "; ".join(map(str, errors)) if isinstance(errors, list) else ""
            why = why or str(answer.get("error") or "")
    except (ValueError, UnicodeError):
        pass
    why = why or data[:200].decode("utf-8", "replace").strip() or "no reason given"
    if status == 401:
        why += " (gx.bridge_password must be the adapter's admin password)"
    return "the adapter refused (HTTP %d): %s" % (status, why)


def _describe(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "no answer within %g s" % TIMEOUT_S
    return "%s: %s" % (type(err).__name__, err) if str(err) else type(err).__name__


class AdapterFollower:
    """Follows one ESP32 adapter and turns what it says into the D-Bus view."""

    def __init__(
        self, gx: Dict[str, Any], mqtt: Dict[str, Any], log: Callable[[str], None]
    ) -> None:
        """`gx` is the config's "gx" section (bridge_url, bridge_via, bridge_topic,
        bridge_password), `mqtt` its "mqtt" section (the broker both use)."""
        self.via = gx.get("bridge_via") or "http"
        self.url = gx.get("bridge_url") or ""
        self.topic = (gx.get("bridge_topic") or "").rstrip("/")
        self.password = gx.get("bridge_password") or ""
        self.mqtt = mqtt
        self.log = log
        self.view: Optional[Dict[str, Any]] = None
        self.connected = False  # the adapter is followed now (fresh states)
        self.last_error: Optional[str] = None
        self.last_refused: Optional[str] = None
        self.counters = {"updates": 0, "dropped": 0, "commands_ok": 0, "commands_refused": 0}
        self.switch = ModeSwitch()  # what the GUI's On restores
        self._on_view: Optional[Callable[[Dict[str, Any]], None]] = None
        self._fresh_at: Optional[float] = None  # monotonic time of the last state
        self._gap_s = 0.0  # the adapter's MQTT interval as seen (a slow mqtt.update_s)
        self._logged_bad_at: Optional[float] = None
        self._wake: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client: Any = None  # paho's, via mqtt
        self._broker_up = False
        self._online: Optional[bool] = None  # the adapter's <topic>/status
        self._waiters: List[Tuple[Tuple[Any, Any], "asyncio.Future[None]"]] = []

    # -- what the rest of the service sees ---------------------------------------------------

    async def run(self, on_view: Callable[[Dict[str, Any]], None]) -> None:
        """Follow the adapter until cancelled; on_view gets every new state and the change
        to disconnected."""
        self._on_view = on_view
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            if self.via == "mqtt":
                await self._follow_mqtt()
            else:
                await self._follow_http()
        finally:
            self._stop_mqtt()

    async def set_mode(self, on: bool) -> Optional[str]:
        """The GUI's /Mode switch (ModeSwitch: off is manual mode holding the charger off,
        on the mode before, charging). None when the adapter took it, else why not."""
        if self.view:
            self.switch.seen(self.view)
            why = self.switch.refused(self.view, on)
            if why:
                self.counters["commands_refused"] += 1
                self.last_refused = why
                return why
        change = self.switch.change(on)
        what = "on (%s)" % change["mode"] if on else "off"
        try:
            if self.via == "mqtt":
                error = await self._command_mqtt(change)
            else:
                error = await self._command_http(change)
        except Exception as err:  # noqa: BLE001  whatever it was, the GUI gets a reason
            error = "%s not sent: %s" % (what, _describe(err))
        if error:
            self.counters["commands_refused"] += 1
            self.last_refused = error
            self.log("bridge: %s refused: %s" % (what, error))
        else:
            self.counters["commands_ok"] += 1
            self.log("bridge: %s set at the adapter" % what)
        return error

    def status(self) -> Dict[str, Any]:
        """For the GX service's own /api/status (never the password)."""
        out: Dict[str, Any] = {"via": self.via}
        if self.via == "mqtt":
            out["topic"] = self.topic
            out["broker"] = "%s:%s" % (self.mqtt.get("host"), self.mqtt.get("port"))
            out["broker_connected"] = self._broker_up
        else:
            out["url"] = self.url
        fresh = self._fresh_at
        out.update(
            {
                "connected": self.connected,
                "age_s": None if fresh is None else round(time.monotonic() - fresh, 1),
                "last_error": self.last_error,
                "last_refused": self.last_refused,
                "last_on_mode": self.switch.last_on,
            }
        )
        out.update(self.counters)
        return out

    # -- views ---------------------------------------------------------------------------------

    def _accept(self, status: Any) -> bool:
        """A new state from the adapter: the view from it, on to D-Bus. False if it was bad
        (dropped and counted)."""
        try:
            view = view_from_status(checked_status(status))
        except Exception as err:  # noqa: BLE001  bad input of any shape: never out of run()
            self._bad(_describe(err))
            return False
        now = time.monotonic()
        self._fresh_at = now
        self.counters["updates"] += 1
        self.switch.seen(view)
        if not self.connected:
            self.log("bridge: following the adapter (%s)" % (self.url or self.topic))
        self.connected = True
        self.last_error = None
        self._show(view)
        return True

    def _lost(self, why: str) -> None:
        """The adapter cannot be followed now: disconnected on D-Bus, once per outage."""
        self.last_error = why
        if self.connected or self.view is None:
            self.log("bridge: the adapter is not followed: %s" % why)
            self.connected = False
            self._show(disconnected(self.view))

    def _silent(self) -> bool:
        """No state for SILENT_S (or 2.5 of the adapter's own intervals, if longer)."""
        fresh = self._fresh_at
        limit = max(SILENT_S, 2.5 * self._gap_s)
        return fresh is None or time.monotonic() - fresh > limit

    def _show(self, view: Dict[str, Any]) -> None:
        self.view = view
        if self._on_view is None:
            return
        try:
            self._on_view(view)
        except Exception as err:  # noqa: BLE001  D-Bus trouble must not stop the following
            self.log("bridge: on_view failed: %s" % _describe(err))

    def _bad(self, why: str) -> None:
        self.counters["dropped"] += 1
        now = time.monotonic()
        if self._logged_bad_at is None or now - self._logged_bad_at >= LOG_EVERY_S:
            self._logged_bad_at = now
            self.log(
                "bridge: dropped a bad state (%d so far): %s" % (self.counters["dropped"], why)
            )

    # -- via http ------------------------------------------------------------------------------

    async def _follow_http(self) -> None:
        assert self._wake is not None
        try:
            host, port, prefix = _endpoint(self.url)
        except ValueError as err:
            self._lost(str(err))
            await asyncio.Event().wait()  # nothing to follow; the service shows disconnected
            return
        failures = 0
        while True:
            self._wake.clear()
            delay = POLL_S
            try:
                status, data = await asyncio.wait_for(
                    http_request(host, port, "GET", prefix + "/api/status", {}), TIMEOUT_S
                )
                if status != 200:  # busy (503), not found: no state, not a bad one
                    raise OSError("HTTP %d from /api/status: %s" % (status, data[:80]))
            except ValueError as err:  # BadInput, or a line over the reader's limit
                self._bad(_describe(err))
                self.last_error = _describe(err)
            except Exception as err:  # noqa: BLE001  unreachable, refused, timed out, ...
                failures += 1
                delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                self.last_error = _describe(err)
            else:
                failures = 0
                try:
                    answer = json.loads(data.decode())
                except Exception as err:  # noqa: BLE001  not JSON (or nested past recursion)
                    self._bad("/api/status is not JSON: %s" % _describe(err))
                else:
                    self._accept(answer)
            if self._silent() and (self.connected or self.view is None):
                self._lost(self.last_error or "no state for %g s" % SILENT_S)
            elif self.connected and self._fresh_at is not None:
                # told at SILENT_S, not at the end of a back-off that runs past it
                left = self._fresh_at + SILENT_S - time.monotonic()
                delay = max(0.05, min(delay, left + 0.05))
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _command_http(self, change: Dict[str, Any]) -> Optional[str]:
        host, port, prefix = _endpoint(self.url)
        token = base64.b64encode(("gx:" + self.password).encode()).decode()
        headers = {"Authorization": "Basic " + token, "Content-Type": "application/json"}
        body = json.dumps(change).encode()
        try:
            status, data = await asyncio.wait_for(
                http_request(host, port, "POST", prefix + "/api/mode", headers, body), TIMEOUT_S
            )
        except Exception as err:  # noqa: BLE001  unreachable, timed out, not HTTP
            return "the adapter did not answer: %s" % _describe(err)
        if status != 200:
            return _error_text(status, data)
        if self._wake is not None:
            self._wake.set()  # the new mode on D-Bus now, not at the next poll
        return None

    # -- via mqtt ------------------------------------------------------------------------------

    async def _follow_mqtt(self) -> None:
        import paho.mqtt.client as paho  # only here: the http bridge runs without it

        host, port = self.mqtt.get("host") or "", int(self.mqtt.get("port") or 1883)
        if not host or not self.topic:
            self._lost("via mqtt needs mqtt.host and gx.bridge_topic")
            await asyncio.Event().wait()
            return
        client_id = "bluesmart-gx-bridge-%06x" % random.getrandbits(24)
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        if self.mqtt.get("user"):
            client.username_pw_set(self.mqtt["user"], self.mqtt.get("password") or None)
        if self.mqtt.get("ca_file"):
            client.tls_set(ca_certs=self.mqtt["ca_file"])
        client.reconnect_delay_set(int(BACKOFF_S[0]), int(BACKOFF_S[-1]))
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_connect_fail = self._paho_connect_fail
        self._client = client
        self._fresh_at = None
        client.connect_async(host, port, MQTT_KEEPALIVE_S)
        client.loop_start()
        first = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            if self.connected and self._silent():
                self._lost(self.last_error or "no state for %g s" % SILENT_S)
            elif self.view is None and time.monotonic() - first > TIMEOUT_S:
                self._lost(self.last_error or "no state from %s/state yet" % self.topic)

    def _stop_mqtt(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _post(self, handler: Callable[..., None], *args: Any) -> None:
        """From paho's thread into the loop: the only thing that thread does with asyncio."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(handler, *args)
        except RuntimeError:  # the loop is closed: we are stopping
            pass

    def _paho_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._post(self._on_broker, False, "the broker refused: %s" % reason)
            return
        # the status first: its retained "offline" comes before a stale retained state
        client.subscribe([(self.topic + "/status", 0), (self.topic + "/state", 0)])
        self._post(self._on_broker, True, None)

    def _paho_connect_fail(self, client: Any, userdata: Any) -> None:
        where = "%s:%s" % (self.mqtt.get("host"), self.mqtt.get("port"))
        self._post(self._on_broker, False, "cannot connect to the broker at %s" % where)

    def _paho_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._post(self._on_broker, False, "lost the broker: %s" % reason)

    def _paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload = message.payload
        size = len(payload)
        self._post(
            self._on_message,
            message.topic,
            None if size > MAX_PAYLOAD else bytes(payload),
            size,
            bool(message.retain),
        )

    def _on_broker(self, up: bool, why: Optional[str]) -> None:
        if up:
            self._broker_up = True
            self.log("bridge: connected to the broker, following %s" % self.topic)
            return
        self._broker_up = False
        self.last_error = why
        self._online = None  # told again by the retained status after the reconnect
        if self.connected:
            self._lost(why or "lost the broker")

    def _on_message(self, topic: str, payload: Optional[bytes], size: int, retained: bool) -> None:
        if payload is None:
            self._bad("%s: %d B (over %d)" % (topic, size, MAX_PAYLOAD))
            return
        if topic == self.topic + "/status":
            text = payload.decode("utf-8", "replace").strip()
            if text == "online":
                self._online = True
            elif text == "offline":
                self._online = False
                self._lost(
                    "the adapter is offline (%s)" % ("retained" if retained else "its will")
                )
            else:
                self._bad("%s: %r" % (topic, payload[:40]))
            return
        if topic != self.topic + "/state":
            return
        try:
            status = status_from_state(json.loads(payload.decode()))
        except Exception as err:  # noqa: BLE001  not JSON, not ours, nested past recursion
            self._bad("%s: %s" % (topic, _describe(err)))
            return
        if retained and self._online is False:
            # what a dead adapter left at the broker: who the charger is, not how it is
            try:
                self._show(disconnected(view_from_status(checked_status(status))))
            except Exception as err:  # noqa: BLE001
                self._bad(_describe(err))
            return
        following, before = self.connected, self._fresh_at
        if not self._accept(status):
            return
        if not retained:
            self._online = True  # it publishes its state only while online
            if following and before is not None and self._fresh_at is not None:
                # its update_s, roughly; slowly forgotten (a command's state comes early)
                self._gap_s = max(self._fresh_at - before, self._gap_s * 0.9)
        shown = _shown_change(self.view or {})
        for wanted, future in self._waiters:
            if wanted == shown and not future.done():
                future.set_result(None)

    async def _command_mqtt(self, change: Dict[str, Any]) -> Optional[str]:
        """The change as the adapter's commands, in an order that never charges on the way
        (off: set/charging OFF, then set/mode manual; on: set/mode, then set/charging ON),
        confirmed by its state showing both."""
        client = self._client
        if client is None or not self._broker_up:
            return "not connected to the broker (%s)" % (self.last_error or "not started")
        if self._online is False:
            return "the adapter is offline"
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        wanted = (change["mode"], change["manual_charging"] is False and change["mode"] == "manual")
        entry = (wanted, future)
        self._waiters.append(entry)
        charging = "ON" if change["manual_charging"] else "OFF"
        commands = [("mode", change["mode"]), ("charging", charging)]
        if not change["manual_charging"]:
            commands.reverse()
        try:
            for name, payload in commands:
                info = client.publish(self.topic + "/set/" + name, payload, qos=0)
                if info.rc != 0:
                    return "not sent to the broker (paho error %s)" % info.rc
            try:
                await asyncio.wait_for(future, CONFIRM_S)
            except asyncio.TimeoutError:
                return (
                    "the adapter's state did not show mode %s%s within %g s (is mqtt.commands "
                    "on at the adapter? a refused command would be in its log)"
                    % (change["mode"], "" if change["manual_charging"] else ", held off",
                       CONFIRM_S)
                )
            return None
        finally:
            self._waiters.remove(entry)
