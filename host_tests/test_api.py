"""The JSON API over real HTTP against the firmware on the Unix port with the simulated world:
reading is open, every change needs the admin password, bad input gets a 4xx with a reason."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fwrun import Background, Firmware, make_world

# one worker runs the whole file: its tests share a module-scoped firmware/fixture
pytestmark = pytest.mark.xdist_group("test_api")

PASSWORD = "correct horse"


def call(
    fw: Firmware,
    method: str,
    path: str,
    body: Any = None,
    password: str | None = None,
    raw: bytes | None = None,
    scheme: str = "Bearer",
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (fw.port, path), data=data, method=method
    )
    req.add_header("Content-Type", "application/json")
    if password is not None:
        if scheme == "Basic":
            token = base64.b64encode(("admin:" + password).encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        else:
            req.add_header("Authorization", "Bearer " + password)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as err:
        text = err.read().decode()
        status = err.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture(scope="module", params=[False, True], ids=["unix_port", "venus_os_service"])
def running(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Any:
    """The firmware on the Unix port, and the same firmware as the Venus OS service runs it
    (CPython, the charger through pyserial): every API test against both."""
    workdir = tmp_path_factory.mktemp("api")
    config = {"wifi": {"ssid": "home", "password": "wifi-secret"}}
    with Background(make_world()) as sim:
        fw = Firmware(
            workdir, sim.endpoints["charger"], config, extra=("--admin-password", PASSWORD),
            gx=request.param,
        )
        with fw:
            fw.wait_for(lambda s: s["charger"]["min_a"] is not None, what="the probe")
            yield sim, fw


def test_config_is_readable_and_secrets_never_leave(running: Any) -> None:
    sim, fw = running
    status, body = call(fw, "GET", "/api/config")
    assert status == 200
    assert body["config"]["wifi"] == {"ssid": "home", "password": "***", "ap_password": ""}
    assert body["config"]["admin"]["password_hash"] == "***"
    saved = json.loads(fw.config_path.read_text())
    assert saved["admin"]["password_hash"].startswith("sha256$")  # stored hashed
    assert PASSWORD not in fw.config_path.read_text()
    for path in ("/api/status", "/api/config", "/metrics"):
        text = json.dumps(call(fw, "GET", path)[1])
        assert "wifi-secret" not in text and "sha256$" not in text


def test_changes_need_the_password(running: Any) -> None:
    sim, fw = running
    start = time.monotonic()
    status, body = call(fw, "POST", "/api/mode", {"mode": "manual"})
    assert status == 401 and "password" in body["error"]
    status, _ = call(fw, "POST", "/api/mode", {"mode": "manual"}, password="wrong")
    assert status == 401
    assert time.monotonic() - start >= 2  # each refusal waits a second
    status, _ = call(fw, "POST", "/api/reboot", {}, password="wrong")
    assert status == 401
    assert call(fw, "GET", "/api/status")[1]["counters"]["auth_failures"] >= 3


def test_switching_to_manual_changes_the_chargers_limit(running: Any) -> None:
    sim, fw = running
    change = {"mode": "manual", "manual_current_a": 6.0}
    status, body = call(fw, "POST", "/api/mode", change, password=PASSWORD, scheme="Basic")
    assert status == 200 and body["mode"] == "manual", body
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if sim.call(lambda: sim.world.charger.effective_limit_raw(sim.now())) == 60:
            break
        time.sleep(0.3)
    assert sim.call(lambda: sim.world.charger.effective_limit_raw(sim.now())) == 60
    assert json.loads(fw.config_path.read_text())["control"]["mode"] == "manual"  # saved


@pytest.mark.parametrize(
    "body, message",
    [
        ({"mode": "turbo"}, "control.mode: must be one of off, manual, auto"),
        ({"manual_current_a": "x"}, "control.manual_current_a: must be a number"),
        ({"manual_current_a": 500}, "control.manual_current_a: must be 0.0..100.0"),
        ({"colour": "red"}, "colour: not a mode setting"),
    ],
)
def test_bad_mode_values_are_refused_with_the_reason(
    running: Any, body: Any, message: str
) -> None:
    sim, fw = running
    status, answer = call(fw, "POST", "/api/mode", body, password=PASSWORD)
    assert status == 400 and any(message in e for e in answer["errors"]), answer


def test_malformed_requests(running: Any) -> None:
    sim, fw = running
    status, answer = call(fw, "POST", "/api/mode", raw=b"{mode:", password=PASSWORD)
    assert status == 400 and "not valid JSON" in answer["error"]
    status, answer = call(fw, "POST", "/api/mode", raw=b"[]", password=PASSWORD)
    assert status == 400
    status, _ = call(fw, "POST", "/api/config", raw=b"x" * 5000, password=PASSWORD)
    assert status == 413
    status, _ = call(fw, "GET", "/nothing-here")
    assert status == 404
    status, answer = call(fw, "GET", "/api/mode")
    assert status == 405 and answer == {"error": "GET is not allowed on /api/mode"}
    chunked = (
        b"POST /api/mode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + PASSWORD.encode()
        + b"\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        + b"10\r\n{\"mode\": \"auto\"}\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", fw.port), timeout=5) as s:
        s.sendall(chunked)
        reply = b""
        while b"Content-Length\"" not in reply and (part := s.recv(300)):
            reply += part  # the status line and the body come in pieces
    assert reply.startswith(b"HTTP/1.0 411") and b"Content-Length" in reply, reply
    # a request line over the limit, and garbage instead of HTTP: refused, the link goes on
    for junk in (b"GET /" + b"a" * 3000 + b" HTTP/1.0\r\n\r\n", b"\x00\xff garbage\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", fw.port), timeout=5) as s:
            s.sendall(junk)
            reply = s.recv(200)
        assert reply == b"" or reply.startswith(b"HTTP/1.0 4"), reply
    assert call(fw, "GET", "/api/status")[1]["charger"]["connected"]


def test_config_update_validated_saved_and_applied(running: Any) -> None:
    sim, fw = running
    patch = {"charger": {"stored_daily_max": 50}, "wifi": {"password": "***"}}
    status, answer = call(fw, "POST", "/api/config", patch, password=PASSWORD)
    assert status == 200 and answer["saved"] and answer["restart_needed"] == []
    saved = json.loads(fw.config_path.read_text())
    assert saved["charger"]["stored_daily_max"] == 50
    assert saved["wifi"]["password"] == "wifi-secret"  # "***" kept the secret
    bad = {"charger": {"stored_daily_max": -1}, "venus": {"port": "x"}}
    status, answer = call(fw, "POST", "/api/config", bad, password=PASSWORD)
    assert status == 400 and len(answer["errors"]) == 2
    assert json.loads(fw.config_path.read_text())["charger"]["stored_daily_max"] == 50
    status, answer = call(fw, "POST", "/api/config", {"http": {"port": 8081}}, password=PASSWORD)
    assert status == 200 and answer["restart_needed"] == ["http"]
    patch = {"wifi": {"ap_password": "a-new-ap-key"}}  # the open access point keeps its key
    status, answer = call(fw, "POST", "/api/config", patch, password=PASSWORD)
    assert status == 200 and answer["restart_needed"] == ["wifi"]


def test_a_lower_maximum_is_in_force_at_once(running: Any) -> None:
    """A battery's limit set while charging at more: the charger follows within seconds, and
    a manual current above it is held to it (before: only after a re-probe)."""
    sim, fw = running

    def limit_raw() -> int:
        return sim.call(lambda: sim.world.charger.effective_limit_raw(sim.now()))

    def until(check: Any, what: str) -> None:
        deadline = time.monotonic() + 15
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.3)

    change = {"mode": "manual", "manual_current_a": 10.0}
    assert call(fw, "POST", "/api/mode", change, password=PASSWORD)[0] == 200
    until(lambda: limit_raw() == 100, "10 A")
    try:
        patch = {"charger": {"max_current_a": 5.0}}
        status, answer = call(fw, "POST", "/api/config", patch, password=PASSWORD)
        assert status == 200 and answer["restart_needed"] == [], answer
        until(lambda: limit_raw() == 50, "held to the new maximum of 5 A")
        assert call(fw, "GET", "/api/status")[1]["charger"]["max_a"] == 5.0
        change = {"manual_current_a": 11.0}
        assert call(fw, "POST", "/api/mode", change, password=PASSWORD)[0] == 200
        time.sleep(2)
        assert limit_raw() == 50
    finally:
        patch = {"charger": {"max_current_a": 0.0}}
        assert call(fw, "POST", "/api/config", patch, password=PASSWORD)[0] == 200


def test_a_change_made_in_safe_mode_keeps_the_users_settings(tmp_path: Path) -> None:
    """One typo in config.json: safe mode. Fixing it through the API saves the user's Venus,
    MQTT and charger settings, not the defaults that safe mode runs on."""
    config = {
        "venus": {"host": "192.0.2.7"},
        "mqtt": {"host": "192.0.2.8", "password": "mqtt-secret"},
        "charger": {"max_current_a": 8.0},
        "control": {"mode": "auto", "target_grid_w": -50.0, "efficency": 0.9},
    }
    with Background(make_world()) as sim, Firmware(
        tmp_path, sim.endpoints["charger"], config, extra=("--admin-password", PASSWORD)
    ) as fw:
        assert call(fw, "GET", "/api/status")[1]["config"]["safe_mode"] is True
        patch = {"control": {"efficiency": 0.9}}
        status, answer = call(fw, "POST", "/api/config", patch, password=PASSWORD)
        assert status == 200 and answer["saved"], answer
    saved = json.loads(fw.config_path.read_text())
    assert saved["venus"]["host"] == "192.0.2.7" and saved["mqtt"]["password"] == "mqtt-secret"
    assert saved["charger"]["max_current_a"] == 8.0 and saved["control"]["mode"] == "auto"
    assert saved["control"]["target_grid_w"] == -50.0 and saved["control"]["efficiency"] == 0.9
    assert saved["admin"]["password_hash"].startswith("sha256$")


def test_metrics(running: Any) -> None:
    sim, fw = running
    status, text = call(fw, "GET", "/metrics")
    assert status == 200
    assert "# TYPE ip22_up gauge\nip22_up 1" in text
    assert "ip22_frames_ok_total" in text and "ip22_limit_amperes" in text


@pytest.mark.parametrize("running", [False], ids=["unix_port"], indirect=True)  # a fixed heap
def test_many_requests_leave_the_heap_flat(running: Any) -> None:
    sim, fw = running
    for _ in range(50):
        call(fw, "GET", "/api/status")
    time.sleep(11)  # a housekeeping gc.collect()
    before = call(fw, "GET", "/api/status")[1]["heap"]["used"]
    for _ in range(300):
        call(fw, "GET", "/api/status")
    time.sleep(11)
    after = call(fw, "GET", "/api/status")[1]["heap"]["used"]
    assert after - before < 4096, (before, after)


def test_no_password_set_refuses_changes(tmp_path: Path) -> None:
    with Background(make_world()) as sim, Firmware(tmp_path, sim.endpoints["charger"], {}) as fw:
        status, body = call(fw, "POST", "/api/mode", {"mode": "off"}, password="anything")
        assert status == 403 and "no admin password" in body["error"]


def test_a_stuck_client_blocks_nobody(running: Any) -> None:
    sim, fw = running
    before = call(fw, "GET", "/api/status")[1]["counters"]["frames_ok"]
    stuck = [socket.create_connection(("127.0.0.1", fw.port), timeout=5) for _ in range(3)]
    try:
        for s in stuck:
            s.sendall(
                b"POST /api/mode HTTP/1.0\r\nContent-Length: 100\r\n\r\n{"
            )  # and then nothing
        time.sleep(3)
        status, body = call(fw, "GET", "/api/status")
        assert status == 200 and body["charger"]["connected"]
        assert body["counters"]["frames_ok"] > before + 20  # the link kept reading
    finally:
        for s in stuck:
            s.close()


def test_an_overlong_header_is_refused(running: Any) -> None:
    sim, fw = running
    with socket.create_connection(("127.0.0.1", fw.port), timeout=5) as s:
        s.sendall(b"GET /api/status HTTP/1.0\r\nX-Junk: " + b"a" * 3000 + b"\r\n\r\n")
        reply = s.recv(200)
    assert reply == b"" or reply.startswith(b"HTTP/1.0 4"), reply
    assert call(fw, "GET", "/api/status")[0] == 200


def test_reboot_needs_the_password_and_restarts(tmp_path: Path) -> None:
    with Background(make_world()) as sim:
        fw = Firmware(tmp_path, sim.endpoints["charger"], {}, extra=("--admin-password", PASSWORD))
        with fw:
            status, body = call(fw, "POST", "/api/reboot", {}, password=PASSWORD)
            assert status == 200 and body == {"rebooting": True}
            assert fw.proc is not None
            fw.proc.wait(
                5
            )  # on the Unix port a reboot ends the process (a supervisor restarts it)
            assert "reboot requested" in fw.read_log()
