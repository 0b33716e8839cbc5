"""wifi.Supervisor: the access point when there is no working home WiFi, the station when
there is, new settings without a restart. The radio is scripted (no ESP32 here); on the Unix
port the firmware runs with HostRadio, checked end to end at the bottom."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import config
from app import Config
import wifi
from fwrun import Background, Firmware, make_world


class ScriptedRadio:
    """Connects only when `reachable`; records every call."""

    def __init__(self, reachable: bool = True) -> None:
        self.reachable = reachable
        self.joined: str | None = None
        self.calls: list[str] = []
        self.ap: tuple[str, str] | None = None

    def connect(self, ssid: str, key: str) -> None:
        self.calls.append("connect " + ssid)
        self.joined = ssid

    def disconnect(self) -> None:
        self.calls.append("disconnect")
        self.joined = None

    def isconnected(self) -> bool:
        return self.reachable and self.joined is not None

    def ip(self) -> str:
        return "192.168.1.50"

    def rssi(self) -> int:
        return -61

    def status(self) -> str:
        return "status 201"

    def access_point(self, on: bool, ssid: str, key: str) -> None:
        self.calls.append("ap %s" % ("on" if on else "off"))
        self.ap = (ssid, key) if on else None

    def mac(self) -> bytes:
        return b"\x34\x85\x18\x00\xbe\xef"


def supervisor(radio: ScriptedRadio, **wifi_values: Any) -> wifi.Supervisor:
    values = config.defaults()
    values["wifi"].update(wifi_values)
    return wifi.Supervisor(radio, Config(values), lambda line: None)


def run(sup: wifi.Supervisor, seconds: int, start: int = 0) -> int:
    for t in range(start, start + seconds):
        sup.step(t * 1000)
    return start + seconds


def test_no_ssid_opens_the_access_point() -> None:
    radio = ScriptedRadio()
    sup = supervisor(radio)
    run(sup, 3)
    assert sup.state["mode"] == "ap"
    assert radio.ap is not None and radio.ap[0] == "IP22-BEEF"
    assert len(radio.ap[1]) >= 8  # WPA2
    assert "connect" not in " ".join(radio.calls)


def test_a_working_station_needs_no_access_point() -> None:
    radio = ScriptedRadio()
    sup = supervisor(radio, ssid="home", password="secret123")
    run(sup, 120)
    assert sup.state["mode"] == "station" and sup.state["ip"] == "192.168.1.50"
    assert radio.ap is None and sup.state["rssi"] == -61


def test_a_failing_station_opens_the_access_point_then_closes_it() -> None:
    radio = ScriptedRadio(reachable=False)
    sup = supervisor(radio, ssid="home", password="wrong-one")
    t = run(sup, wifi.AP_AFTER_S)
    assert radio.ap is None  # not yet
    t = run(sup, 2, t)
    assert radio.ap is not None and sup.state["mode"] == "ap"
    t = run(sup, 600, t)
    reconnects = radio.calls.count("connect home")
    assert 4 <= reconnects <= 9, radio.calls  # back-off 5, 10, 20 ... 300 s, not every second
    radio.reachable = True
    t = run(sup, wifi.CLOSE_AP_AFTER_S - 2, t)
    assert radio.ap is not None and sup.state["mode"] == "station+ap"
    run(sup, 3, t)
    assert radio.ap is None and sup.state["mode"] == "station"


def test_new_settings_apply_without_a_restart() -> None:
    radio = ScriptedRadio()
    sup = supervisor(radio)
    t = run(sup, 2)
    sup.config.values["wifi"]["ssid"] = "home"
    sup.config.values["wifi"]["password"] = "secret123"
    run(sup, wifi.CLOSE_AP_AFTER_S + 2, t)
    assert "connect home" in radio.calls
    assert sup.state["mode"] == "station" and radio.ap is None


def test_access_point_password() -> None:
    values = config.defaults()
    values["wifi"]["ap_password"] = "printed-by-flash"
    assert wifi.ap_password(values, b"\x01\x02") == "printed-by-flash"
    values["wifi"]["ap_password"] = "short"  # WPA2 needs 8: the derived one instead
    derived = wifi.ap_password(values, b"\x01\x02")
    assert len(derived) == 12 and derived == wifi.ap_password(values, b"\x01\x02")
    assert derived != wifi.ap_password(values, b"\x01\x03")


def test_firmware_asks_for_the_access_point_without_wifi_settings(tmp_path: Path) -> None:
    """On the Unix port the board's WiFi stand-in reports the mode the firmware asked for."""
    with Background(make_world()) as sim:
        with Firmware(
            tmp_path, sim.endpoints["charger"], {}, extra=("--admin-password", "pw")
        ) as fw:
            st = fw.wait_for(lambda st: st["wifi"]["mode"] == "ap", 10, "access point")
            assert st["wifi"]["ap_ssid"].startswith("IP22-")
            body = json.dumps({"wifi": {"ssid": "home", "password": "secret123"}}).encode()
            request = urllib.request.Request(
                "http://127.0.0.1:%d/api/config" % fw.port,
                data=body,
                headers={"Authorization": "Bearer pw", "Content-Type": "application/json"},
            )
            answer = json.load(urllib.request.urlopen(request, timeout=10))
            assert answer["saved"] and answer["restart_needed"] == []
            st = fw.wait_for(lambda st: st["wifi"]["connected"], 10, "the station")
            assert st["wifi"]["ssid"] == "home"
            wait = wifi.CLOSE_AP_AFTER_S + 5
            fw.wait_for(
                lambda st: st["wifi"]["mode"] == "station", wait, "the access point closed"
            )
