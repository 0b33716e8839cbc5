"""The Venus OS MQTT stand-in (tools/sim/venus_mqtt.py) against a real mosquitto, and the
broker's own faults, with paho as the client: what the firmware's MQTT client will meet."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from broker import AUTH_USERS, mosquitto_auth_fixture, mosquitto_fixture  # noqa: F401

from tools.mosquitto import Mosquitto
from tools.sim.__main__ import broker_arg
from tools.sim.venus_mqtt import VenusMqtt, value, wants_full_publish

ID = "c0619ab1d2e3"
N = "N/%s/" % ID
KEEPALIVE = "R/%s/keepalive" % ID
SUPPRESS = json.dumps({"keepalive-options": ["suppress-republish"]})
SYSTEM = [N + "system/0/Ac/Grid/L%d/Power" % k for k in (1, 2, 3)]
METER = [N + "grid/30/Ac/L%d/Power" % k for k in (1, 2, 3)]
FAST = {"keepalive_timeout_s": 2.0, "heartbeat_s": 0.5, "interval_s": 0.1}


class Msg:
    def __init__(self, m: mqtt.MQTTMessage) -> None:
        self.topic = m.topic
        self.payload = m.payload
        self.retain = bool(m.retain)
        self.t = time.monotonic()

    def value(self) -> Any:
        return json.loads(self.payload)["value"]

    def __repr__(self) -> str:
        return "Msg(%s %r%s)" % (self.topic, self.payload, " retained" if self.retain else "")


class Listener:
    """A paho client that records everything under `topic`, resubscribing after reconnects."""

    def __init__(self, broker: Mosquitto, topic: str = "N/#", **login: str) -> None:
        self.messages: list[Msg] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if login:
            self.client.username_pw_set(login["username"], login["password"])
        self.client.reconnect_delay_set(0.1, 0.5)

        def on_connect(client: mqtt.Client, *args: Any) -> None:
            client.subscribe(topic)

        def on_subscribe(*args: Any) -> None:
            self.subscribed.set()

        def on_message(client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
            with self.cond:
                self.messages.append(Msg(m))
                self.cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: str | bytes = b"") -> None:
        self.client.publish(topic, payload).wait_for_publish(5)

    def since(self, t: float, topic: str | None = None) -> list[Msg]:
        with self.cond:
            return [m for m in self.messages if m.t >= t and topic in (None, m.topic)]

    def wait_for(self, topic: str, after: float = 0.0, timeout: float = 5.0) -> Msg:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if m.topic == topic and m.t >= after:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "no %s within %.1f s: %r" % (topic, timeout, self.messages)
                    )
                self.cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Grid:
    """The meter as the test sets it; None: the meter is gone."""

    def __init__(self) -> None:
        self.w: tuple[float, float, float] | None = (100.04, -250.0, 0.0)

    def __call__(self) -> tuple[float, float, float] | None:
        return self.w


@pytest.fixture
def grid() -> Grid:
    return Grid()


@pytest.fixture
def listener(mosquitto: Mosquitto) -> Iterator[Listener]:
    lis = Listener(mosquitto)
    yield lis
    lis.close()


@pytest.fixture
def venus(mosquitto: Mosquitto, grid: Grid, listener: Listener) -> Iterator[VenusMqtt]:
    with VenusMqtt(mosquitto.host, mosquitto.port, grid, portal_id=ID, **FAST) as v:
        assert v.connected.wait(5)
        listener.wait_for(N + "system/0/Serial")
        yield v


def connect_result(broker: Mosquitto, **login: str) -> mqtt.ReasonCode:
    """The broker's CONNACK for this login (a blocking loop: no reconnect attempts)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if login:
        client.username_pw_set(login["username"], login["password"])
    result: list[mqtt.ReasonCode] = []
    client.on_connect = lambda client, userdata, flags, rc, props: result.append(rc)
    client.connect(broker.host, broker.port)
    deadline = time.monotonic() + 5
    while not result and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert result, "no CONNACK"
    return result[0]


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- the broker ---------------------------------------------------------------------------


def test_anonymous_broker(mosquitto: Mosquitto) -> None:
    assert not connect_result(mosquitto).is_failure
    lis = Listener(mosquitto, "t/#")
    try:
        lis.publish("t/x", b"hello")
        assert lis.wait_for("t/x").payload == b"hello"
    finally:
        lis.close()


def test_password_broker(mosquitto_auth: Mosquitto) -> None:
    user, password = next(iter(AUTH_USERS.items()))
    assert not connect_result(mosquitto_auth, username=user, password=password).is_failure
    wrong = connect_result(mosquitto_auth, username=user, password="wrong")
    assert wrong.is_failure, wrong
    assert connect_result(mosquitto_auth).is_failure  # anonymous


def test_stand_in_logs_in(mosquitto_auth: Mosquitto, grid: Grid) -> None:
    user, password = next(iter(AUTH_USERS.items()))
    lis = Listener(mosquitto_auth, username=user, password=password)
    login = {"username": user, "password": password}
    with VenusMqtt(mosquitto_auth.host, mosquitto_auth.port, grid, ID, **login, **FAST):
        assert lis.wait_for(N + "system/0/Serial").value() == ID
    lis.close()


def test_freeze_and_thaw(mosquitto: Mosquitto, listener: Listener) -> None:
    mosquitto.freeze()
    t = time.monotonic()
    listener.client.publish("N/x", b"1")
    time.sleep(0.5)
    assert listener.since(t) == []  # held in the frozen broker's socket buffer
    mosquitto.thaw()
    assert listener.wait_for("N/x", after=t).payload == b"1"


def test_kill_and_restart_on_the_same_port(
    mosquitto: Mosquitto, grid: Grid, listener: Listener, venus: VenusMqtt
) -> None:
    port = mosquitto.port
    listener.publish(KEEPALIVE)
    listener.wait_for(N + "full_publish_completed")
    mosquitto.kill()
    assert not mosquitto.running
    wait_until(lambda: not venus.connected.is_set())
    t = time.monotonic()
    mosquitto.restart()
    assert mosquitto.port == port and mosquitto.running
    # no persistence: the retained Serial is gone with the broker, the stand-in publishes it
    # again when it reconnects, and the listener resubscribes
    assert listener.wait_for(N + "system/0/Serial", after=t, timeout=8).value() == ID
    assert not venus.alive  # the keepalive state went with the broker
    mosquitto.stop()
    assert not mosquitto.running


# -- the stand-in ---------------------------------------------------------------------------


def test_keepalive_payloads() -> None:
    assert wants_full_publish(b"") is True
    assert wants_full_publish(SUPPRESS.encode()) is False
    assert wants_full_publish(b'{"keepalive-options": []}') is True
    assert wants_full_publish(b"not json") is True
    assert wants_full_publish(b'["system/0/Serial"]') is None
    assert value(-0.04) == b'{"value": 0.0}'
    assert value(None) == b'{"value": null}'


def test_only_the_retained_serial_without_keepalive(
    mosquitto: Mosquitto, listener: Listener, venus: VenusMqtt
) -> None:
    time.sleep(1.0)  # several intervals and heartbeats
    assert [(m.topic, m.value()) for m in listener.messages] == [(N + "system/0/Serial", ID)]
    assert not venus.alive
    late = Listener(mosquitto, "N/+/system/0/Serial")  # how a client finds the portal id
    try:
        serial = late.wait_for(N + "system/0/Serial")
        assert serial.retain and serial.value() == ID
    finally:
        late.close()


def test_empty_keepalive_gives_a_full_publish(listener: Listener, venus: VenusMqtt) -> None:
    t = time.monotonic()
    listener.publish(KEEPALIVE)
    done = listener.wait_for(N + "full_publish_completed", after=t)
    assert abs(done.value() - time.time()) < 5
    full = {m.topic: m for m in listener.since(t) if m.t <= done.t}
    assert full[N + "system/0/Serial"].value() == ID
    assert [full[topic].value() for topic in SYSTEM] == [100.0, -250.0, 0.0]
    assert [full[topic].value() for topic in METER] == [100.0, -250.0, 0.0]
    assert full[N + "system/0/Ac/Grid/NumberOfPhases"].value() == 3
    assert full[N + "system/0/Ac/Grid/DeviceType"].value() is not None
    assert full[N + "system/0/Ac/In/0/ServiceType"].value() == "grid"
    assert full[N + "system/0/Ac/In/0/DeviceInstance"].value() == 30
    assert not any(m.retain for m in full.values() if not m.topic.endswith("/Serial"))
    assert venus.full_publishes == 1 and venus.keepalives == 1 and venus.alive


def test_legacy_keepalive_topic(listener: Listener, venus: VenusMqtt) -> None:
    t = time.monotonic()
    listener.publish("R/%s/system/0/Serial" % ID)
    listener.wait_for(N + "full_publish_completed", after=t)
    assert venus.alive


def test_list_keepalive_is_ignored(listener: Listener, venus: VenusMqtt) -> None:
    t = time.monotonic()
    listener.publish(KEEPALIVE, json.dumps(["system/0/Ac/Grid/L1/Power"]))
    time.sleep(0.6)
    assert listener.since(t) == []
    assert venus.ignored_list_keepalives == 1 and venus.keepalives == 1 and not venus.alive


def test_suppress_republish_keeps_alive_heartbeat_then_silence(
    listener: Listener, venus: VenusMqtt
) -> None:
    listener.publish(KEEPALIVE)
    start = listener.wait_for(N + "full_publish_completed").t
    while time.monotonic() - start < 3.0:  # longer than the 2 s timeout
        listener.publish(KEEPALIVE, SUPPRESS)
        time.sleep(0.7)
    assert venus.alive and venus.full_publishes == 1 and venus.keepalives >= 5
    beats = [m.t for m in listener.since(start, N + "heartbeat")]
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert len(beats) >= 5 and all(0.2 < g < 1.0 for g in gaps), gaps
    assert all(m.topic != N + "full_publish_completed" for m in listener.since(start + 0.01))
    # no more keepalives: silent after the timeout
    wait_until(lambda: not venus.alive, timeout=3)
    t = time.monotonic()
    time.sleep(0.8)
    assert listener.since(t) == []


def test_values_on_change_only(listener: Listener, venus: VenusMqtt, grid: Grid) -> None:
    listener.publish(KEEPALIVE)
    t = listener.wait_for(N + "full_publish_completed").t + 0.01
    time.sleep(0.5)  # five intervals, nothing changed
    assert [m.topic for m in listener.since(t)] in ([], [N + "heartbeat"])
    grid.w = (100.0, 500.0, 0.0)  # L1 rounds to the same 100.0
    t = time.monotonic()
    time.sleep(0.5)
    changed = [(m.topic, m.value()) for m in listener.since(t) if m.topic != N + "heartbeat"]
    assert sorted(changed) == sorted([(SYSTEM[1], 500.0), (METER[1], 500.0)])


def test_meter_gone(listener: Listener, venus: VenusMqtt, grid: Grid) -> None:
    listener.publish(KEEPALIVE)
    listener.wait_for(N + "full_publish_completed")
    grid.w = None
    t = time.monotonic()
    time.sleep(0.5)
    msgs = [m for m in listener.since(t) if m.topic != N + "heartbeat"]
    for topic in SYSTEM + [N + "system/0/Ac/Grid/DeviceType"]:
        assert [m.value() for m in msgs if m.topic == topic] == [None]
    for topic in METER:
        assert [m.payload for m in msgs if m.topic == topic] == [b""]  # once
    t = time.monotonic()
    listener.publish(KEEPALIVE)  # a full publish does not bring the meter back
    listener.wait_for(N + "full_publish_completed", after=t)
    assert not any(m.topic in METER for m in listener.since(t))
    assert listener.wait_for(SYSTEM[0], after=t).value() is None
    grid.w = (1.0, 2.0, 3.0)  # and back
    assert listener.wait_for(METER[2], after=time.monotonic()).value() == 3.0


def test_faults_silent_and_ignore_keepalive(listener: Listener, venus: VenusMqtt) -> None:
    listener.publish(KEEPALIVE)
    listener.wait_for(N + "full_publish_completed")
    venus.silent = True  # a hung service: keepalives do nothing, nothing is published
    time.sleep(0.2)
    t = time.monotonic()
    listener.publish(KEEPALIVE)
    time.sleep(0.8)
    assert listener.since(t) == [] and venus.keepalives == 2 and venus.full_publishes == 1
    venus.silent = False
    venus.ignore_keepalive = True  # keepalives are lost: it times out despite them
    listener.publish(KEEPALIVE, SUPPRESS)
    wait_until(lambda: not venus.alive, timeout=3)
    assert venus.keepalives == 3 and venus.full_publishes == 1
    venus.ignore_keepalive = False
    t = time.monotonic()
    listener.publish(KEEPALIVE)
    listener.wait_for(N + "full_publish_completed", after=t)


# -- the simulator's command line -----------------------------------------------------------


def test_broker_arg() -> None:
    assert broker_arg("127.0.0.1:1883") == ("127.0.0.1", 1883, None, None)
    assert broker_arg("u:p:w@gx.local:1883") == ("gx.local", 1883, "u", "p:w")
    with pytest.raises(argparse.ArgumentTypeError):
        broker_arg("gx.local")


def test_simulator_publishes_the_worlds_grid(mosquitto: Mosquitto, listener: Listener) -> None:
    cmd = [sys.executable, "-m", "tools.sim", "--phases", "3", "--duration", "8"]
    cmd += ["--venus-mqtt", "%s:%d" % (mosquitto.host, mosquitto.port)]
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True) as sim:
        try:
            assert sim.stdout
            endpoints = json.loads(sim.stdout.readline())
            serial = listener.wait_for("N/c0619ab1c2d3/system/0/Serial")  # Modbus register 800
            assert endpoints["venus_mqtt"].endswith("N/c0619ab1c2d3/") and serial.value()
            t = time.monotonic()
            listener.publish("R/c0619ab1c2d3/keepalive")
            listener.wait_for("N/c0619ab1c2d3/full_publish_completed", after=t)
            # steady: 1500 W PV, 350 W load over three phases, the charger's draw on L1
            # (a full publish that comes before the simulator's first step carries zeros: the
            # next value, on the meter's next second, is the world's)
            topic = "N/c0619ab1c2d3/grid/30/Ac/L2/Power"
            l2 = listener.wait_for(topic, after=t).value()
            if l2 == 0.0:
                l2 = listener.wait_for(topic, after=time.monotonic()).value()
            assert -400 < l2 < -360
        finally:
            sim.terminate()
