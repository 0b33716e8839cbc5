"""tools/vedirect.py: decode, frame, and the port commands against a charger on a pty."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT, TOOLS
from tools.sim.charger import ChargerOptions, VirtualIP22
from tools.sim.physics import Battery
from tools.sim.serve import Background
from tools.sim.venus import VenusRegisters
from tools.sim.world import SCENARIOS, World

CLI = TOOLS / "vedirect.py"
CAPTURE = ROOT / "host_tests" / "data" / "ip22-24-12-stream.bin"
EXPECTED = json.loads((ROOT / "host_tests" / "data" / "ip22-24-12-expected.json").read_text())


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLI), *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_main(*args: str) -> tuple[int, str]:
    """The CLI in-process (fast for the port tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vedirect_cli", CLI)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    code = module.main(list(args), out)
    return code, out.getvalue()


def test_decode_capture() -> None:
    result = cli("decode", str(CAPTURE), "--summary")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    blocks = [x for x in lines if x["kind"] == "text"]
    frames = [x for x in lines if x["kind"] == "hex"]
    assert len(blocks) == 52 and len(frames) == 1305
    assert [b["fields"] for b in blocks] == EXPECTED["blocks"]
    assert list(blocks[0]["fields"]) == ["PID", "FWE", "SER#", "V", "I", "T", "ERR", "CS", "HC#"]
    assert all(x["ok"] for x in blocks + frames)
    voltage = next(x for x in frames if x.get("register") == "0xED8D")
    assert voltage == {
        "kind": "hex",
        "ok": True,
        "code": "async",
        "register": "0xED8D",
        "name": "battery_voltage",
        "flags": 0,
        "raw": "400B",
        "value": 28.8,
        "unit": "V",
    }
    history = next(x for x in frames if x.get("register") == "0x1070")
    assert "value" not in history and len(history["raw"]) == 104
    assert lines[-1] == {
        "kind": "summary",
        "text_ok": 52,
        "text_bad": 0,
        "hex_ok": 1305,
        "hex_bad": 0,
        "discarded": 0,
        "incomplete": 0,
    }


def test_decode_stdin_with_bad_frames_and_unknown_registers() -> None:
    data = b":A0920000023\n:A3412000104\n:54243CB\njunk\r\n"
    result = cli("decode", "-", "--summary", stdin=data)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"kind": "hex", "ok": False, "reason": "checksum", "frame": ":A0920000023"}
    assert lines[1] == {
        "kind": "hex",
        "ok": True,
        "code": "async",
        "register": "0x1234",
        "flags": 0,
        "raw": "01",
    }
    assert lines[2] == {"kind": "hex", "ok": True, "code": "ping", "raw": "4243"}
    assert lines[3]["kind"] == "summary" and lines[3]["hex_bad"] == 1 and lines[3]["hex_ok"] == 2


def test_decode_missing_file() -> None:
    result = cli("decode", "/nonexistent/capture.bin")
    assert result.returncode == 2 and "cannot read" in result.stderr


@pytest.mark.parametrize(
    "args, frame",
    [
        (["ping"], ":154"),
        (["app-version"], ":352"),
        (["product-id"], ":451"),
        (["get", "0xEDF0"], ":7F0ED0071"),
        (["get", "charge_current_limit"], ":7F0ED0071"),
        (["set", "0xEDF0", "12.5"], ":8F0ED007D00F3"),
        (["set", "0xEDF0", "30"], ":8F0ED002C0143"),
        (["set", "0x2015", "6"], ":81520003C00DC"),
        (["set", "0x200E", "5"], ":80E2000051A"),
    ],
)
def test_frame(args: list[str], frame: str) -> None:
    result = cli("frame", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == frame + "\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["frame", "set", "0xED8D", "1"], "read-only"),
        (["frame", "set", "0x1234", "1"], "unknown register"),
        (["frame", "set", "0xEDF0", "99999"], "does not fit"),
        (["frame", "set", "0xEDF0", "abc"], "not a current"),
        (["frame", "get", "0x10000"], "out of range"),
        (["frame", "get", "nonsense"], "not a register"),
        (["ping"], "needs --port"),
        (["--port", "/dev/nonexistent-tty", "ping"], "cannot open"),
    ],
)
def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr


def simulated(**options: Any) -> Background:
    """The virtual IP22 on a pty, running in real time in a background thread."""
    charger = VirtualIP22(ChargerOptions(**options), Battery(soc=0.3))
    world = World(charger, VenusRegisters(), SCENARIOS["steady"])
    return Background(world, pty=True)


def test_ping_and_get() -> None:
    with simulated() as sim:
        port = sim.endpoints["pty"]
        code, out = run_main("--port", port, "ping")
        assert code == 0 and out == "ping reply: 4243\n"
        code, out = run_main("--port", port, "get", "0xEDDF")
        assert code == 0 and out == "0xEDDF max_current: 12.0 A\n"
    with simulated(volatile="absent") as sim:
        code, out = run_main("--port", sim.endpoints["pty"], "get", "0x2015")
        assert code == 3 and out == "0x2015 link_charge_current_limit: refused: unknown id\n"


def test_socket_url_works_too() -> None:
    with simulated() as sim:
        code, out = run_main("--port", sim.endpoints["charger"], "get", "0xEDC8")
        assert code == 0 and out == "0xEDC8 min_current: 3.0 A\n"


def test_set_current_confirmed() -> None:
    with simulated() as sim:
        code, out = run_main("--port", sim.endpoints["pty"], "set-current", "7.5")
        assert code == 0, out
        assert "stored in the charger's flash" in out
        assert "charger confirmed 7.5 A (Blue Smart IP22 24/12 (1))" in out
        assert sim.call(lambda: sim.world.charger.stored_limit) == 75
        assert sim.call(lambda: sim.world.charger.counters.nvm_writes) == 1


def test_set_current_outside_the_model_range_is_refused_before_sending() -> None:
    with simulated() as sim:
        for amps in ("2.9", "12.1", "-1"):
            code, out = run_main("--port", sim.endpoints["pty"], "set-current", amps)
            assert code == 2, (amps, out)
        assert sim.call(lambda: sim.world.charger.counters.nvm_writes) == 0


def hidden_minimum(sim: Background) -> None:
    """A charger whose real minimum (5.0 A) is above the 25 % rule and not in 0xEDC8."""

    def hide() -> None:
        sim.world.charger.options.min_register = False
        sim.world.charger.min_raw = 50

    sim.call(hide)


def test_set_current_rejected_by_the_charger_exits_3() -> None:
    with simulated() as sim:
        hidden_minimum(sim)
        code, out = run_main("--port", sim.endpoints["pty"], "set-current", "4")
        assert code == 3
        assert "charger refused 4.0 A: parameter error" in out


def test_set_current_clamped_by_the_charger_exits_3() -> None:
    with simulated(below_min="clamp") as sim:
        hidden_minimum(sim)
        code, out = run_main("--port", sim.endpoints["pty"], "set-current", "4")
        assert code == 3
        assert "charger confirmed 5.0 A" in out and "differs from the 4.0 A" in out


def test_no_reply_exits_3_after_retries() -> None:
    with simulated() as sim:
        sim.call(lambda: setattr(sim.world.charger.faults, "no_replies", True))
        args = ("--port", sim.endpoints["pty"], "--timeout", "0.3", "--retries", "1", "ping")
        code, out = run_main(*args)
        assert code == 3
        assert sim.call(lambda: sim.world.charger.counters.requests) == 2


def test_slow_reply_within_the_timeout() -> None:
    with simulated() as sim:
        sim.call(lambda: setattr(sim.world.charger.faults, "reply_delay_s", 0.6))
        code, out = run_main("--port", sim.endpoints["pty"], "--timeout", "1.5", "ping")
        assert code == 0 and sim.call(lambda: sim.world.charger.counters.requests) == 1


def test_monitor_json() -> None:
    with simulated() as sim:
        code, out = run_main(
            "--port", sim.endpoints["pty"], "monitor", "--json", "--seconds", "2.5"
        )
    assert code == 0
    lines = out.splitlines()
    events = [json.loads(x) for x in lines if not x.startswith("#")]
    assert any(e["kind"] == "text" and e["fields"]["PID"] == "0xA334" for e in events)
    assert any(e.get("register") == "0x2009" for e in events)
    assert all(e["ok"] for e in events)
    assert lines[-1].startswith("# ") and json.loads(lines[-1][2:])["text_ok"] >= 1


def test_monitor_human() -> None:
    with simulated() as sim:
        code, out = run_main("--port", sim.endpoints["pty"], "monitor", "--seconds", "2.2")
    assert code == 0
    assert "ERR=0 (no error)" in out and "CS=245 (starting up)" in out
    assert "async 0x2009 link_error_code = 0" in out
