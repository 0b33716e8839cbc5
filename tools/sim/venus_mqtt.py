"""A stand-in for Venus OS's MQTT side (dbus-flashmq, Venus >= 3.20), publishing the grid power
through a real broker, so the firmware's MQTT client meets the same rules as on a GX:

- only `N/<id>/system/0/Serial` is retained, published at connect;
- nothing else is published until a keepalive arrives on `R/<id>/keepalive` (or the legacy
  `R/<id>/system/0/Serial`), and nothing after `keepalive_timeout_s` without one;
- a keepalive without the "suppress-republish" option republishes every topic, then
  `N/<id>/full_publish_completed`; the JSON-list keepalive of the old dbus-mqtt is ignored;
- values are published on change only (not retained), `N/<id>/heartbeat` every few seconds;
- a meter that goes away: the system values become null, the meter's topics get an empty payload;
- a (re)connect to the broker forgets the keepalive, as a restarted GX broker does.

Sources: /work/shared/reference/ha-mqtt-notes.md section 5.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt

Grid = Callable[[], "tuple[float, float, float] | None"]  # W per phase, None: the meter is gone
METER_DEVICE_TYPE = 345  # an example meter model code; only "present" vs null matters here
GONE = b""  # the payload that says a device has gone


def value(v: Any) -> bytes:
    """Venus's payload: {"value": v}; floats to one decimal (never "-0.0")."""
    if isinstance(v, float):
        v = round(v, 1) + 0.0
    return json.dumps({"value": v}).encode()


def wants_full_publish(payload: bytes) -> bool | None:
    """True/False for a keepalive with/without a full republish; None for the JSON list of
    topics that dbus-mqtt took and dbus-flashmq does not support."""
    if not payload:
        return True
    try:
        doc = json.loads(payload)
    except ValueError:
        return True
    if isinstance(doc, list):
        return None
    if isinstance(doc, dict):
        options = doc.get("keepalive-options")
        if isinstance(options, list) and "suppress-republish" in options:
            return False
    return True


class VenusMqtt:
    """Publishes like dbus-flashmq. Faults, set at any time: `silent` (a hung service: nothing
    published, keepalives not acted on), `ignore_keepalive` (keepalives received but lost)."""

    def __init__(
        self,
        host: str,
        port: int,
        grid: Grid,
        portal_id: str = "c0619ab1d2e3",
        keepalive_timeout_s: float = 60.0,
        heartbeat_s: float = 3.0,
        interval_s: float = 1.0,
        meter_instance: int = 30,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.grid = grid
        self.portal_id = portal_id
        self.keepalive_timeout_s = keepalive_timeout_s
        self.heartbeat_s = heartbeat_s
        self.interval_s = interval_s
        self.meter_instance = meter_instance
        self.silent = False
        self.ignore_keepalive = False
        self.keepalives = 0  # messages received on the keepalive topics, acted on or not
        self.full_publishes = 0
        self.published = 0  # messages handed to the broker connection
        self.ignored_list_keepalives = 0
        self.connected = threading.Event()
        self._alive_until = 0.0
        self._last: dict[str, bytes] = {}  # topic -> payload last published
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="venus-sim-%s" % portal_id,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.5, 5)  # a GX comes back quickly after a broker restart
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def topic(self, path: str) -> str:
        return "N/%s/%s" % (self.portal_id, path)

    @property
    def alive(self) -> bool:
        return time.monotonic() < self._alive_until

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Connects in the background (and reconnects); `connected.wait(t)` to be sure."""
        self._stop.clear()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._worker = threading.Thread(target=self._run, name="venus-mqtt", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker:
            self._worker.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> VenusMqtt:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- MQTT callbacks (paho's thread) ---------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if rc.is_failure:
            return
        prefix = "R/%s/" % self.portal_id
        client.subscribe([(prefix + "keepalive", 0), (prefix + "system/0/Serial", 0)])
        with self._lock:
            self._alive_until = 0.0  # the plugin lives in the GX's broker: a restart forgets
            self._last.clear()
            self._publish(self.topic("system/0/Serial"), value(self.portal_id), retain=True)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, *args: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.keepalives += 1
            full = wants_full_publish(msg.payload)
            if full is None:
                self.ignored_list_keepalives += 1
                return
            if self.silent or self.ignore_keepalive:
                return
            self._alive_until = time.monotonic() + self.keepalive_timeout_s
            if full:
                self._full_publish()

    # -- publishing ------------------------------------------------------------------------

    def _values(self) -> dict[str, bytes]:
        """Every topic this service knows, with its current payload."""
        grid = self.grid()
        t = self.topic
        out = {t("system/0/Serial"): value(self.portal_id)}
        meter = "grid/%d/" % self.meter_instance
        for k in range(3):
            w = None if grid is None else float(grid[k])
            out[t("system/0/Ac/Grid/L%d/Power" % (k + 1))] = value(w)
            out[t(meter + "Ac/L%d/Power" % (k + 1))] = GONE if w is None else value(w)
        out[t("system/0/Ac/Grid/NumberOfPhases")] = value(None if grid is None else 3)
        out[t("system/0/Ac/Grid/DeviceType")] = value(None if grid is None else METER_DEVICE_TYPE)
        out[t("system/0/Ac/In/0/ServiceType")] = value(None if grid is None else "grid")
        out[t("system/0/Ac/In/0/DeviceInstance")] = value(
            None if grid is None else self.meter_instance
        )
        return out

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if self.silent:
            return
        info = self.client.publish(topic, payload, qos=0, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.published += 1
        self._last[topic] = payload

    def _full_publish(self) -> None:
        for topic, payload in self._values().items():
            if payload != GONE:  # a device that has gone is not republished
                self._publish(topic, payload, retain=topic.endswith("/system/0/Serial"))
        self._publish(self.topic("heartbeat"), value(int(time.time())))
        self._publish(self.topic("full_publish_completed"), value(int(time.time())))
        self.full_publishes += 1

    def _tick(self) -> None:
        """Once an interval, like dbus_systemcalc: publish what changed."""
        with self._lock:
            if self.silent or not self.alive:
                return
            for topic, payload in self._values().items():
                if payload == GONE and topic not in self._last:
                    continue  # never announced, so nothing to withdraw
                if self._last.get(topic) != payload:
                    self._publish(topic, payload, retain=topic.endswith("/system/0/Serial"))

    def _heartbeat(self) -> None:
        with self._lock:
            if not self.silent and self.alive:
                self._publish(self.topic("heartbeat"), value(int(time.time())))

    def _run(self) -> None:
        next_tick = next_beat = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                self._tick()
                next_tick = max(next_tick + self.interval_s, now)
            if now >= next_beat:
                self._heartbeat()
                next_beat = max(next_beat + self.heartbeat_s, now)
            self._stop.wait(max(0.0, min(next_tick, next_beat) - time.monotonic()))
