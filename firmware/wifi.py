"""WiFi: join the home network; without one that works, open the board's own access point so
the status page and the settings form can be reached (http://192.168.4.1/).

- no `wifi.ssid`: access point only;
- an SSID that does not connect within AP_AFTER_S: the access point opens beside the station,
  which keeps retrying with a growing back-off;
- once the station is up for CLOSE_AP_AFTER_S: the access point closes;
- new WiFi settings (saved from the form) take effect without a restart.
The radio belongs to the board layer (board_esp32.Esp32Radio, board_host.HostRadio): it has
connect(ssid, key), disconnect(), isconnected(), ip(), rssi(), status(),
access_point(on, ssid, key) and mac().
"""

import asyncio

from ticks import ticks_diff, ticks_ms

AP_AFTER_S = 60  # a station that has not connected by then: the access point opens too
CLOSE_AP_AFTER_S = 30  # the station has been up this long: the access point closes
RETRY_S = 5
RETRY_MAX_S = 300
AP_PREFIX = "IP22-"


def ap_name(mac):
    """IP22-1A2B: the last two bytes of the board's MAC, as printed by tools/flash.py."""
    return AP_PREFIX + "".join("%02X" % b for b in mac[-2:])


def ap_password(config, unique):
    """The configured one (tools/flash.py writes a random one and prints it); else derived
    from the board's id: 12 characters, WPA2 needs at least 8."""
    if len(config["wifi"]["ap_password"]) >= 8:
        return config["wifi"]["ap_password"]
    import hashlib
    from binascii import hexlify

    return hexlify(hashlib.sha256(b"ip22-ap" + unique).digest()).decode()[:12]


class Supervisor:
    def __init__(self, radio, config, log):
        self.radio = radio
        self.config = config  # the Config object: its values change when the form saves
        self.log = log
        self.joined = None  # (ssid, key) the station was told to join
        self.down_since = None  # the station has been down since (the access point's clock)
        self.tried_ms = None  # the last hard reconnect (the back-off's clock)
        self.up_since = None
        self.backoff = RETRY_S
        self.ap_on = False
        self.state = {"mode": "starting", "connected": False, "ssid": None, "ip": None}

    def _ap(self, on):
        if on == self.ap_on:
            return
        name = ap_name(self.radio.mac())
        self.radio.access_point(on, name, ap_password(self.config, self.radio.mac()))
        self.ap_on = on
        self.state["ap_ssid"] = name if on else None
        where = " (stand-in: this host has no radio)" if getattr(self.radio, "stand_in", 0) else ""
        self.log(
            "access point %s %s%s" % (name, "open: http://192.168.4.1/" if on else "closed", where)
        )

    def step(self, now):
        """One second of supervision; returns nothing, keeps `state` for the status."""
        if getattr(self.radio, "wired", False):  # the Venus OS service: the GX's own network
            self.state.update(mode="wired", connected=True, ip=self.radio.ip(),
                              note=self.radio.status())
            return
        w = self.config["wifi"]
        wanted = (w["ssid"], w["password"]) if w["ssid"] else None
        if wanted != self.joined:
            if self.joined:
                self.radio.disconnect()
            if wanted:
                self.log("WiFi: joining %s" % wanted[0])
                self.radio.connect(*wanted)
            self.joined = wanted
            self.down_since = self.tried_ms = now
            self.up_since = None
            self.backoff = RETRY_S
        if not wanted:
            self._ap(True)
        elif self.radio.isconnected():
            if self.up_since is None:
                self.up_since = now
                self.log("WiFi connected to %s, %s" % (wanted[0], self.radio.ip()))
            self.down_since = None
            self.backoff = RETRY_S
            if self.ap_on and ticks_diff(now, self.up_since) >= CLOSE_AP_AFTER_S * 1000:
                self._ap(False)
        else:
            if self.up_since is not None:
                self.log("WiFi lost")
                self.up_since = None
                self.down_since = self.tried_ms = now
            if ticks_diff(now, self.down_since) >= AP_AFTER_S * 1000:
                self._ap(True)
            if ticks_diff(now, self.tried_ms) >= self.backoff * 1000:
                self.radio.disconnect()  # the IDF retries by itself; this is the hard way
                self.radio.connect(*wanted)
                self.tried_ms = now
                self.backoff = min(self.backoff * 2, RETRY_MAX_S)
        up = bool(wanted) and self.up_since is not None
        s = self.state
        s["ssid"] = wanted[0] if wanted else None
        s["connected"] = up
        s["ip"] = self.radio.ip() if up else None
        s["rssi"] = self.radio.rssi() if up else None
        s["mode"] = ("station+ap" if self.ap_on else "station") if up else (
            "ap" if self.ap_on else "connecting")
        s["note"] = self.radio.status() if wanted and not up else (
            "connected" if up else "no WiFi configured: access point")

    async def run(self):
        while True:
            self.step(ticks_ms())
            await asyncio.sleep(1)
