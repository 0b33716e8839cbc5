"""`python -m tools.sim` as a user runs it: endpoints printed, the charger watched with the
CLI over the pty, Venus read with a Modbus client, faults switched over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import ROOT
from pymodbus.client import ModbusTcpClient


def post(url: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.sim", "--pty", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        pytest.fail("tools.sim did not start: " + (proc.stderr.read() if proc.stderr else ""))
    return proc, json.loads(line)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[dict[str, str]]:
    profile = tmp_path / "day.csv"
    profile.write_text("t_s,pv_w,load_w\n0,2000,400\n3600,2000,400\n")
    proc, endpoints = start("--profile", str(profile), "--duration", "60")
    try:
        yield endpoints
    finally:
        proc.terminate()
        proc.wait(10)


def signed(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def test_watch_the_charger_with_the_cli(sim: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "vedirect.py"), "--port", sim["pty"]]
        + ["monitor", "--json", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    counters = json.loads(result.stdout.splitlines()[-1][2:])
    assert counters["text_ok"] >= 2 and counters["hex_ok"] >= 20
    assert counters["text_bad"] == counters["hex_bad"] == 0


def test_read_venus_and_switch_faults(sim: dict[str, str]) -> None:
    host, port = sim["venus"].rsplit(":", 1)
    client = ModbusTcpClient(host, port=int(port), timeout=2, retries=0)
    assert client.connect()
    time.sleep(1.2)
    grid = signed(client.read_input_registers(820, count=1, device_id=100).registers[0])
    state = get(sim["control"] + "/state")
    assert grid == pytest.approx(400 + state["charger_ac_w"] - 2000, abs=400)
    status, body = post(sim["control"] + "/fault", {"venus.exception": 4})
    assert status == 200 and body["venus"]["faults"]["exception"] == 4
    assert client.read_input_registers(820, count=1, device_id=100).exception_code == 4
    status, body = post(sim["control"] + "/fault", {"venus.exception": "x"})
    assert status == 400 and "error" in body
    status, body = post(sim["control"] + "/fault", {"no.such": 1})
    assert status == 400 and "unknown fault" in body["error"]
    client.close()
    post(sim["control"] + "/fault", {"venus.down": True})
    probe = ModbusTcpClient(host, port=int(port), timeout=1, retries=0)
    assert not probe.connect()
    post(sim["control"] + "/fault", {"venus.down": False})
    assert probe.connect()
    probe.close()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,pv\n")
    for args in (["--model", "0xA389"], ["--fault", "venus.nope=1"], ["--profile", str(bad)]):
        result = subprocess.run(
            [sys.executable, "-m", "tools.sim", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (args, result.stderr)


def test_modbus_grid_follows_the_current_set_over_the_pty() -> None:
    proc, sim = start("--scenario", "steady", "--speed", "5", "--soc", "0.3", "--duration", "60")
    try:
        host, port = sim["venus"].rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        assert client.connect()
        time.sleep(3)  # 15 s simulated: past the start-up delay, at the 12 A limit

        def grid() -> int:
            return signed(client.read_holding_registers(820, count=1, device_id=100).registers[0])

        full = grid()
        assert full == pytest.approx(
            350 + get(sim["control"] + "/state")["charger_ac_w"] - 1500, abs=25
        )
        result = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "vedirect.py"), "--port", sim["pty"]]
            + ["set-current", "3"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(3)  # 15 s simulated: seven time constants
        low = grid()
        state = get(sim["control"] + "/state")
        assert state["charger"]["current_a"] == pytest.approx(3.0, abs=0.05)
        assert full - low > 200  # about 250 W less from the grid
        assert low == pytest.approx(350 + state["charger_ac_w"] - 1500, abs=25)
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
