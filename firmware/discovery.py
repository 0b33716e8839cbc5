"""Home Assistant MQTT discovery: one retained config message per entity. Pure (no I/O).

Ids come from the charger's serial only (never the hostname or address: a rename would leave
duplicates in Home Assistant). Units and device classes are the pairs Home Assistant accepts
(since 2025.7 a wrong pair rejects the entity). The `dev` block holds only keys every Home
Assistant version knows. Abbreviated keys keep each message well under 1 kB.
"""

import json

# (component, key, name, device_class, unit, state_class, category, extra)
# `key` is also the field in the JSON state and the per-value topic.
# fmt: off
ENTITIES = (
    ("sensor", "battery_v", "Battery voltage", "voltage", "V", "measurement", None, None),
    ("sensor", "battery_a", "Charge current", "current", "A", "measurement", None, None),
    ("sensor", "battery_w", "Charge power", "power", "W", "measurement", None, None),
    ("sensor", "grid_w", "Grid power", "power", "W", "measurement", None, None),
    ("sensor", "setpoint_a", "Current setpoint", "current", "A", "measurement", None, None),
    ("sensor", "limit_a", "Confirmed limit", "current", "A", "measurement", None, None),
    ("sensor", "energy_kwh", "Energy charged", "energy", "kWh", "total_increasing", None, None),
    ("sensor", "grid_energy_kwh", "Energy from the grid", "energy", "kWh", "total_increasing",
     None, None),
    ("sensor", "charger_state", "Charger state", None, None, None, None, None),
    ("sensor", "charger_error", "Charger error", None, None, None, None, None),
    ("sensor", "reason", "Controller", None, None, None, None, None),
    ("sensor", "grid_age_s", "Grid data age", "duration", "s", "measurement", "diagnostic", None),
    ("sensor", "writes_24h", "Stored writes (24 h)", None, None, "measurement", "diagnostic",
     None),
    ("sensor", "writes_total", "Stored writes", None, None, "total_increasing", "diagnostic",
     None),
    ("sensor", "frames_bad", "Bad frames", None, None, "total_increasing", "diagnostic", None),
    ("sensor", "rssi_dbm", "WiFi signal", "signal_strength", "dBm", "measurement", "diagnostic",
     None),
    ("sensor", "uptime_s", "Uptime", "duration", "s", None, "diagnostic", None),
    ("sensor", "free_heap_b", "Free memory", "data_size", "B", "measurement", "diagnostic", None),
    ("binary_sensor", "charging", "Charging", "battery_charging", None, None, None, None),
    ("binary_sensor", "link", "Charger link", "connectivity", None, None, "diagnostic", None),
    ("select", "mode", "Mode", None, None, None, "config", {"ops": ["auto", "manual", "off"]}),
    ("number", "manual_a", "Manual current", "current", "A", None, "config", {"mode": "box"}),
    ("button", "reboot", "Restart", "restart", None, None, "config", None),
)
# fmt: on

COMMANDS = {"select": "mode", "number": "current", "button": "reboot"}  # under <base>/set/
STATE_KEYS = tuple(e[1] for e in ENTITIES if e[0] != "button")


def node_id(serial):
    from mqtt import node_id as make  # one rule, kept where it is used at every start

    return make(serial)


def config_topic(prefix, component, node, key):
    return "%s/%s/%s/%s/config" % (prefix, component, node, key)


def firmware_version(fwe):
    """VE.Direct's FWE "0342FF" (or FW "342") as Victron writes it: "3.42"."""
    digits = fwe[:-2] if len(fwe) == 6 and fwe[-2:] in ("FF", "ff") else fwe
    if len(digits) in (3, 4) and digits.isdigit():
        return "%d.%s" % (int(digits[:-2]), digits[-2:])
    return fwe


def messages(prefix, base, device, current=None, commands=True):
    """(topic, payload) for every entity, one at a time (all 23 at once would be a 15 kB peak
    on the heap). `device` has serial, model, pid, version, charger_firmware, url; `current` is
    (min, max) of the charger for the number. Without `commands` the controls (select, number,
    button) get an empty config: Home Assistant removes them instead of offering dead ones."""
    node = node_id(device["serial"])
    dev = {"ids": [node], "name": "IP22 charger", "mf": "Victron Energy"}
    if device.get("model"):
        dev["mdl"] = device["model"] + (", PID %s" % device["pid"] if device.get("pid") else "")
    dev["sw"] = device["version"]
    if device.get("charger_firmware"):
        dev["hw"] = firmware_version(device["charger_firmware"])
    if device.get("url"):
        dev["cu"] = device["url"]
    origin = {"name": "ip22-adapter", "sw": device["version"]}
    for component, key, name, dev_cla, unit, stat_cla, category, extra in ENTITIES:
        if not commands and component in COMMANDS:
            yield config_topic(prefix, component, node, key), b""
            continue
        entity = {"name": name, "uniq_id": node + "_" + key, "avty_t": base + "/status"}
        if component == "button":
            entity["cmd_t"] = base + "/set/" + COMMANDS[component]
            entity["pl_prs"] = "PRESS"
        else:
            entity["stat_t"] = base + "/state"
            entity["val_tpl"] = "{{ value_json.%s }}" % key
        if component in ("select", "number"):
            entity["cmd_t"] = base + "/set/" + COMMANDS[component]
        if component == "binary_sensor":
            entity["pl_on"] = "ON"
            entity["pl_off"] = "OFF"
        if component == "number":
            low, high = current if current else (0.0, 100.0)
            entity["min"] = low
            entity["max"] = high
            entity["step"] = 0.1
        if dev_cla:
            entity["dev_cla"] = dev_cla
        if unit:
            entity["unit_of_meas"] = unit
        if stat_cla:
            entity["stat_cla"] = stat_cla
        if category:
            entity["ent_cat"] = category
        if extra:
            entity.update(extra)
        entity["dev"] = dev
        entity["o"] = origin
        payload = json.dumps(entity, separators=(",", ":"))
        yield config_topic(prefix, component, node, key), payload


def removals(prefix, serial):
    """[(topic, b"")]: empty retained configs remove every entity."""
    node = node_id(serial)
    return [(config_topic(prefix, e[0], node, e[1]), b"") for e in ENTITIES]
