"""The firmware on the MicroPython Unix port against the simulated charger: the link, confirmed
sets, clamping, the volatile path and the write budget, faults, and a broken config."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fwrun import Background, Firmware, make_world

import vedirect as v

MANUAL = {"control": {"mode": "manual", "manual_current_a": 7.5}}


def charger_of(status: dict[str, Any]) -> dict[str, Any]:
    return status["charger"]


def probed(status: dict[str, Any]) -> bool:
    c = status["charger"]
    return c["connected"] and c["min_a"] is not None


def sets_in_range(sim: Background, low: float, high: float) -> list[tuple[int, bytes]]:
    """Every set the charger received; asserts each current set is within low..high A."""
    sets = sim.call(lambda: list(sim.world.charger.sets))
    for _, reg, raw in sets:
        if reg in (0xEDF0, 0x2015) and raw != b"\xff\xff":
            amps = v.unpack("un16", raw) / 10
            assert amps == 0 or low <= amps <= high, (hex(reg), amps)
        elif reg == 0x200E:
            assert raw == b"\x05", raw  # external control, never the BMS bit
        else:
            assert reg == 0x0200 and raw in (b"\x01", b"\x04"), (hex(reg), raw)
    return [(reg, raw) for _, reg, raw in sets]


@pytest.mark.parametrize("gx", [False, True], ids=["unix_port", "venus_os_service"])
def test_link_values_volatile_path_and_faults(tmp_path: Path, gx: bool) -> None:
    with Background(make_world()) as sim, Firmware(
        tmp_path, sim.endpoints["charger"], MANUAL, gx=gx
    ) as fw:
        # the limit comes from the HEX probe, the firmware version (FWE) from a whole text
        # block: the first block after connecting may be cut, and the probe can be quicker
        st = fw.wait_for(
            lambda s: charger_of(s)["volatile_limit_a"] == 7.5
            and charger_of(s)["firmware"] is not None, what="the volatile limit and a block"
        )
        c = st["charger"]
        truth = sim.call(lambda: sim.world.charger.status(sim.now()))
        assert (c["pid"], c["model"]) == ("0xA334", "Blue Smart IP22 24/12 (1)")
        assert (c["serial"], c["firmware"]) == ("HQ2230XY6XR", "0342FF")
        assert (c["min_a"], c["max_a"], c["rated_a"]) == (3.0, 12.0, 12.0)
        assert c["volatile_limit"] is True and c["device_mode"] is True
        assert c["no_off_mode"] is False
        assert c["limit_a"] == 7.5 and c["stored_limit_a"] == 12.0
        assert truth["effective_limit_a"] == 7.5 and truth["counters"]["nvm_writes"] == 0
        assert st["control"]["setpoint_a"] == 7.5 and st["control"]["charging"] is True
        # which frames were bad (text or HEX), and the log, if any: seen once in a fresh clone
        assert st["counters"]["frames_bad"] == 0 and st["counters"]["failures"] == 0, (
            st["counters"], (fw.workdir / "firmware.log").read_text()[-3000:])

        # values match the charger within resolution once the current has settled
        for _ in range(60):
            if sim.call(lambda: sim.world.charger.physics.current_a) > 7.45:
                break
            time.sleep(0.5)
        time.sleep(1.5)
        st = fw.status()
        truth = sim.call(lambda: sim.world.charger.status(sim.now()))
        assert st["charger"]["current_a"] == pytest.approx(truth["current_a"], abs=0.15)
        assert st["charger"]["voltage_v"] == pytest.approx(truth["voltage_v"], abs=0.05)
        assert st["charger"]["state"] == truth["state"] == "bulk"

        # noise on the line: dropped and counted, the firmware goes on
        sim.call(lambda: setattr(sim.world.charger.faults, "corrupt", 0.01))
        time.sleep(5)
        sim.call(lambda: setattr(sim.world.charger.faults, "corrupt", 0.0))
        st = fw.wait_for(lambda s: s["counters"]["frames_bad"] > 3, what="bad frames counted")
        assert st["charger"]["connected"]

        # silence: the link goes down, and comes back
        sim.call(lambda: setattr(sim.world.charger.faults, "silent_until", sim.now() + 6))
        fw.wait_for(lambda s: not s["charger"]["connected"], timeout=6, what="link down")
        fw.wait_for(lambda s: s["charger"]["connected"], timeout=10, what="link up again")

        # the charger reboots: the firmware notices and applies the volatile limit again
        sim.call(lambda: sim.world.charger.reboot(sim.now()))
        fw.wait_for(
            lambda s: s["charger"]["uptime_s"] is not None and s["charger"]["uptime_s"] < 5,
            what="the new uptime",
        )
        ok = False
        for _ in range(40):
            time.sleep(0.5)
            if sim.call(lambda: sim.world.charger.effective_limit_raw(sim.now())) == 75:
                ok = True
                break
        assert ok, fw.read_log()

        # no replies: requests fail and are counted; the link (frames) stays up
        sim.call(lambda: setattr(sim.world.charger.faults, "no_replies", True))
        st = fw.wait_for(lambda s: s["counters"]["timeouts"] >= 3, timeout=40, what="timeouts")
        assert st["charger"]["connected"]
        sim.call(lambda: setattr(sim.world.charger.faults, "no_replies", False))

        # older firmware: text pauses while HEX flows; still "connected"
        sim.call(lambda: setattr(sim.world.charger.faults, "text_pause_s", 30))
        time.sleep(4)
        assert fw.status()["charger"]["connected"]
        log = fw.read_log()
        assert "Traceback" not in log and "task link failed" not in log
        assert "not feeding the watchdog" not in log  # every task kept reporting in
        assert fw.proc and fw.proc.poll() is None
        sets_in_range(sim, 3.0, 12.0)


def test_clamped_to_the_models_range(tmp_path: Path) -> None:
    config = {"control": {"mode": "manual", "manual_current_a": 20.0}}
    with Background(make_world()) as sim, Firmware(
        tmp_path, sim.endpoints["charger"], config
    ) as fw:
        # the controller's decision follows the probed range one control step (0.25 s) later
        st = fw.wait_for(
            lambda s: s["charger"]["volatile_limit_a"] is not None
            and s["control"]["setpoint_a"] == 12.0,
            what="a limit and the clamped setpoint",
        )
        assert st["charger"]["volatile_limit_a"] == 12.0 and st["control"]["setpoint_a"] == 12.0
        sets_in_range(sim, 3.0, 12.0)


def test_stored_path_under_the_write_budget(tmp_path: Path) -> None:
    config: dict[str, Any] = {
        "control": {"mode": "manual", "manual_current_a": 2.0},
        "charger": {"stored_deadband_a": 1.0},
    }
    world = make_world(volatile="absent")
    with Background(world) as sim:
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            st = fw.wait_for(lambda s: s["charger"]["stored_limit_a"] == 3.0, what="0xEDF0 = 3.0")
            assert st["charger"]["volatile_limit"] is False
            assert st["charger"]["stored_writes"] == 1
            time.sleep(12)  # no refreshes of the stored value, ever
            st = fw.status()
            assert st["charger"]["stored_writes"] == 1
        assert sim.call(lambda: sim.world.charger.counters.nvm_writes) == 1
        # a new setpoint inside the deadband: skipped, the flash is not touched
        config["control"]["manual_current_a"] = 3.6
        with Firmware(tmp_path, sim.endpoints["charger"], config) as fw:
            st = fw.wait_for(
                lambda s: "deadband" in (s["control"]["charger_note"] or ""), what="the deadband"
            )
            assert st["charger"]["stored_writes"] == 1
        assert sim.call(lambda: sim.world.charger.counters.nvm_writes) == 1
        assert sets_in_range(sim, 3.0, 12.0) == [(0xEDF0, b"\x1e\x00")]


def test_broken_config_boots_in_safe_mode(tmp_path: Path) -> None:
    raw = (
        '{"control": {"mode": "turbo", "manual_current_a": 7.5}, "wifi": {"password": "hunter2"}}'
    )
    with Background(make_world()) as sim:
        with Firmware(tmp_path, sim.endpoints["charger"], raw_config=raw) as fw:
            st = fw.wait_for(probed, what="the probe")
            cfg = st["config"]
            assert cfg["safe_mode"] is True
            assert cfg["errors"] == [
                'control.mode: must be one of off, manual, auto (got "turbo")'
            ]
            assert st["control"]["mode"] == "off"
            assert st["charger"]["read_only"] is True
            time.sleep(3)
            assert "hunter2" not in fw.read_log() and "hunter2" not in str(fw.status())
        assert sim.call(lambda: list(sim.world.charger.sets)) == []
    not_json = "{control: off"
    with Background(make_world()) as sim:
        with Firmware(tmp_path, sim.endpoints["charger"], raw_config=not_json) as fw:
            st = fw.status()
            assert st["config"]["safe_mode"] and "not valid JSON" in st["config"]["errors"][0]


@pytest.mark.parametrize("gx", [False, True], ids=["unix_port", "venus_os_service"])
def test_over_a_pty(tmp_path: Path, gx: bool) -> None:
    with Background(make_world(), pty=True) as sim:
        with Firmware(tmp_path, sim.endpoints["pty"], MANUAL, gx=gx) as fw:
            st = fw.wait_for(lambda s: s["charger"]["volatile_limit_a"] == 7.5, what="the limit")
            assert st["counters"]["frames_bad"] == 0 and st["charger"]["pid"] == "0xA334"


@pytest.mark.parametrize("gx", [False, True], ids=["unix_port", "venus_os_service"])
def test_mode_off_hands_the_charger_back(tmp_path: Path, gx: bool) -> None:
    """Mode off leaves the charger to itself: one that the firmware had switched off (manual,
    not charging) is switched on again and no longer steered; it was once held off for good
    (the volatile 0 refreshed, 0x0200 left at off)."""
    from test_api import PASSWORD, call

    held = {"control": {"mode": "manual", "manual_current_a": 5.0, "manual_charging": False}}
    with Background(make_world()) as sim, Firmware(
        tmp_path, sim.endpoints["charger"], held, extra=("--admin-password", PASSWORD), gx=gx
    ) as fw:
        fw.wait_for(lambda s: s["control"]["charging"] is False and s["charger"]["min_a"]
                    is not None, what="held off")
        assert sim.call(lambda: sim.world.charger.on) is False
        assert call(fw, "POST", "/api/mode", {"mode": "off"}, PASSWORD)[0] == 200
        fw.wait_for(lambda s: s["charger"]["charging"] is True, 15, "charging by itself")
        assert sim.call(lambda: sim.world.charger.on) is True
        assert "left to itself" in "\n".join(fw.status()["log"])
        time.sleep(3)  # and left alone: nothing switches it off again
        assert sim.call(lambda: sim.world.charger.on) is True
