"""MQTT end to end: the firmware on the MicroPython Unix port, the simulated charger, a real
mosquitto; Home Assistant's side played by paho-mqtt. Also the Venus OS MQTT grid source against
the Venus stand-in (tools/sim/venus_mqtt.py) through the same broker."""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as paho
from broker import AUTH_USERS, mosquitto_auth_fixture, mosquitto_fixture  # noqa: F401
from fwrun import Background, Firmware, make_world

from tools.mosquitto import Mosquitto
from tools.sim.venus_mqtt import VenusMqtt

SERIAL = "HQ2230XY6XR"  # the simulator's
BASE = "ip22/" + SERIAL


class Watcher:
    """A subscriber that keeps every message: what Home Assistant or Node-RED would see."""

    def __init__(self, broker: Mosquitto, topic: str = "#", **login: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        if login:
            self.client.username_pw_set(login["user"], login["password"])
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(topic)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            for t, payload, _ in reversed(self.messages):
                if t == topic:
                    return payload
        return None

    def topics(self, prefix: str = "") -> dict[str, bytes]:
        with self.lock:
            return {t: p for t, p, _ in self.messages if t.startswith(prefix)}

    def count(self, topic: str) -> int:
        with self.lock:
            return sum(1 for t, _, _ in self.messages if t == topic)

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError("timed out waiting for " + what)

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_config(broker: Mosquitto, **mqtt: Any) -> dict[str, Any]:
    section = {"host": broker.host, "port": broker.port, "update_s": 1.0}
    section.update(mqtt)
    return {"mqtt": section}


def state(watcher: Watcher) -> dict[str, Any] | None:
    payload = watcher.last(BASE + "/state")
    return json.loads(payload) if payload else None


def truth(sim: Background) -> dict[str, Any]:
    return sim.call(lambda: sim.world.status())


def test_state_discovery_and_commands(tmp_path: Path, mosquitto: Mosquitto) -> None:
    watcher = Watcher(mosquitto)
    with Background(make_world()) as sim, Firmware(
        tmp_path, sim.endpoints["charger"], mqtt_config(mosquitto)
    ) as fw:
        watcher.wait(lambda: watcher.last(BASE + "/status") == b"online", 20, "online")
        s = watcher.wait(lambda: state(watcher), 10, "the state")

        # the state follows the simulator
        def close_to_sim() -> bool:
            s, sim_charger = state(watcher), truth(sim)["charger"]
            return bool(
                s
                and s["battery_v"] is not None
                and abs(s["battery_v"] - sim_charger["voltage_v"]) < 0.1
                and s["charger_state"] == sim_charger["state"]
                and s["link"] == "ON"
            )

        watcher.wait(close_to_sim, 10, "the state to match the simulator")
        # each value on its own topic too (published after the state: it can come a moment later)
        watcher.wait(lambda: watcher.last(BASE + "/battery_v") is not None, 10, "battery_v")
        assert s["mode"] == "off"

        # discovery: retained, one config per entity, for a subscriber that comes later
        late = Watcher(mosquitto, "homeassistant/#")
        configs = late.wait(lambda: len(late.topics()) >= 23 and late.topics(), 10, "discovery")
        late.close()
        for topic, payload in configs.items():
            entity = json.loads(payload)
            assert entity["avty_t"] == BASE + "/status", topic
            assert entity["dev"]["ids"] == ["ip22_" + SERIAL]
            assert entity["uniq_id"].startswith("ip22_%s_" % SERIAL)
        number = json.loads(configs["homeassistant/number/ip22_%s/manual_a/config" % SERIAL])
        assert (number["min"], number["max"]) == (3.0, 12.0)  # the 24/12's range, from it
        assert number["cmd_t"] == BASE + "/set/current"
        assert "24/12" in number["dev"]["mdl"]  # announced after the probe: model known
        assert fw.status()["mqtt"]["announcements"] == 1  # once, complete: not again moments later
        # the number's state is in its announced range (the setting's 0.0 is under 3 A)
        watcher.wait(lambda: (state(watcher) or {}).get("manual_a") == 3.0, 10, "manual_a 3")

        # Home Assistant restarted (its birth message): discovery again within 5 s
        topic = "homeassistant/select/ip22_%s/mode/config" % SERIAL
        before = watcher.count(topic)
        watcher.publish("homeassistant/status", "online")
        watcher.wait(lambda: watcher.count(topic) > before, 10, "rediscovery after HA's birth")

        # a current outside the range (Node-RED, not HA's number): clamped, on the 0.1 A step
        watcher.publish(BASE + "/set/current", "1")
        fw.wait_for(lambda st: fw.status()["mqtt"]["commands"] >= 1, 10, "the command")
        assert json.loads(fw.config_path.read_text())["control"]["manual_current_a"] == 3.0
        watcher.publish(BASE + "/set/current", "4.96")
        watcher.wait(lambda: (state(watcher) or {}).get("manual_a") == 5.0, 10, "manual_a 5")

        # commands: manual 5 A -> the charger confirms a 5 A limit
        watcher.publish(BASE + "/set/current", "5")
        watcher.publish(BASE + "/set/mode", "manual")
        fw.wait_for(lambda st: st["control"]["mode"] == "manual", 10, "manual mode")
        fw.wait_for(lambda st: st["charger"]["limit_a"] == 5.0, 15, "5 A confirmed")
        assert truth(sim)["charger"]["effective_limit_a"] == 5.0
        watcher.wait(lambda: (state(watcher) or {}).get("manual_a") == 5.0, 10, "manual_a")
        watcher.wait(lambda: (state(watcher) or {}).get("limit_a") == 5.0, 10, "limit_a")

        # the values in force, again (an automation repeating itself): accepted, not saved
        saved = fw.config_path.stat().st_ino  # a save replaces the file (atomic rename)
        for payload in ("5", "5.0", "manual", "MANUAL"):
            topic = "/set/mode" if payload.isalpha() else "/set/current"
            watcher.publish(BASE + topic, payload)
        st = fw.wait_for(lambda st: st["mqtt"]["commands"] >= 8, 10, "four more commands")
        assert st["mqtt"]["refused"] == 0 and fw.config_path.stat().st_ino == saved

        # manual mode's on/off (what the GX's /Mode switch sends through its bridge): OFF
        # holds the charger off, ON charges again at the manual current
        watcher.publish(BASE + "/set/charging", "OFF")
        fw.wait_for(lambda st: st["control"]["manual_charging"] is False, 10, "held off")
        fw.wait_for(lambda st: st["control"]["charging"] is False, 15, "the charger off")
        watcher.wait(lambda: (state(watcher) or {}).get("manual_charging") == "OFF", 10, "OFF")
        watcher.publish(BASE + "/set/charging", "on")
        fw.wait_for(lambda st: st["control"]["charging"] is True, 15, "charging again")
        st = fw.wait_for(lambda st: st["mqtt"]["commands"] >= 10, 10, "two more commands")
        refused_before = st["mqtt"]["refused"]
        assert refused_before == 0

        # malformed commands: refused, counted, nothing changes, nothing crashes
        for topic, payload in (
            ("/set/charging", "maybe"),
            ("/set/current", "abc"),
            ("/set/current", "nan"),
            ("/set/current", "inf"),
            ("/set/current", ""),
            ("/set/mode", "turbo"),
            ("/set/mode", b"\xff\xfe"),
            ("/set/mode", "x" * 5000),
            ("/set/launch", "now"),
            ("/set/reboot", "yes"),
        ):
            watcher.publish(BASE + topic, payload)
        st = fw.wait_for(lambda st: st["mqtt"]["refused"] >= 9, 10, "nine refusals")
        assert st["mqtt"]["refused"] == 9
        assert st["mqtt"]["too_long"] == 1  # the 5000 B one: skipped unread, never on the heap
        assert st["control"]["mode"] == "manual"
        assert st["charger"]["limit_a"] == 5.0
        assert "refused" in "\n".join(st["log"])
        assert fw.proc is not None and fw.proc.poll() is None

        # a reboot right after connecting may be a retained message: refused too
        watcher.publish(BASE + "/set/reboot", "PRESS")
        st = fw.wait_for(lambda st: st["mqtt"]["refused"] >= 10, 10, "the early reboot refused")
        assert "retained" in st["mqtt"]["last_refused"]
    watcher.close()


def test_discovery_off_removes_the_entities(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with Background(make_world()) as sim:
        # with commands off, Home Assistant gets no controls (they would do nothing)
        config = mqtt_config(mosquitto, commands=False)
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            fw.wait_for(lambda st: st["mqtt"]["announcements"] >= 1, 20, "discovery sent")
            late = Watcher(mosquitto, "homeassistant/#")
            configs = late.wait(lambda: len(late.topics()) >= 20 and late.topics(), 5, "configs")
            late.close()
            assert len(configs) == 20 and not [p for p in configs.values() if b"cmd_t" in p]
        config = mqtt_config(mosquitto, discovery=False)
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            fw.wait_for(lambda st: st["mqtt"]["announcements"] >= 1, 20, "removals sent")
            late = Watcher(mosquitto, "homeassistant/#")
            time.sleep(1.5)
            assert late.topics() == {}  # no retained config left: the entities are gone
            late.close()


def test_broker_lost_and_frozen_never_stall_the_link(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with Background(make_world()) as sim, Firmware(
        tmp_path, sim.endpoints["charger"], mqtt_config(mosquitto)
    ) as fw:
        fw.wait_for(lambda st: st["mqtt"]["connected"], 20, "connected")

        def frame_rate(seconds: float) -> float:
            """Charger frames per second; the controller must have decided all along."""
            first = fw.status()
            time.sleep(seconds)
            last = fw.status()
            steps = last["control"]["steps"] - first["control"]["steps"]
            assert steps >= 0.8 * seconds / 0.25, "the controller stalled: %d steps" % steps
            return (last["counters"]["frames_ok"] - first["counters"]["frames_ok"]) / seconds

        time.sleep(10)  # past the link's start-up burst of requests and answers
        normal = frame_rate(10)

        # killed: a status line and a counter, then a reconnect when it is back
        mosquitto.kill()
        st = fw.wait_for(lambda st: not st["mqtt"]["connected"], 20, "the loss noticed")
        assert st["mqtt"]["last_error"]
        assert frame_rate(4) > 0.8 * normal
        mosquitto.restart()
        fw.wait_for(lambda st: st["mqtt"]["connects"] >= 2, 30, "reconnected")

        # frozen (SIGSTOP): pings go unanswered, the link keeps its frame rate
        mosquitto.freeze()
        try:
            frozen = frame_rate(20)
            st = fw.wait_for(lambda st: not st["mqtt"]["connected"], 20, "the freeze noticed")
            frozen_status = fw.status()
        finally:
            mosquitto.thaw()
        longest = frozen_status["mqtt"]["longest_block_ms"]
        print(
            "frame rate %.1f/s normal, %.1f/s with a frozen broker; longest MQTT block %d ms"
            % (normal, frozen, longest)
        )
        assert frozen > 0.9 * normal
        assert longest < 500  # under the parser's gap reset: no frame lost to a stall
        assert frozen_status["counters"]["task_restarts"] == 0
        fw.wait_for(lambda st: st["mqtt"]["connected"], 60, "back after the thaw")


def test_password_broker(tmp_path: Path, mosquitto_auth: Mosquitto) -> None:
    user, password = next(iter(AUTH_USERS.items()))
    with Background(make_world()) as sim:
        bad = mqtt_config(mosquitto_auth, user=user, password="wrong")
        with Firmware(tmp_path, sim.endpoints["charger"], bad) as fw:
            st = fw.wait_for(lambda st: st["mqtt"]["failures"] >= 1, 20, "refused")
            assert not st["mqtt"]["connected"]
            assert "wrong" not in json.dumps(st)
        good = mqtt_config(mosquitto_auth, user=user, password=password)
        watcher = Watcher(mosquitto_auth, user=user, password=password)
        with Firmware(tmp_path, sim.endpoints["charger"], good) as fw:
            fw.wait_for(lambda st: st["mqtt"]["connected"], 20, "connected with the password")
            watcher.wait(lambda: state(watcher), 10, "the state")
            with_secret = [t for t, p, _ in watcher.messages if password.encode() in p]
            assert with_secret == []  # the password is never published
            url = "http://127.0.0.1:%d/api/config" % fw.port
            config_api = json.loads(urllib.request.urlopen(url).read())
            assert config_api["config"]["mqtt"]["password"] == "***"
        watcher.close()


def gx(world: Any, broker: Mosquitto, **options: Any) -> VenusMqtt:
    """The Venus MQTT stand-in, publishing the simulated world's grid through `broker`."""
    venus = world.venus
    stand_in = VenusMqtt(
        broker.host,
        broker.port,
        lambda: tuple(venus.last.grid_w),
        portal_id=venus.serial,
        heartbeat_s=1.0,
        **options,
    )
    stand_in.start()
    return stand_in


def test_venus_mqtt_grid_source(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Grid power from the GX's broker: portal id discovered, kept alive, stale -> safe."""
    world = make_world()
    world.profile = lambda t: (1500.0, 300.0)
    with Background(world) as sim:
        venus = world.venus
        stand_in = gx(world, mosquitto)
        config = {
            "control": {"mode": "auto", "stale_s": 5},
            "venus": {"host": mosquitto.host, "protocol": "mqtt", "mqtt_port": mosquitto.port},
        }
        try:
            with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
                st = fw.wait_for(
                    lambda st: st["grid"]["power_w"] is not None, 30, "grid power over MQTT"
                )
                assert st["grid"]["portal_id"] == venus.serial  # discovered
                assert stand_in.full_publishes >= 1  # the first keepalive asked for everything

                # it follows the simulated grid, and the controller charges from it
                fw.wait_for(
                    lambda st: st["charger"]["current_a"] and st["charger"]["current_a"] > 5,
                    30,
                    "charging from the surplus",
                )

                def agrees(st: dict[str, Any]) -> bool:
                    grid = st["grid"]["power_w"]
                    return grid is not None and abs(grid - truth(sim)["grid_total_w"]) < 60

                fw.wait_for(agrees, 15, "the grid value to match the simulator")

                # the GX stops publishing: stale -> the safe state, then back by itself
                stand_in.silent = True
                st = fw.wait_for(lambda st: st["control"]["safe"], 15, "the safe state")
                assert "grid data" in st["control"]["reason"]
                stand_in.silent = False
                fw.wait_for(lambda st: not st["control"]["safe"], 20, "recovered")
        finally:
            stand_in.stop()


def test_venus_mqtt_needs_the_keepalive(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A GX that only publishes while kept alive: with keepalives ignored it falls silent and
    the controller goes safe; the firmware's keepalives are what keeps it talking."""
    world = make_world()
    world.profile = lambda t: (1500.0, 300.0)
    with Background(world) as sim:
        venus = world.venus
        stand_in = gx(world, mosquitto, keepalive_timeout_s=5.0)
        config = {
            "control": {"mode": "auto", "stale_s": 5},
            "venus": {
                "host": mosquitto.host,
                "protocol": "mqtt",
                "mqtt_port": mosquitto.port,
                "portal_id": venus.serial,
                "keepalive_s": 2,
            },
        }
        try:
            with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
                fw.wait_for(lambda st: st["grid"]["power_w"] is not None, 30, "grid power")
                time.sleep(12)  # more than twice the GX's timeout: kept alive all along
                st = fw.status()
                assert not st["control"]["safe"], st["control"]
                assert st["grid"]["age_s"] < 3
                assert stand_in.keepalives >= 5
                stand_in.ignore_keepalive = True  # as if our keepalives never arrived
                st = fw.wait_for(lambda st: st["control"]["safe"], 20, "the safe state")
                assert "grid data" in st["control"]["reason"]
        finally:
            stand_in.stop()


def test_heap_flat_over_thousands_of_publishes(tmp_path: Path) -> None:
    """tools/bench_mqtt.py on the Unix port: the figures are printed; the heap must not grow."""
    from broker import broker  # a missing mosquitto fails in CI, skips elsewhere

    broker(tmp_path)  # only the check; the bench starts its own
    from tools.bench_mqtt import run

    r = run(3000)
    print("MQTT: %(per_second)d publishes/s, heap %(heap_before)d -> %(heap_after)d B" % r)
    assert r["publish_errors"] == 0
    assert abs(r["heap_growth"]) < 512, r  # flat: no per-publish leak
    assert r["mpy_bytes"]["mqtt.mpy"] < 8192


def test_relay_on_mqtt_is_the_off_switch(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A charger without an off switch over VE.Direct, behind a Tasmota-style relay on MQTT:
    off at night, on with surplus, each switch confirmed by the relay's state topic."""
    from tools.sim.mqtt_plug import MqttRelay

    world = make_world(volatile="absent", device_mode="absent")
    world.profile = lambda t: (0.0, 300.0)
    with Background(world) as sim:
        relay = MqttRelay(
            mosquitto.host,
            mosquitto.port,
            lambda on: sim.call(lambda: world.charger.set_mains(on, world.now)),
            lambda: world.charger.mains,
        ).start()
        host, port = sim.endpoints["venus"].rsplit(":", 1)
        config = mqtt_config(mosquitto)
        config["control"] = {"mode": "auto", "stale_s": 5}
        config["venus"] = {"host": host, "port": int(port)}
        config["plug"] = {
            "type": "mqtt",
            "command_topic": relay.command_topic,
            "state_topic": relay.state_topic,
        }
        try:
            with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
                # the relay's state can arrive a control step before the switch is taken
                # as done: wait for both
                fw.wait_for(
                    lambda st: st["plug"]
                    and st["plug"]["on"] is False
                    and st["control"]["powered_off"] is True,
                    40,
                    "off",
                )
                assert not truth(sim)["charger"]["mains"]
                sim.call(lambda: setattr(world, "profile", lambda t: (800.0, 300.0)))
                fw.wait_for(lambda st: st["plug"]["on"] is True, 30, "on with surplus")
                assert truth(sim)["charger"]["mains"]
                fw.wait_for(
                    lambda st: (st["charger"]["current_a"] or 0) > 8, 40, "charging after power-up"
                )
                st = fw.status()
                assert st["plug"]["switches"] == 2 and st["plug"]["errors"] == 0

                # a relay that switches but never reports: the switch is not believed
                relay.mute = True
                sim.call(lambda: setattr(world, "profile", lambda t: (0.0, 300.0)))
                st = fw.wait_for(lambda st: st["plug"]["errors"] >= 1, 40, "unconfirmed switch")
                assert "no state" in st["plug"]["last_error"]
                assert "Traceback" not in fw.read_log()
        finally:
            relay.stop()


def certificates(directory: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl, Debian's)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing (./dev test installs it)"
    ca, ca_key = directory / (name + ".pem"), directory / (name + ".key")
    cert, key = directory / "server.pem", directory / "server.key"
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=" + name, "-keyout", str(ca_key), "-out", str(ca)])  # fmt: skip
    if name != "ca":
        return ca, cert, key
    csr = directory / "server.csr"
    run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(csr)])  # fmt: skip
    ext = directory / "ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)])  # fmt: skip
    return ca, cert, key


def test_tls_with_the_users_ca(tmp_path: Path) -> None:
    """`mqtt.ca_file`: TLS to the broker, its certificate checked against that CA (PEM); a
    broker signed by another CA is refused."""
    from broker import broker

    tls = certificates(tmp_path)
    stranger, _, _ = certificates(tmp_path, "stranger")
    with broker(tmp_path / "tls-broker", tls=tls) as mosquitto, Background(make_world()) as sim:
        config = mqtt_config(mosquitto, ca_file=str(tls[0]))
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            st = fw.wait_for(lambda st: st["mqtt"]["connected"], 30, "a TLS connection")
            fw.wait_for(lambda st: st["mqtt"]["published"] > 20, 10, "publishing over TLS")
        config = mqtt_config(mosquitto, ca_file=str(stranger))
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            st = fw.wait_for(lambda st: st["mqtt"]["failures"] >= 1, 30, "the wrong CA refused")
            assert not st["mqtt"]["connected"]
            assert "signed" in st["mqtt"]["last_error"] or "cert" in st["mqtt"]["last_error"]


class RefusingBroker:
    """Just enough of a broker to refuse one subscription (SUBACK 0x80), as EMQX, HiveMQ or
    FlashMQ do for a filter their ACL denies (mosquitto 2.0.11 grants every one)."""

    def __init__(self, deny: bytes) -> None:
        self.deny = deny
        self.connects = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while (first := f.read(1)) and first[0] >> 4 != 14:  # until DISCONNECT or EOF
                size, shift = 0, 0
                while True:
                    byte = f.read(1)[0]
                    size |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = f.read(size)
                kind = first[0] >> 4
                if kind == 1:
                    self.connects += 1
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind == 8:
                    topic = body[4 : 4 + (body[2] << 8 | body[3])]
                    code = b"\x80" if topic == self.deny else b"\0"
                    conn.sendall(b"\x90\x03" + body[:2] + code)
                elif kind == 12:
                    conn.sendall(b"\xd0\x00")

    def close(self) -> None:
        self.server.close()


def test_a_refused_subscription_backs_off(tmp_path: Path) -> None:
    """A broker that accepts the login but refuses one subscription: the setup failed, so the
    reconnects back off (1, 2, 5 s ...) instead of five a second."""
    b = RefusingBroker(b"homeassistant/status")
    config = {"mqtt": {"host": "127.0.0.1", "port": b.port, "update_s": 1.0}}
    try:
        with Background(make_world()) as sim, Firmware(
            tmp_path, sim.endpoints["charger"], config
        ) as fw:
            fw.wait_for(lambda st: st["mqtt"]["failures"] >= 1, 15, "the setup failed")
            time.sleep(5)
            st = fw.status()["mqtt"]
    finally:
        b.close()
    assert 2 <= b.connects <= 4, (b.connects, st)  # at 0, 1, 3 (and 8) s; without: ~30
    assert st["failures"] == st["connects"] == b.connects and "subscribe" in st["last_error"], st


def test_non_ascii_login_topic_and_a_huge_retained_command(tmp_path: Path) -> None:
    """umqtt counts str characters: the user, password, client id and will topic go as UTF-8
    bytes, or the CONNECT is malformed. A retained 1.9 MB command is skipped in pieces, never
    read whole (a MemoryError and a reconnect for ever)."""
    from broker import broker

    login = {"user": "hä", "password": "Grüße€"}
    base = "ladegerät/garage"
    with broker(tmp_path / "auth", {login["user"]: login["password"]}) as b:
        watcher = Watcher(b, base + "/#", **login)
        watcher.publish(base + "/set/mode", b"x" * 1_900_000, retain=True)
        config = mqtt_config(b, base_topic=base, client_id="ip22-gärage", **login)
        with Background(make_world()) as sim, Firmware(
            tmp_path, sim.endpoints["charger"], config
        ) as fw:
            watcher.wait(lambda: watcher.last(base + "/status") == b"online", 20, "online")
            watcher.wait(lambda: watcher.last(base + "/state"), 10, "the state")
            st = fw.wait_for(lambda st: st["mqtt"]["too_long"] >= 1, 10, "the big one skipped")
            time.sleep(2)
            st = fw.status()
            assert st["mqtt"]["connected"] and st["mqtt"]["connects"] == 1, st["mqtt"]
            assert st["mqtt"]["too_long"] == 1 and st["mqtt"]["failures"] == 0
            assert st["counters"]["task_restarts"] == 0
            assert "MemoryError" not in fw.read_log()
        # the will, on a topic with an "ä": the broker publishes it when we vanish unclean
        watcher.wait(lambda: watcher.last(base + "/status") == b"offline", 5, "offline")
        watcher.close()


def run_micropython(script: str, timeout: float = 30) -> str:
    """`script` on the Unix port with the firmware's modules and umqtt on the path."""
    from conftest import FIRMWARE, need_tool
    from fwrun import staged_lib

    env = {"MICROPYPATH": "%s:%s:.frozen" % (FIRMWARE, staged_lib()), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [need_tool("micropython"), "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_pings_while_receiving_all_the_time(mosquitto: Mosquitto) -> None:
    """The broker drops a client that sends nothing for 1.5 keepalives, however much it
    receives: a chatty subscription must not stop the pings. mqttlink's clock runs 12 s fast
    forward while a publisher keeps the subscription busy."""
    stop = threading.Event()
    watcher = Watcher(mosquitto, "nothing")

    def chatter() -> None:
        while not stop.is_set():
            watcher.publish("chat", "ON")
            time.sleep(0.02)

    threading.Thread(target=chatter, daemon=True).start()
    script = """
import time, mqttlink
real, offset = mqttlink.ticks_ms, [0]
mqttlink.ticks_ms = lambda: real() + offset[0]
s = mqttlink.Session("t", "%s", %d, "chatty", print)
s.tend(lambda s: s.subscribe("chat"))
pinged = False
for _ in range(40):
    time.sleep_ms(30)
    offset[0] += 300
    s.tend(lambda s: None)
    pinged = pinged or s.ping_ms is not None
print("connected", s.connected, "pinged", pinged, "received", s.counters["received"])
""" % (mosquitto.host, mosquitto.port)
    try:
        out = run_micropython(script)
    finally:
        stop.set()
        watcher.close()
    assert "connected True pinged True" in out, out
    assert int(out.split()[-1]) > 10, out  # it was busy receiving all along
    assert "Received PINGREQ from chatty" in mosquitto.log_tail(400)


def test_bad_topics_are_refused_with_a_reason(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A wildcard base topic would be dropped by the broker on every publish; a plug state
    topic over 122 bytes makes umqtt write a malformed SUBSCRIBE. Both are named where the
    settings are read (safe mode, nothing sent) and refused where they are changed."""
    config = mqtt_config(mosquitto, base_topic="garage/+/ip22")
    with Background(make_world()) as sim:
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            st = fw.status()
            assert st["config"]["safe_mode"] and st["mqtt"] is None, st["config"]
            assert st["config"]["errors"] == [
                "mqtt.base_topic: must not contain + (MQTT wildcards and NUL are not allowed)"
            ]
        long_topic = "s/" + "ü" * 61  # 63 characters: the schema's 122 allows it; 124 bytes
        plug = {"type": "mqtt", "command_topic": "cmnd/p", "state_topic": long_topic}
        config = mqtt_config(mosquitto)
        with Firmware(
            tmp_path, sim.endpoints["charger"], config, extra=("--admin-password", "pw")
        ) as fw:
            fw.wait_for(lambda st: st["mqtt"]["connected"], 20, "connected")
            request = urllib.request.Request(
                "http://127.0.0.1:%d/api/config" % fw.port,
                data=json.dumps({"plug": plug}).encode(),
                headers={"Authorization": "Bearer pw"},
                method="POST",
            )
            try:
                urllib.request.urlopen(request, timeout=10)
                raise AssertionError("accepted")
            except urllib.error.HTTPError as err:
                assert err.code == 400
                assert json.loads(err.read())["errors"] == [
                    "plug.state_topic: must be at most 122 bytes in UTF-8 (got 124)"
                ]
            assert json.loads(fw.config_path.read_text())["plug"]["type"] == "none"


def test_no_discovery_under_the_boards_stand_in_id() -> None:
    """First boot, the charger silent for 60 s: the state goes out under adapter-<board id>,
    but Home Assistant is not told of a device it would keep once the real serial is known."""
    import asyncio
    from types import SimpleNamespace

    import config
    import mqtt

    settings = dict(config.defaults()["mqtt"], host="127.0.0.1")
    for serial, announced in ((None, []), (SERIAL, [True])):
        app = SimpleNamespace(
            config={"plug": config.defaults()["plug"]},
            log=print,
            link=SimpleNamespace(state=SimpleNamespace(serial=serial, probed=True)),
            board=SimpleNamespace(unique_id=lambda: "a1b2c3"),
        )
        m = mqtt.Mqtt(app, settings)
        m.started_ms -= mqtt.SERIAL_WAIT_MS  # the wait for the serial is over
        assert m._identify() and m.serial == (serial or "adapter-a1b2c3")
        seen: list[bool] = []

        async def announce(_: Any, seen: list[bool] = seen) -> None:
            seen.append(True)

        m._announce = announce  # type: ignore[method-assign]
        m.publish_state = lambda full=False: None  # type: ignore[method-assign]
        m._range = lambda: None  # type: ignore[method-assign]
        m.announce_ms = mqtt.ticks_ms()  # as after connecting
        asyncio.run(m._publish_due(asyncio))
        assert seen == announced, serial


def test_unknown_is_a_value_a_clean_stop_says_offline_once_and_device_info(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """No Venus: the grid power is unknown, and its retained topic says so ("unknown"; an
    empty retained payload would delete it at the broker). The device's firmware reads as
    Victron writes it, the model has one pair of parentheses. A clean stop publishes
    `offline` and says DISCONNECT, so the broker does not publish the will as a second one."""
    watcher = Watcher(mosquitto)
    with Background(make_world()) as sim:
        fw = Firmware(tmp_path, sim.endpoints["charger"], mqtt_config(mosquitto))
        with fw:
            watcher.wait(lambda: watcher.last(BASE + "/status") == b"online", 20, "online")
            watcher.wait(lambda: watcher.last(BASE + "/battery_v") is not None, 10, "values")
            late = Watcher(mosquitto, BASE + "/grid_w")  # a subscriber that comes later
            got = late.wait(lambda: late.last(BASE + "/grid_w"), 5, "the retained grid_w")
            late.close()
            assert got == b"unknown"
            configs = watcher.wait(
                lambda: len(watcher.topics("homeassistant/")) >= 23
                and watcher.topics("homeassistant/"), 10, "discovery")
            dev = json.loads(next(p for p in configs.values() if p))["dev"]
            assert dev["hw"] == "3.42", dev
            assert dev["mdl"].count("(") == 1, dev
            offline_before = sum(1 for t, p, _ in watcher.messages
                                 if t == BASE + "/status" and p == b"offline")
        time.sleep(2)  # the broker's will, if it were sent, comes at once on the lost socket
        offline = sum(1 for t, p, _ in watcher.messages
                      if t == BASE + "/status" and p == b"offline")
        assert offline - offline_before == 1, watcher.messages[-5:]
    watcher.close()
