"""venusmqtt.MqttGrid without a broker: messages in through handle(), a Reading out of update().

The Session is made but never connected (no I/O before run()). Topics and rules: the Venus
section of /work/shared/reference/ha-mqtt-notes.md (section 5).
"""

from __future__ import annotations

import json
from typing import Any

import config
import pytest
import venusmqtt

ID = "c0619ab1d2e3"
SYS = "N/%s/system/0/Ac/Grid/%%s/Power" % ID
METER = "N/%s/grid/30/Ac/%%s/Power" % ID
HEARTBEAT = "N/%s/heartbeat" % ID
SERIAL = "N/%s/system/0/Serial" % ID


def grid(**settings: Any) -> venusmqtt.MqttGrid:
    s = config.defaults()["venus"]
    s.update(host="127.0.0.1", protocol="mqtt", portal_id=ID)
    s.update(settings)
    return venusmqtt.MqttGrid(s, log=lambda *_: None)


def val(value: Any) -> bytes:
    return json.dumps({"value": value}).encode()


def feed(g: venusmqtt.MqttGrid, now: int, *messages: tuple[str, bytes]) -> None:
    for topic, payload in messages:
        g.handle(topic.encode(), payload, now)
    g.update(now)


def phases(where: str, l1: Any, l2: Any, l3: Any) -> list[tuple[str, bytes]]:
    return [(where % name, val(w)) for name, w in (("L1", l1), ("L2", l2), ("L3", l3))]


# -- the portal id ------------------------------------------------------------------------


def test_portal_discovered_from_serial() -> None:
    g = grid(portal_id="")
    feed(g, 1000, (SYS % "L1", val(100)))  # before the portal is known: not ours yet
    assert g.portal is None and g.reading.seq == 0
    feed(g, 1100, (SERIAL, val(ID)))
    assert g.portal == ID
    # following it published and subscribed on a session that is not connected: harmless
    assert not g.session.connected
    assert g.errors == {} and g.last_error is None
    feed(g, 1200, (SYS % "L1", val(100)))
    assert (g.reading.power_w, g.reading.seq) == (100, 1)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"c0619ab1d2e3",
        b'["c0619ab1d2e3"]',
        b"\xff\xfe",
        val(None),
        val(123),
        val(""),
        val("+"),
        val("#"),
        val("c0619ab1/d2e3"),
        val("c0619ab1 d2e3"),
        val("c0619ab1d2é3"),
        val("a" * 33),
    ],
)
def test_odd_serial_is_refused(payload: bytes) -> None:
    g = grid(portal_id="")
    feed(g, 1000, (SERIAL, payload))
    assert g.portal is None
    feed(g, 1100, (SYS % "L1", val(100)))
    assert g.reading.seq == 0


def test_configured_portal_is_kept() -> None:
    g = grid()
    feed(g, 1000, ("N/0123456789ab/system/0/Serial", val("0123456789ab")))
    assert g.portal == ID


# -- grid power ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", [SYS, METER], ids=["system", "meter"])
@pytest.mark.parametrize(
    "source,values,power",
    [
        ("sum", (100, -20, 5), 85),
        ("L1", (100, -20, 5), 100),
        ("L2", (100, -20, 5), -20),
        ("L3", (100, -20, 5), 5),
        ("sum", (230.6, None, None), 231),  # single phase: L2/L3 null count as 0
        ("L1", (230.6, None, None), 231),
        ("sum", (None, None, None), "null"),
        ("L2", (230.6, None, None), "null"),
    ],
)
def test_power(where: str, source: str, values: tuple[Any, Any, Any], power: Any) -> None:
    g = grid(source=source)
    feed(g, 5000, *phases(where, *values))
    r = g.reading
    if power == "null":
        assert (r.power_w, r.seq, r.at_ms) == (None, 0, None)
        assert g.errors == {"null": 1} and g.last_error.startswith("null:")
    else:
        assert (r.power_w, r.seq, r.at_ms) == (power, 1, 5000)
        assert r.phases == [None if w is None else round(w) for w in values]
        assert g.errors == {} and g.last_error is None


@pytest.mark.parametrize("where", [SYS, METER], ids=["system", "meter"])
def test_a_phase_that_turns_null_is_invalid_not_zero(where: str) -> None:
    """Counted as 0, L1 going null would turn 1500 - 900 + 400 W of import into 500 W export."""
    g = grid()
    feed(g, 1000, *phases(where, 1500, -900, 400))
    assert g.reading.power_w == 1000
    feed(g, 2000, (where % "L1", val(None)))
    assert (g.reading.power_w, g.reading.seq, g.reading.at_ms) == (1000, 1, 1000)
    assert g.errors == {"null": 1} and g.last_error == "null: L1 null (invalid)"
    feed(g, 3000, (HEARTBEAT, b"{}"), (where % "L1", val(None)))  # republished: still invalid
    assert g.reading.seq == 1 and g.errors == {"null": 2}
    feed(g, 4000, (where % "L1", val(1400)))
    assert (g.reading.power_w, g.reading.seq, g.reading.at_ms) == (900, 2, 4000)
    assert g.last_error is None


def test_phases_null_from_the_start_stay_absent() -> None:
    """A single-phase system: L2/L3 are null in every full republish, and count as 0."""
    g = grid()
    for now in (1000, 2000, 3000):
        feed(g, now, *phases(SYS, 230 + now // 1000, None, None), (HEARTBEAT, b"{}"))
    assert (g.reading.power_w, g.reading.seq) == (233, 3) and g.errors == {}


def test_a_null_phase_only_matters_where_it_is_used() -> None:
    g = grid(source="L1")
    feed(g, 1000, *phases(SYS, 100, 200, 300))
    feed(g, 2000, (SYS % "L2", val(None)))
    assert (g.reading.power_w, g.reading.seq) == (100, 2) and g.errors == {}
    g = grid()  # the meter is used: the system values' nulls do not count
    feed(g, 1000, *phases(SYS, 100, 200, 300), *phases(METER, 90, 190, 290))
    feed(g, 2000, (SYS % "L1", val(None)), (HEARTBEAT, b"{}"))
    assert (g.reading.power_w, g.reading.seq) == (570, 2) and g.errors == {}


@pytest.mark.parametrize(
    "topic",
    [
        "N/0123456789ab/system/0/Ac/Grid/L1/Power",  # another GX
        "N/%s/system/0/Ac/Grid/L4/Power" % ID,
        "N/%s/system/0/Ac/Grid/L1/Current" % ID,
        "N/%s/grid/30/Ac/L1/Voltage" % ID,
        "N/%s/grid/31/Ac/L1/Power" % ID,  # a second meter: the first one seen counts
        "R/%s/system/0/Ac/Grid/L1/Power" % ID,
        "N/%s" % ID,
    ],
)
def test_other_topics_are_ignored(topic: str) -> None:
    g = grid()
    feed(g, 1000, (METER % "L1", val(480)))
    feed(g, 2000, (topic, val(9999)))
    assert (g.reading.power_w, g.reading.seq, g.reading.at_ms) == (480, 1, 1000)
    assert g.errors == {}


def test_heartbeat_refreshes_time_and_seq() -> None:
    g = grid()
    feed(g, 1000, (HEARTBEAT, b"{}"))  # no value yet: nothing to refresh
    assert g.reading.seq == 0 and g.errors == {"null": 1}
    feed(g, 2000, (SYS % "L1", val(100)))
    feed(g, 5000, (HEARTBEAT, b"{}"))
    assert (g.reading.power_w, g.reading.seq, g.reading.at_ms) == (100, 2, 5000)
    assert g.last_error is None
    feed(g, 6000)  # nothing arrived: no new reading
    assert (g.reading.seq, g.reading.at_ms) == (2, 5000)


def test_meter_topic_is_preferred() -> None:
    g = grid()
    feed(g, 1000, (SYS % "L1", val(500)))
    assert g.reading.power_w == 500
    feed(g, 2000, (METER % "L1", val(480)))
    feed(g, 3000, (SYS % "L1", val(9999)))
    assert (g.reading.power_w, g.reading.seq) == (480, 3)


def test_meter_dropout_is_an_error() -> None:
    g = grid()
    feed(g, 1000, (METER % "L1", val(480)), (SYS % "L1", val(480)))
    # the meter's service goes; the system value falls back to the Multi's AC input
    feed(g, 2000, (METER % "L1", b""), (SYS % "L1", val(35)))
    assert (g.reading.power_w, g.reading.seq, g.reading.at_ms) == (480, 1, 1000)
    assert g.errors == {"meter": 1} and g.last_error.startswith("meter:")
    feed(g, 3000, (HEARTBEAT, b"{}"), (SYS % "L1", val(36)))
    assert g.reading.seq == 1 and g.errors == {"meter": 2}
    feed(g, 4000, (METER % "L1", val(470)))  # back
    assert (g.reading.power_w, g.reading.seq) == (470, 2) and g.last_error is None


def test_second_meter_going_is_ignored() -> None:
    g = grid()
    feed(g, 1000, (METER % "L1", val(480)))
    feed(g, 2000, ("N/%s/grid/31/Ac/L1/Power" % ID, b""), (HEARTBEAT, b"{}"))
    assert (g.reading.power_w, g.reading.seq) == (480, 2) and g.errors == {}


@pytest.mark.parametrize(
    "frozen_s,now,error",
    [
        (60, 30000, None),
        (60, 60000, None),  # exactly the limit: still fine
        (60, 63000, "frozen"),
        (5, 6000, "frozen"),
        (0, 3600000, None),  # 0: off
    ],
)
def test_frozen(frozen_s: int, now: int, error: str | None) -> None:
    g = grid(frozen_s=frozen_s)
    feed(g, 0, (SYS % "L1", val(100)))
    feed(g, now, (HEARTBEAT, b"{}"), (SYS % "L1", val(100)))  # Venus republishes: unchanged
    if error:
        assert (g.reading.seq, g.reading.at_ms) == (1, 0)
        assert g.errors == {error: 1} and g.last_error.startswith(error + ":")
        feed(g, now + 1000, (SYS % "L1", val(101)))  # it moves again
        assert (g.reading.power_w, g.reading.seq) == (101, 2) and g.last_error is None
    else:
        assert (g.reading.seq, g.reading.at_ms) == (2, now) and g.errors == {}


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{",
        b"[1, 2]",
        b"{}",
        b'{"value": "abc"}',
        b'{"value": true}',
        b'{"value": [1]}',
        b'{"value": {"w": 1}}',
        b"\xff\xfe\x00",
        b'{"value": NaN}',
        b'{"value": 1e999}',
        b'{"value": -Infinity}',
        b"[" * 100000,  # deep nesting
    ],
    ids=lambda p: repr(p[:20]),
)
def test_bad_payload_is_a_protocol_error(payload: bytes) -> None:
    g = grid()
    feed(g, 1000, (SYS % "L1", val(100)))
    feed(g, 2000, (SYS % "L1", payload))  # no exception, in handle() or update()
    assert g.errors == {"protocol": 1} and g.last_error.startswith("protocol:")
    assert (g.reading.power_w, g.reading.seq) == (100, 1)


def test_undecodable_topic_never_raises() -> None:
    g = grid()
    g.handle(b"N/\xff\xfe/system/0/Ac/Grid/L1/Power", val(100), 1000)
    g.update(1000)
    assert g.reading.seq == 0 and set(g.errors) <= {"protocol"}


BATTERY = "N/%s/system/0/Dc/Battery/Power" % ID


def test_house_battery_power_for_the_guard() -> None:
    g = grid()
    feed(g, 1000, (SYS % "L1", val(-100)), (BATTERY, val(-412.4)))
    assert (g.reading.power_w, g.reading.battery_w) == (-100, -412)
    for payload in (val(None), b""):  # invalid, or the battery's service has gone
        feed(g, 2000, (BATTERY, payload))
        assert g.reading.battery_w is None
    feed(g, 3000, (BATTERY, val("lots")), (BATTERY, val(True)))
    assert g.errors == {"protocol": 2} and g.reading.battery_w is None
    assert g.reading.power_w == -100  # the grid reading is not touched by any of it
