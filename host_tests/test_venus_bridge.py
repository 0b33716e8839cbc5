"""Bridge mode (venus_os/bridge.py, issue #17 item 3): the GX follows an ESP32 adapter over HTTP
or over MQTT. Real peers: the firmware on the MicroPython Unix port against the simulated charger
(one for the whole file), a real mosquitto it publishes to, and the follower run the way the GX
service runs it (its own event loop, here in a thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from typing import Any, Callable, Iterator

import paho.mqtt.client as paho
import pytest
import bridge  # venus_os/, on the path by conftest.py
from broker import broker
from fwrun import Background, Firmware, make_world, truth

from tools.mosquitto import Mosquitto
from tools.ports import free_port

# one worker runs the whole file: its tests share a module-scoped firmware and broker
pytestmark = pytest.mark.xdist_group("test_venus_bridge")

SERIAL = "HQ2230XY6XR"  # the simulator's
BASE = "ip22/" + SERIAL
PASSWORD = "bridge secret"
MANUAL_A = 5.0
NEW_KEYS = ("state_code", "error_code", "temperature_c", "pid", "model", "firmware", "serial")


class Followed:
    """An AdapterFollower in its own event loop (a thread here, the service's loop on the GX):
    every view it hands on is kept; commands and status go through that loop."""

    def __init__(self, gx: dict[str, Any], mqtt: dict[str, Any] | None = None) -> None:
        self.views: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.follower = bridge.AdapterFollower(gx, mqtt or {}, self.lines.append)
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.started.wait(5)

    def __enter__(self) -> "Followed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.follower.run(self._on_view))
        self.started.set()
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as err:  # run() must never end on its own
            self.error = err
        finally:
            self.loop.close()

    def _on_view(self, view: dict[str, Any]) -> None:
        with self.lock:
            self.views.append(view)

    def last(self) -> dict[str, Any]:
        with self.lock:
            return self.views[-1] if self.views else {}

    def count(self) -> int:
        with self.lock:
            return len(self.views)

    def wait(self, check: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> float:
        """Seconds until the latest view passed `check`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.error is None, self.error
            if check(self.last()):
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(
            "timed out waiting for %s; last view %s\nstatus %s\nlog %s"
            % (what, self.last(), self.status(), "\n".join(self.lines))
        )

    def _call(self, make: Callable[[], Any], timeout: float = 15) -> Any:
        assert self.error is None, self.error
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def set_mode(self, on: bool) -> str | None:
        return self._call(lambda: self.follower.set_mode(on))

    def status(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return self.follower.status()

        return self._call(read, 5)

    def close(self) -> None:
        assert self.error is None, self.error  # still running: nothing made it end
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Firmware, Mosquitto]]:
    """One adapter for the file: the firmware in manual mode (5 A, charging) with its admin
    password, its web API and its MQTT on a real broker (commands on, state every second)."""
    workdir = tmp_path_factory.mktemp("bridge")
    with broker(workdir / "mosquitto") as mq, Background(make_world()) as sim:
        config = {
            "control": {"mode": "manual", "manual_current_a": MANUAL_A},
            "mqtt": {"host": mq.host, "port": mq.port, "update_s": 1.0, "discovery": False},
        }
        fw = Firmware(
            workdir, sim.endpoints["charger"], config, extra=("--admin-password", PASSWORD)
        )
        with fw:
            fw.wait_for(lambda s: s["charger"]["state_code"] == 3, 30, "bulk at 5 A")
            fw.wait_for(lambda s: (s["mqtt"] or {}).get("connected"), 20, "MQTT connected")
            yield sim, fw, mq


def http_gx(fw: Firmware, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "bridge_via": "http",
        "bridge_url": "http://127.0.0.1:%d" % fw.port,
        "bridge_password": password,
        "bridge_topic": "",
    }


def mqtt_gx() -> dict[str, Any]:
    return {"bridge_via": "mqtt", "bridge_url": "", "bridge_topic": BASE, "bridge_password": ""}


def mqtt_section(mq: Mosquitto) -> dict[str, Any]:
    return {"host": mq.host, "port": mq.port, "user": "", "password": "", "ca_file": ""}


def sim_charger(sim: Background) -> dict[str, Any]:
    charger = truth(sim)["charger"]
    charger["state_code"] = sim.call(lambda: sim.world.charger.state_code)
    return charger


def follows_sim(sim: Background) -> Callable[[dict[str, Any]], bool]:
    """The view is the simulated charger now: voltage within the protocol's 0.01 V (and the
    0.1 s the charger's reading lags), the same state code."""

    def check(view: dict[str, Any]) -> bool:
        charger = sim_charger(sim)
        return bool(
            view.get("connected")
            and view.get("voltage_v") is not None
            and abs(view["voltage_v"] - charger["voltage_v"]) <= 0.05
            and view.get("state_code") == charger["state_code"]
        )

    return check


def identity_and_charging(view: dict[str, Any]) -> None:
    assert view["serial"] == SERIAL
    assert view["product_id"] == 0xA334
    assert view["firmware"] == "0342FF"
    assert "24/12" in (view["product_name"] or "")
    assert view["mode"] == "manual" and view["charging"] is True
    assert view["state_code"] == 3  # bulk
    assert view["error_code"] == 0
    assert view["limit_a"] == MANUAL_A
    assert isinstance(view["voltage_v"], float) and isinstance(view["current_a"], float)


def post_mode(fw: Firmware, mode: str) -> None:
    req = urllib.request.Request(
        "http://127.0.0.1:%d/api/mode" % fw.port,
        data=json.dumps({"mode": mode}).encode(),
        method="POST",
        headers={"Authorization": "Bearer " + PASSWORD},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def mode_cycle(f: Followed, fw: Firmware, sim: Background, before: str) -> None:
    """Off from the GUI: the adapter holds the charger off (manual, not charging: its own mode
    "off" would leave the charger charging); on: the mode it had before, charging."""
    assert f.set_mode(False) is None
    control = fw.status()["control"]
    assert (control["mode"], control["manual_charging"]) == ("manual", False)
    f.wait(lambda v: v.get("switched_off") is True, 5, "the view held off")
    fw.wait_for(lambda s: s["control"]["charging"] is False, 15, "the charger off")
    assert truth(sim)["charger"]["on"] is False  # the simulated charger confirms it
    assert f.set_mode(True) is None
    control = fw.status()["control"]
    assert (control["mode"], control["manual_charging"]) == (before, True)
    f.wait(lambda v: v.get("mode") == before and v.get("switched_off") is False, 5,
           "the view back in " + before)
    if before == "manual":  # (auto has no Venus here: its safe state, not charging)
        fw.wait_for(lambda s: s["control"]["charging"] is True, 20, "charging again")
        fw.wait_for(lambda s: s["charger"]["limit_a"] == MANUAL_A, 15, "the manual limit")
        f.wait(lambda v: v.get("charging") is True and v.get("state_code") == 3, 10, "bulk")


# -- via http --------------------------------------------------------------------------------


def test_http_views_follow_the_simulator(adapter: Any) -> None:
    sim, fw, _ = adapter
    with Followed(http_gx(fw)) as f:
        f.wait(follows_sim(sim), 10, "the view to follow the simulator")
        identity_and_charging(f.last())
        assert 0 < f.last()["current_a"] <= MANUAL_A + 0.1  # rising: the battery takes it
        n = f.count()
        time.sleep(3)
        assert f.count() >= n + 2  # about one a second
        f.wait(follows_sim(sim), 5, "still following")
        st = f.status()
        assert st["via"] == "http" and st["url"] == "http://127.0.0.1:%d" % fw.port
        assert st["connected"] is True and st["last_error"] is None and st["dropped"] == 0
        assert st["updates"] >= 4 and st["age_s"] < 2
        assert PASSWORD not in json.dumps(st)


def test_http_mode_off_and_back_to_the_mode_before(adapter: Any) -> None:
    sim, fw, _ = adapter
    f = Followed(http_gx(fw))
    try:
        f.wait(lambda v: v.get("mode") == "manual", 10, "manual")
        mode_cycle(f, fw, sim, "manual")
        post_mode(fw, "auto")  # from the adapter's own page: the GUI's "on" is auto now
        f.wait(lambda v: v.get("mode") == "auto", 5, "auto seen")
        mode_cycle(f, fw, sim, "auto")
        st = f.status()
        assert (st["commands_ok"], st["commands_refused"]) == (4, 0)
        assert st["last_on_mode"] == "auto"
    finally:
        post_mode(fw, "manual")
        fw.wait_for(lambda s: s["charger"]["state_code"] == 3, 15, "bulk again")
        f.close()


def test_http_wrong_password_changes_nothing(adapter: Any) -> None:
    sim, fw, _ = adapter
    with Followed(http_gx(fw, password="not the password")) as f:
        f.wait(lambda v: v.get("mode") == "manual", 10, "manual")
        error = f.set_mode(False)
        assert error is not None and "401" in error and "password" in error
        st = fw.status()
        assert st["control"]["mode"] == "manual" and st["charger"]["state_code"] == 3
        assert f.last()["mode"] == "manual"
        assert (f.status()["commands_ok"], f.status()["commands_refused"]) == (0, 1)
        assert f.status()["last_refused"] == error


def test_http_commands_never_wait_past_the_timeout() -> None:
    """An adapter that accepts the connection and never answers, and one that is not there:
    an error text within the request timeout; the view is disconnected at once (no adapter
    was ever seen: nothing to hold on to)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody reads or answers
    nobody = free_port()
    try:
        for port in (silent.getsockname()[1], nobody):
            with Followed({"bridge_via": "http", "bridge_url": "http://127.0.0.1:%d" % port}) as f:
                f.wait(lambda v: v.get("connected") is False, 5, "disconnected")
                assert f.last()["voltage_v"] is None and f.last()["serial"] is None
                start = time.monotonic()
                error = f.set_mode(False)
                took = time.monotonic() - start
                assert error is not None and "did not answer" in error
                assert took < bridge.TIMEOUT_S + 1  # the thread hop, a busy CI
                assert f.status()["last_on_mode"] == "auto"  # never seen one: auto
    finally:
        silent.close()


class BadAdapter:
    """An HTTP server that answers /api/status from a list, one answer per request (the last
    one again and again)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.served = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    answer = self.answers[min(self.served, len(self.answers) - 1)]
                    self.served += 1
                    conn.sendall(answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def http_answer(body: bytes, head: str = "HTTP/1.0 200 OK\r\n") -> bytes:
    return head.encode() + b"Content-Type: application/json\r\n\r\n" + body


def good_status(**charger: Any) -> dict[str, Any]:
    ch = {
        "connected": True,
        "pid": "0xA334",
        "model": "Blue Smart IP22 24/12 (1)",
        "firmware": "0342FF",
        "serial": SERIAL,
        "voltage_v": 26.5,
        "current_a": 4.9,
        "temperature_c": None,
        "state": "bulk",
        "state_code": 3,
        "error": "no error",
        "error_code": 0,
        "limit_a": 5.0,
    }
    ch.update(charger)
    return {"charger": ch, "control": {"mode": "manual", "charging": True}}


def test_http_bad_answers_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge, "POLL_S", 0.1)
    bad = [
        http_answer(b"<html>not JSON</html>"),
        http_answer(b"[1, 2, 3]"),
        http_answer(json.dumps(good_status(voltage_v="26.5")).encode()),  # a string
        http_answer(json.dumps(good_status(state_code=3.5)).encode()),
        http_answer(json.dumps(good_status(serial=["HQ"])).encode()),
        http_answer(b"[" * 7000 + b"]" * 7000),  # deeper than json's recursion
        http_answer(b'{"status": "' + b"x" * 20000 + b'"}'),  # over 16 kB
        b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP
        http_answer(b"{}", "HTTP/1.0 500 Internal Server Error\r\n"),  # no state: not bad
        http_answer(b'{"charger": 1}'),
        http_answer(json.dumps(good_status()).encode()),  # and then a good one, for ever
    ]
    server = BadAdapter(bad)
    with Followed({"bridge_via": "http", "bridge_url": "127.0.0.1:%d" % server.port}) as f:
        f.wait(lambda v: v.get("connected") and v.get("voltage_v") == 26.5, 10, "the good one")
        st = f.status()
        assert st["dropped"] == len(bad) - 2, (st, f.lines)  # the 500 is a failure
        assert st["connected"] is True
        identity_and_charging(f.last())
        assert all(v["voltage_v"] in (None, 26.5) for v in f.views)  # nothing bad got through
        assert sum("dropped a bad state" in line for line in f.lines) == 1  # logged once a minute
        server.close()


# -- via mqtt --------------------------------------------------------------------------------


def retained(mq: Mosquitto, prefix: str, wait_s: float = 1.5) -> dict[str, bytes]:
    """What a new subscriber gets under `prefix`: the broker's retained messages."""
    got: dict[str, bytes] = {}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *a: c.subscribe(prefix + "#")
    client.on_message = lambda c, u, m: got.__setitem__(m.topic, m.payload)
    client.connect(mq.host, mq.port)
    client.loop_start()
    time.sleep(wait_s)
    client.loop_stop()
    client.disconnect()
    return got


def test_mqtt_state_carries_what_the_gx_needs(adapter: Any) -> None:
    """The adapter's JSON state has the codes, the identity and the temperature; they are in
    the JSON only: no topic of their own (firmware/mqtt.py STATE_ONLY)."""
    _, _, mq = adapter
    topics = retained(mq, BASE + "/")
    state = json.loads(topics[BASE + "/state"])
    assert state["state_code"] == 3 and state["error_code"] == 0
    assert state["pid"] == "0xA334" and state["firmware"] == "0342FF"
    assert state["serial"] == SERIAL and "24/12" in state["model"]
    assert "temperature_c" in state  # the simulated 24/12 has no sensor: null
    assert BASE + "/battery_v" in topics  # the per-key topics are still there
    for key in NEW_KEYS:
        assert BASE + "/" + key not in topics, key


def publish(mq: Mosquitto, topic: str, payloads: list[bytes]) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect(mq.host, mq.port)
    client.loop_start()
    for payload in payloads:
        client.publish(topic, payload).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_mqtt_views_follow_and_set_mode_is_confirmed(adapter: Any) -> None:
    sim, fw, mq = adapter
    with Followed(mqtt_gx(), mqtt_section(mq)) as f:
        f.wait(follows_sim(sim), 10, "the view to follow the simulator")
        identity_and_charging(f.last())
        mode_cycle(f, fw, sim, "manual")
        st = f.status()
        assert st["via"] == "mqtt" and st["topic"] == BASE and st["broker_connected"] is True
        assert (st["commands_ok"], st["commands_refused"]) == (2, 0)
        assert st["connected"] is True and st["dropped"] == 0


def test_mqtt_garbage_is_counted_and_ignored(adapter: Any) -> None:
    sim, fw, mq = adapter
    with Followed(mqtt_gx(), mqtt_section(mq)) as f:
        f.wait(follows_sim(sim), 10, "following")
        garbage = [
            b"not json",
            b"[1, 2]",
            b"\xff\xfe",
            b'{"link": "maybe"}',
            b'{"link": "ON", "mode": 5}',
            b'{"link": "ON", "battery_v": "abc"}',
            b'{"link": "ON", "charging": 1}',
            b"[" * 10000,
            b"x" * 20000,  # over 16 kB
        ]
        publish(mq, BASE + "/state", garbage)
        publish(mq, BASE + "/status", [b"rebooting?"])
        f.wait(lambda v: f.status()["dropped"] >= len(garbage) + 1, 5, "all counted")
        time.sleep(1.5)  # and the adapter's next state is taken as before
        f.wait(follows_sim(sim), 5, "still following")
        st = f.status()
        assert st["dropped"] == len(garbage) + 1 and st["connected"] is True
        identity_and_charging(f.last())
        assert all(v["voltage_v"] is None or isinstance(v["voltage_v"], float) for v in f.views)


def test_mqtt_wrong_mode_or_no_adapter_is_an_error(adapter: Any) -> None:
    """No broker: an error at once; the adapter not following its commands: not confirmed."""
    _, fw, mq = adapter
    with Followed(mqtt_gx(), {"host": "127.0.0.1", "port": free_port()}) as f:
        f.wait(lambda v: v.get("connected") is False, 5, "disconnected: no broker")
        assert "broker" in (f.status()["last_error"] or "")
        error = f.set_mode(False)
        assert error is not None and "broker" in error
    with Followed({**mqtt_gx(), "bridge_topic": "ip22/nobody"}, mqtt_section(mq)) as f:
        f.wait(lambda v: v.get("connected") is False, 5, "disconnected: nothing on the topic")
        start = time.monotonic()
        error = f.set_mode(False)
        assert error is not None and "did not show mode manual, held off" in error
        assert time.monotonic() - start < bridge.CONFIRM_S + 1
    assert fw.status()["control"]["mode"] == "manual"


# -- the adapter gone and back (last: it restarts the module's firmware) -------------------


def test_adapter_killed_and_restarted(adapter: Any) -> None:
    sim, fw, mq = adapter
    with Followed(http_gx(fw)) as over_http, Followed(mqtt_gx(), mqtt_section(mq)) as over_mqtt:
        for f in (over_http, over_mqtt):
            f.wait(follows_sim(sim), 10, "following")
        assert fw.proc is not None
        fw.proc.kill()  # no goodbye: the broker sends its last will
        fw.proc.wait(5)
        gone = lambda v: v.get("connected") is False  # noqa: E731
        took = over_mqtt.wait(gone, 5, "mqtt: disconnected by the will")
        assert "offline" in over_mqtt.status()["last_error"]
        took = over_http.wait(gone, 14, "http: disconnected after 10 s without an answer")
        assert took >= 8  # a missed answer or two are not an outage
        for f in (over_http, over_mqtt):
            view = f.last()
            assert view["serial"] == SERIAL and view["product_id"] == 0xA334  # who it is stays
            assert view["voltage_v"] is None and view["current_a"] is None
            assert view["state_code"] is None and view["charging"] is None
            assert f.status()["connected"] is False
        fw.log_file.close()
        fw.start()  # the same port, the same broker
        for f in (over_http, over_mqtt):
            f.wait(follows_sim(sim), 20, "following again")
        assert over_http.status()["last_error"] is None
