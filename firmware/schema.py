"""The settings: every field's kind, default and limits. Read in by config.py when settings are
loaded, saved or shown, and let go again (cold.py): on the board these tables would otherwise
hold about 10 kB of heap for good."""

# Leaf specs: (kind, default, *limits). Kinds: str/secret (max length), int/float (min, max),
# bool, choice (allowed values). A section is a dict of specs.
SCHEMA = {
    "hostname": ("str", "ip22-adapter", 32),
    "wifi": {
        "ssid": ("str", "", 32),
        "password": ("secret", "", 64),
        "ap_password": ("secret", "", 63),  # the board's own access point (8..63 characters)
    },
    "uart": {  # the board's UART to the charger header (ignored on the Unix port)
        "id": ("int", 1, 0, 2),
        "tx": ("int", 17, 0, 48),
        "rx": ("int", 18, 0, 48),
        "rxbuf": ("int", 2048, 1024, 16384),
        # the Venus OS service's serial port: /dev/ttyUSB0, socket://host:port, rfc2217://...
        "port": ("str", "", 128),
    },
    "http": {
        "port": ("int", 80, 1, 65535),
    },
    "admin": {  # changes from the web page and the API need this password; reading does not
        "password_hash": ("secret", "", 128),  # "sha256$salt$digest": see auth.py
    },
    "charger": {
        "max_current_a": ("float", 0.0, 0.0, 100.0),  # your battery's limit; 0 = the rating
        "volatile": ("choice", "auto", ("auto", "never")),  # 0x2015 when the charger has it
        "volatile_refresh_s": ("int", 20, 5, 50),  # the charger forgets it after 60 s
        "stored_deadband_a": ("float", 0.5, 0.0, 10.0),
        "stored_min_interval_s": ("int", 60, 0, 86400),
        "stored_daily_max": ("int", 150, 0, 1000),
    },
    "control": {
        "mode": ("choice", "off", ("off", "manual", "auto")),
        "manual_current_a": ("float", 0.0, 0.0, 100.0),
        "manual_charging": ("bool", True),
        "target_grid_w": ("float", -3.0, -2000.0, 500.0),  # negative: a small export margin
        "efficiency": ("float", 0.92, 0.5, 1.0),  # AC -> DC, for converting watts to amps
        "stale_s": ("float", 10.0, 2.0, 300.0),  # grid data older than this: safe state
        "settle_s": ("float", 1.0, 0.0, 60.0),  # after a change, before the next increase
        "rise_a_per_s": ("float", 5.0, 0.1, 50.0),
        "deadband_w": ("float", 3.0, 0.0, 500.0),
        "not_taking_a": ("float", 1.0, 0.1, 10.0),  # current this far below the limit: full
        "enable_delay_s": ("float", 1.0, 0.0, 3600.0),  # surplus for the minimum this long
        "enable_threshold_w": ("float", 0.0, 0.0, 2000.0),  # ... plus this margin: on
        "off_after_ws": ("float", 150.0, 0.0, 100000.0),  # switching is a stored write: off
        # only once the minimum has cost this much import
        "disable_delay_s": ("float", 60.0, 0.0, 3600.0),  # ... or after this long short
        "disable_threshold_w": ("float", 0.0, 0.0, 2000.0),
        "response_s": ("float", 2.0, 0.0, 30.0),  # the charger's time constant (trend, overdrive)
        "overdrive": ("bool", True),  # a big step down: hold the minimum, then the new limit
        "safe_state": ("choice", "off", ("off", "minimum")),
        "house_battery_guard": ("bool", True),  # never charge from a discharging house battery
        "stored_rise_after_s": (
            "float",
            10.0,
            0.0,
            3600.0,
        ),  # 0xEDF0 only: up to the lowest surplus of this window
    },
    "plug": {  # the off switch for a charger that has none over VE.Direct
        "type": ("choice", "none", ("none", "shelly", "tasmota", "mqtt")),
        "host": ("str", "", 64),  # shelly, tasmota: the plug's address
        "port": ("int", 80, 1, 65535),
        "timeout_s": ("float", 3.0, 0.5, 30.0),
        # mqtt (over the broker of the "mqtt" section): where to send on/off, where the
        # plug tells its state (ON/OFF, true/false, 1/0, or JSON with "output"/"POWER"/"state")
        "command_topic": ("str", "", 122),  # and at most 122 bytes in UTF-8: TOPICS
        "state_topic": ("str", "", 122),
        "payload_on": ("str", "ON", 32),
        "payload_off": ("str", "OFF", 32),
    },
    "venus": {
        "host": ("str", "", 64),  # the GX's IP address; empty: no grid data
        # Modbus TCP, the GX's broker, or (the Venus OS service on the GX) its D-Bus
        "protocol": ("choice", "modbus", ("modbus", "mqtt", "dbus")),
        "port": ("int", 502, 1, 65535),
        "unit": ("int", 100, 0, 255),  # com.victronenergy.system
        "function": ("choice", 4, (3, 4)),  # holding or input registers: Venus answers both
        "source": ("choice", "sum", ("sum", "L1", "L2", "L3")),
        "meter_unit": ("int", 30, 0, 255),  # the grid meter's own service; 0: do not check
        "interval_s": ("float", 1.0, 0.5, 60.0),
        "timeout_s": ("float", 2.0, 0.5, 30.0),
        "frozen_s": ("int", 60, 0, 3600),  # a value unchanged this long is stale; 0: off
        "mqtt_port": ("int", 1883, 1, 65535),  # protocol mqtt: the GX's broker
        "portal_id": ("str", "", 32),  # protocol mqtt: the GX's VRM id; empty: discovered
        "mqtt_password": ("secret", "", 64),  # protocol mqtt: the GX's security profile
        "keepalive_s": ("int", 30, 2, 55),  # protocol mqtt: Venus stops publishing after 60 s
    },
    "gx": {  # the Venus OS service (venus_os/service.py) only; the board ignores it
        "dbus": ("bool", True),  # the charger on the GX's D-Bus: its GUI and VRM see it
        "device_instance": ("int", 0, 0, 999),  # asked of localsettings (it may give another)
        "bridge_url": ("str", "", 128),  # --bridge: the adapter, http://<ip>[:port]
        "bridge_via": ("choice", "http", ("http", "mqtt")),  # its /api/status or MQTT state
        "bridge_topic": ("str", "", 64),  # via mqtt: the adapter's mqtt.base_topic
        "bridge_password": ("secret", "", 64),  # the adapter's admin password (/Mode writes)
    },
    "mqtt": {  # our state, commands and Home Assistant discovery on your broker
        "host": ("str", "", 64),  # the broker; empty: no MQTT
        "port": ("int", 1883, 1, 65535),
        "user": ("str", "", 64),
        "password": ("secret", "", 64),
        "ca_file": ("str", "", 128),  # a CA certificate (PEM or DER) on the board: TLS
        "client_id": ("str", "", 32),  # empty: the node id (ip22_<serial>)
        "base_topic": ("str", "", 64),  # empty: ip22/<charger serial>
        "update_s": ("float", 5.0, 1.0, 3600.0),  # changes are published this often
        "full_s": ("int", 300, 10, 86400),  # and everything, changed or not, this often
        "discovery": ("bool", True),  # Home Assistant discovery; off removes the entities
        "discovery_prefix": ("str", "homeassistant", 64),
        "commands": ("bool", True),  # mode, manual current and restart on <base>/set/...
    },
}

TOPIC_BYTES = 122  # umqtt.simple writes a SUBSCRIBE's length in one byte: 5 + the topic < 128
# The topic fields: (section, field, what is subscribed to beyond it, required). Checked in
# bytes (a "ä" is two): the "str" kind counts characters.
TOPICS = (
    ("mqtt", "base_topic", "/set/+", False),
    ("mqtt", "discovery_prefix", "/status", True),
    ("plug", "command_topic", "", False),
    ("plug", "state_topic", "", False),
)


def topic_error(value, suffix="", required=False):
    """Why `value` cannot be a topic of ours, or None. The broker refuses a wildcard, a NUL or
    a leading $ in a topic we publish to, and drops the connection for it."""
    if not isinstance(value, str):
        return "must be text"
    if not value:
        return "must not be empty" if required else None
    room = TOPIC_BYTES - len(suffix)
    if len(value.encode()) > room:
        return "must be at most %d bytes in UTF-8 (got %d)" % (room, len(value.encode()))
    for c, name in (("+", "+"), ("#", "#"), ("\0", "NUL")):
        if c in value:
            return "must not contain %s (MQTT wildcards and NUL are not allowed)" % name
    if value.startswith("$"):
        return "must not start with $ (reserved for the broker)"
    return None


def topic_errors(values):
    """["section.field: reason"] for the topic fields of a whole config."""
    errors = []
    for section, field, suffix, required in TOPICS:
        reason = topic_error(values[section][field], suffix, required)
        if reason:
            errors.append("%s.%s: %s" % (section, field, reason))
    return errors
