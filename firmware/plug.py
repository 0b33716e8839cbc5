"""A smart plug or relay in the charger's mains lead: the wear-free off switch for chargers
that cannot be switched off over VE.Direct. Shelly Gen2 (HTTP RPC) or Tasmota (HTTP); every
switch is checked against the plug's own answer."""

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
