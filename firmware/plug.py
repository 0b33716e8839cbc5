"""A smart plug or relay in the charger's mains lead: the wear-free off switch for chargers
that cannot be switched off over VE.Direct. Shelly Gen2 (HTTP RPC), Tasmota (HTTP), or any
relay on MQTT (a command topic and a state topic); every switch is checked against the plug's
own answer."""

import asyncio
import json

MAX_REPLY = 2048


class PlugError(Exception):
    pass


async def http_get(host, path, timeout_s, port=80):
    """GET -> parsed JSON body; PlugError for anything but a 200 with JSON."""

    async def fetch():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
            await writer.drain()
            data = b""
            while len(data) < MAX_REPLY:
                chunk = await reader.read(512)
                if not chunk:
                    break
                data += chunk
            return data
        finally:
            writer.close()

    try:
        data = await asyncio.wait_for(fetch(), timeout_s)
    except asyncio.TimeoutError:
        raise PlugError("no answer from %s in %s s" % (host, timeout_s)) from None
    except OSError as err:
        raise PlugError("%s: %s" % (host, err)) from None
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise PlugError("%s answered %s" % (host, b" ".join(status[1:]).decode()))
    try:
        return json.loads(body)
    except ValueError:
        raise PlugError("%s: not JSON" % host) from None


def make(settings, mqtt=None):
    """The plug the config names; `mqtt()` gives the MQTT publisher (for type "mqtt")."""
    if settings["type"] == "mqtt":
        return MqttPlug(settings, mqtt)
    return Plug(settings)


class Plug:
    def __init__(self, settings):
        """`settings` is the config's "plug" section."""
        self.kind = settings["type"]
        self.host = settings["host"]
        self.port = settings["port"]
        self.timeout_s = settings["timeout_s"]
        self.on = None  # as the plug confirmed
        self.switches = 0
        self.errors = 0
        self.last_error = None

    @property
    def configured(self):
        return self.kind != "none" and bool(self.host)

    async def _get(self, path):
        return await http_get(self.host, path, self.timeout_s, self.port)

    async def read(self):
        if self.kind == "shelly":
            reply = await self._get("/rpc/Switch.GetStatus?id=0")
            return bool(reply["output"])
        reply = await self._get("/cm?cmnd=Power")
        return reply["POWER"] == "ON"

    async def switch(self, on):
        """True once the plug confirmed the new state."""
        try:
            if self.kind == "shelly":
                await self._get("/rpc/Switch.Set?id=0&on=%s" % ("true" if on else "false"))
                confirmed = await self.read()
            else:
                reply = await self._get("/cm?cmnd=Power%%20%s" % ("On" if on else "Off"))
                confirmed = reply.get("POWER") == "ON"
        except (PlugError, KeyError, TypeError) as err:
            self.errors += 1
            self.last_error = str(err)
            return False
        self.on = confirmed
        if confirmed != on:
            self.errors += 1
            self.last_error = "the plug stayed %s" % ("on" if confirmed else "off")
            return False
        self.switches += 1
        self.last_error = None
        return True

    def status(self):
        return {
            "type": self.kind,
            "host": self.host,
            "on": self.on,
            "switches": self.switches,
            "errors": self.errors,
            "last_error": self.last_error,
        }


ON_WORDS = ("on", "true", "1")
OFF_WORDS = ("off", "false", "0")
STATE_KEYS = ("output", "POWER", "state", "ison")  # Shelly Gen2, Tasmota, generic, Shelly Gen1


def parse_state(payload):
    """True/False from what plugs publish: ON/OFF, true/false, 1/0, or JSON carrying one of
    STATE_KEYS; None when it says neither."""
    try:
        text = payload.decode().strip() if isinstance(payload, bytes) else str(payload).strip()
    except UnicodeError:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        for key in STATE_KEYS:
            if isinstance(data, dict) and key in data:
                return parse_state(json.dumps(data[key]).strip('"'))
        return None
    if text.lower() in ON_WORDS:
        return True
    if text.lower() in OFF_WORDS:
        return False
    return None


class MqttPlug(Plug):
    """A relay on the user's broker: the command goes to `command_topic`, the switch counts
    only once `state_topic` says the new state."""

    def __init__(self, settings, mqtt):
        super().__init__(settings)
        self.mqtt = mqtt  # () -> the Mqtt publisher, or None
        self.command_topic = settings["command_topic"]
        self.state_topic = settings["state_topic"]
        self.payloads = {True: settings["payload_on"], False: settings["payload_off"]}
        self.host = self.command_topic
        self.heard = 0  # state messages received

    @property
    def configured(self):
        return bool(self.command_topic and self.state_topic)

    def on_state(self, payload):
        """A message on the state topic (the MQTT task calls this)."""
        state = parse_state(payload)
        if state is None:
            self.errors += 1
            self.last_error = "state topic: not a state: %r" % (payload[:40],)
            return
        self.on = state
        self.heard += 1

    async def _await_state(self, wanted, since):
        loops = int(self.timeout_s * 20)
        for _ in range(loops):
            if self.heard != since and (wanted is None or self.on == wanted):
                return self.on
            await asyncio.sleep(0.05)
        raise PlugError("no state on %s in %s s" % (self.state_topic, self.timeout_s))

    def _session(self):
        publisher = self.mqtt() if self.mqtt else None
        session = publisher.session if publisher is not None else None
        if session is None or not session.connected:
            raise PlugError("the MQTT broker (mqtt.host) is not connected")
        return session

    async def read(self):
        if self.heard:
            return self.on
        self._session()
        return await self._await_state(None, 0)  # a retained state arrives on subscribing

    async def switch(self, on):
        try:
            since = self.heard
            if not self._session().publish(self.command_topic, self.payloads[on]):
                raise PlugError("publishing to %s failed" % self.command_topic)
            await self._await_state(on, since)
        except PlugError as err:
            self.errors += 1
            self.last_error = str(err)
            return False
        self.switches += 1
        self.last_error = None
        return True
