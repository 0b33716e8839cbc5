"""discovery.py: every config message is one Home Assistant accepts and that fits our state.

The rules come from /work/shared/reference/ha-mqtt-notes.md (sections 1 to 3, pitfalls 1, 6, 8);
the section is named next to each table.
"""

from __future__ import annotations

import json
import re
from typing import Any

import config
import discovery
import pytest

PREFIX = "homeassistant"
SERIAL = "HQ2230XY6XR"
BASE = "ip22/" + SERIAL
HOST = "ip22-garage"  # the board's hostname: must never end up in an id
DEVICE: dict[str, Any] = {
    "serial": SERIAL,
    "model": "Blue Smart IP22 Charger 24|16 (3)",
    "pid": "0xA334",
    "version": "0.1.0",
    "charger_firmware": "3.42",
    "url": "http://%s.local/" % HOST,
}
ODD_SERIALS = ("HQ2230XY6XR", "HQ 22/30+XY#6.XR", "hq-22_30", "HQ22é30", "adapter-a1b2c3d4e5f6")
RANGES = (None, (0.0, 12.0), (7.5, 30.0))
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
TEMPLATE_RE = re.compile(r"^\{\{ value_json\.([a-z0-9_]+) \}\}$")

# Notes section 2, "Units HA accepts": device_class -> (units, state classes; None = any).
# data_size is not in the notes' table: HA core sensor/const.py (home-assistant/core@00eb6680)
# has DATA_SIZE: set(UnitOfInformation) (B, kB, ...) with any state class.
UNITS: dict[str, tuple[set[str], set[str] | None]] = {
    "voltage": ({"V", "µV", "mV", "kV", "MV"}, {"measurement"}),
    "current": ({"A", "mA"}, {"measurement"}),
    "power": ({"W", "mW", "kW", "MW", "GW", "TW"}, {"measurement"}),
    "energy": ({"kWh", "Wh", "MWh", "J"}, {"total_increasing", "total"}),
    "duration": ({"s", "ms", "µs", "min", "h", "d"}, None),
    "signal_strength": ({"dBm", "dB"}, {"measurement"}),
    "temperature": ({"°C", "°F", "K"}, {"measurement"}),
    "data_size": ({"bit", "kbit", "B", "kB", "KiB", "MB", "MiB"}, None),
}

# Notes section 2, "Entity keys": the keys each component supports (abbreviated).
COMMON = {"name", "uniq_id", "avty_t", "pl_avail", "pl_not_avail", "dev", "o", "def_ent_id"}
COMMON |= {"ent_cat", "en", "ic", "json_attr_t", "qos"}
KEYS: dict[str, set[str]] = {
    "sensor": {"stat_t", "val_tpl", "dev_cla", "unit_of_meas", "stat_cla", "sug_dsp_prc"}
    | {"exp_aft", "ops"},
    "binary_sensor": {"stat_t", "val_tpl", "pl_on", "pl_off", "dev_cla", "exp_aft"},
    "number": {"stat_t", "val_tpl", "cmd_t", "cmd_tpl", "min", "max", "step", "mode"}
    | {"dev_cla", "unit_of_meas"},
    "select": {"stat_t", "val_tpl", "cmd_t", "cmd_tpl", "ops"},
    "button": {"cmd_t", "cmd_tpl", "pl_prs", "dev_cla"},
}
CATEGORIES = {  # notes section 2, entity_category: `config` on S/BS fails setup
    "sensor": {"diagnostic"},
    "binary_sensor": {"diagnostic"},
    "number": {"config"},
    "select": {"config"},
    "button": {"config"},
}
DEV_KEYS = {"ids", "cns", "name", "mf", "mdl", "sw", "hw", "cu"}  # notes section 3, pitfall 8


def entities(
    serial: str = SERIAL, current: tuple[float, float] | None = (0.0, 12.0)
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(topic, component, key, payload) of every message, the payload parsed."""
    device = dict(DEVICE, serial=serial)
    out = []
    for topic, payload in discovery.messages(PREFIX, BASE, device, current):
        assert isinstance(payload, str) and len(payload.encode()) < 1024, topic
        parts = topic.split("/")
        out.append((topic, parts[1], parts[3], json.loads(payload)))
    return out


def test_one_message_per_entity() -> None:
    got = [(component, key) for _, component, key, _ in entities()]
    assert got == [(e[0], e[1]) for e in discovery.ENTITIES]
    assert len(set(got)) == len(got)


@pytest.mark.parametrize("serial", ODD_SERIALS)
def test_topics_and_ids(serial: str) -> None:
    node = discovery.node_id(serial)
    assert ID_RE.match(node), node
    uniq = set()
    for topic, component, key, p in entities(serial):
        prefix, comp, topic_node, object_id, tail = topic.split("/")
        assert (prefix, comp, topic_node, object_id, tail) == (
            PREFIX,
            component,
            node,
            key,
            "config",
        )
        assert ID_RE.match(object_id) and component in KEYS
        assert p["uniq_id"] == node + "_" + key and ID_RE.match(p["uniq_id"])
        assert HOST not in topic and HOST not in p["uniq_id"]
        uniq.add(p["uniq_id"])
    assert len(uniq) == len(discovery.ENTITIES)


@pytest.mark.parametrize("topic,component,key,p", [pytest.param(*e, id=e[2]) for e in entities()])
def test_entity(topic: str, component: str, key: str, p: dict[str, Any]) -> None:
    assert set(p) <= COMMON | KEYS[component], set(p) - COMMON - KEYS[component]
    assert p["avty_t"] == BASE + "/status"
    assert p.get("ent_cat") in CATEGORIES[component] | {None}
    assert p["o"]["name"]
    if component != "button":
        assert p["stat_t"] == BASE + "/state"
        match = TEMPLATE_RE.match(p["val_tpl"])
        assert match and match.group(1) == key
        assert key in discovery.STATE_KEYS, "%s is not in STATE_KEYS" % key
    if component in ("select", "number", "button"):
        assert p["cmd_t"].startswith(BASE + "/set/")
        assert ID_RE.match(p["cmd_t"][len(BASE + "/set/") :])
    if component == "button":
        assert p["pl_prs"] == "PRESS"
    if component == "binary_sensor":
        assert (p["pl_on"], p["pl_off"]) == ("ON", "OFF")
    if component == "select":
        assert set(config.schema()["control"]["mode"][2]) <= set(p["ops"])
        assert {"auto", "manual", "off"} <= set(p["ops"])
    if component == "sensor" and "ops" in p:
        assert p["dev_cla"] == "enum"  # options without it are rejected
    if component in ("sensor", "number") and "unit_of_meas" in p:
        units, state_classes = UNITS[p["dev_cla"]]
        assert p["unit_of_meas"] in units
        if component == "sensor" and state_classes and "stat_cla" in p:
            assert p["stat_cla"] in state_classes
    if p.get("dev_cla") == "energy":
        assert p["stat_cla"] == "total_increasing"


@pytest.mark.parametrize("current", RANGES)
def test_number_range(current: tuple[float, float] | None) -> None:
    numbers = [p for _, component, _, p in entities(current=current) if component == "number"]
    assert numbers
    for p in numbers:
        assert 0 <= p["min"] < p["max"]
        assert p["step"] >= 0.001
        if current is not None:
            assert (p["min"], p["max"]) == current


def test_device_block() -> None:
    devs = [p["dev"] for _, _, _, p in entities()]
    dev = devs[0]
    assert all(d == dev for d in devs)  # one device
    assert set(dev) <= DEV_KEYS, set(dev) - DEV_KEYS
    assert discovery.node_id(SERIAL) in dev["ids"]
    assert dev["cu"].startswith(("http://", "https://"))
    assert not any(HOST in i for i in dev["ids"])


def test_device_block_without_optional_fields() -> None:
    device = {"serial": SERIAL, "model": None, "pid": None, "version": "0.1.0"}
    for _, payload in discovery.messages(PREFIX, BASE, device, None):
        dev = json.loads(payload)["dev"]
        assert set(dev) <= DEV_KEYS and dev["ids"] and None not in dev.values()


@pytest.mark.parametrize("serial", ODD_SERIALS)
def test_removals_clear_exactly_the_published_topics(serial: str) -> None:
    published = [t for t, _ in discovery.messages(PREFIX, BASE, dict(DEVICE, serial=serial))]
    removed = discovery.removals(PREFIX, serial)
    assert [t for t, _ in removed] == published
    assert all(payload in (b"", "") for _, payload in removed)


def test_state_keys_are_entity_keys() -> None:
    """Each key once, and only keys of entities with a state (val_tpl: see test_entity)."""
    with_state = {e[1] for e in discovery.ENTITIES if e[0] != "button"}
    assert set(discovery.STATE_KEYS) <= with_state
    assert len(set(discovery.STATE_KEYS)) == len(discovery.STATE_KEYS)


def test_without_commands_the_controls_are_removed() -> None:
    """mqtt.commands off: no select, number or button that would do nothing; their empty
    retained configs remove those a former announcement made."""
    out = dict(discovery.messages(PREFIX, BASE, DEVICE, (3.0, 12.0), commands=False))
    assert out.keys() == dict(discovery.messages(PREFIX, BASE, DEVICE)).keys()
    removed = {t for t, p in out.items() if p == b""}
    assert removed == {
        discovery.config_topic(PREFIX, c, "ip22_" + SERIAL, k)
        for c, k in (("select", "mode"), ("number", "manual_a"), ("button", "reboot"))
    }
    assert not [p for p in out.values() if p and "cmd_t" in json.loads(p)]
