"""config.py and the charger link's WriteBudget: run by pytest and on the MicroPython Unix port."""

import json
import os

import charger
import config

TMP = "/tmp/ip22-config-test-%d" % (os.getpid() if hasattr(os, "getpid") else 1)


def tmp_file(name, text=None):
    try:
        os.mkdir(TMP)
    except OSError:
        pass
    path = TMP + "/" + name
    for p in (path, path + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    return path


def test_defaults_are_safe():
    d = config.defaults()
    assert d["control"]["mode"] == "off"
    assert d["charger"]["volatile"] == "auto"
    assert d["charger"]["stored_daily_max"] == 150
    assert d["wifi"] == {"ssid": "", "password": "", "ap_password": ""}
    values, errors = config.validate(d)
    assert errors == [] and values == d


def test_validation_names_field_and_reason():
    data = {
        "control": {"mode": "turbo", "manual_current_a": -1},
        "charger": {"stored_daily_max": 2.5, "volatile": "never", "stored_deadband_a": True},
        "http": {"port": "80"},
        "wifi": {"password": 12},
        "colour": "red",
    }
    values, errors = config.validate(data)
    assert sorted(errors) == sorted(
        [
            'control.mode: must be one of off, manual, auto (got "turbo")',
            "control.manual_current_a: must be 0.0..100.0 (got -1)",
            "charger.stored_daily_max: must be a whole number (got 2.5)",
            "charger.stored_deadband_a: must be a number (got true)",
            'http.port: must be a number (got "80")',
            "wifi.password: must be text (got ***)",
            "colour: unknown setting",
        ]
    ), errors
    assert values["charger"]["volatile"] == "never"  # the valid field is kept
    assert values["control"]["mode"] == "off" and values["http"]["port"] == 80


def test_section_must_be_an_object():
    values, errors = config.validate({"wifi": "home"})
    assert errors == ["wifi: must be an object"] and values["wifi"]["ssid"] == ""
    values, errors = config.validate([1, 2])
    assert errors == ["config: must be an object"]


def test_ints_become_floats_where_floats_are_asked():
    values, errors = config.validate({"control": {"manual_current_a": 7}})
    assert errors == [] and values["control"]["manual_current_a"] == 7.0
    assert isinstance(values["control"]["manual_current_a"], float)


def test_load_missing_file_gives_defaults_without_safe_mode():
    values, errors, source = config.load(tmp_file("none.json"))
    assert not errors and values == config.defaults()
    assert "no " in source


def test_load_broken_json_is_safe_mode():
    values, errors, source = config.load(tmp_file("broken.json", "{control: off"))
    assert "not valid JSON" in errors[0]
    assert values == config.defaults()


def test_load_invalid_field_keeps_network_and_nothing_else():
    text = json.dumps(
        {
            "wifi": {"ssid": "home", "password": "secret"},
            "http": {"port": 8080},
            "control": {"mode": "manual", "manual_current_a": 999},
        }
    )
    values, errors, source = config.load(tmp_file("invalid.json", text))
    assert errors == ["control.manual_current_a: must be 0.0..100.0 (got 999)"]
    assert "safe mode" in source
    assert values["wifi"]["ssid"] == "home" and values["http"]["port"] == 8080
    assert values["control"]["mode"] == "off"  # not "manual": safe mode touches nothing


def test_save_is_atomic_and_validated():
    path = tmp_file("saved.json")
    values = config.defaults()
    values["control"]["mode"] = "manual"
    config.save(path, values)
    assert config.load(path)[0] == values
    assert "saved.json.tmp" not in os.listdir(TMP)
    values["control"]["mode"] = "turbo"
    try:
        config.save(path, values)
    except ValueError as err:
        assert "control.mode" in str(err)
    else:
        raise AssertionError("an invalid config was saved")
    assert config.load(path)[0]["control"]["mode"] == "manual"  # the old file is intact


def test_redacted():
    values = config.defaults()
    values["wifi"]["password"] = "hunter2"
    shown = config.redacted(values)
    assert shown["wifi"]["password"] == "***" and values["wifi"]["password"] == "hunter2"
    assert "hunter2" not in json.dumps(shown)
    assert config.redacted(config.defaults())["wifi"]["password"] == ""


# -- the write budget of stored settings ---------------------------------------------------

MIN = 60 * 1000


def test_budget_skips_unchanged_and_deadband():
    b = charger.WriteBudget(1.0, 600, 24)
    assert b.check(8.0, 8.0, 0) == "unchanged"
    assert b.check(8.0, 8.04, 0) == "unchanged"
    assert b.check(8.0, 8.5, 0) == "within the 1.0 A deadband"
    assert b.check(8.0, 7.5, 0) == "within the 1.0 A deadband"
    assert b.check(8.0, 9.0, 0) is None
    assert b.check(None, 9.0, 0) is None  # the stored value is unknown: write


def test_budget_spaces_increases_but_not_decreases():
    b = charger.WriteBudget(0.5, 600, 24)
    b.record(0)
    assert b.check(5.0, 8.0, 5 * MIN) == "next increase allowed in 300 s"
    assert b.check(8.0, 5.0, 5 * MIN) is None  # a decrease: now
    assert b.check(5.0, 8.0, 10 * MIN) is None


def test_budget_daily_cap_then_a_new_day():
    b = charger.WriteBudget(0.5, 0, 3)
    for k in range(3):
        assert b.check(5.0 + k, 6.0 + k, k * MIN) is None
        b.record(k * MIN)
    assert b.full(3 * MIN)
    assert b.check(9.0, 4.0, 3 * MIN) == "daily limit of 3 stored writes reached"
    assert b.used_24h(3 * MIN) == 3
    day = 24 * 60 * MIN
    assert b.used_24h(day + 1) == 2  # the first write has left the 24 h window
    assert b.check(9.0, 4.0, day + 1) is None


def test_merged_keeps_secrets_sent_back_redacted():
    values = config.defaults()
    values["wifi"]["password"] = "hunter2"
    out = config.merged(values, {"wifi": {"ssid": "home", "password": "***"}, "x": 1})
    assert out["wifi"] == {"ssid": "home", "password": "hunter2", "ap_password": ""}
    assert out["x"] == 1 and config.validate(out)[1] == ["x: unknown setting"]
    out = config.merged(values, {"wifi": {"password": "new"}})
    assert out["wifi"]["password"] == "new" and values["wifi"]["password"] == "hunter2"


def test_admin_password_hash_and_headers():
    import auth

    stored = auth.make_hash("s3cret", b"\x01\x02\x03\x04\x05\x06\x07\x08")
    assert stored.startswith("sha256$0102030405060708$") and "s3cret" not in stored
    assert auth.verify("s3cret", stored) and not auth.verify("s3cre", stored)
    assert not auth.verify("s3cret", "md5$00$00") and not auth.verify("s3cret", "")
    assert auth.make_hash("a") != auth.make_hash("a")  # a fresh salt each time
    assert auth.password_from_header("Bearer s3cret") == "s3cret"
    assert auth.password_from_header("Basic YWRtaW46czNjcmV0") == "s3cret"  # admin:s3cret
    assert auth.password_from_header("Basic !!!") is None
    assert (
        auth.password_from_header("Digest x") is None and auth.password_from_header(None) is None
    )


def test_the_schema_is_read_in_only_while_used():
    import sys

    sys.modules.pop("schema", None)
    values, errors = config.validate({"control": {"mode": "auto"}})
    assert values["control"]["mode"] == "auto" and not errors
    assert "schema" not in sys.modules  # ~10 kB of tables the board does not keep


def test_a_choice_is_the_very_value_not_an_equal_one():
    values, errors = config.validate({"venus": {"function": 4.0}, "mqtt": {}})
    assert errors == ["venus.function: must be one of 3, 4 (got 4.0)"]
    assert config.validate({"venus": {"function": True}})[1]  # True == 1, still not 3 or 4
    assert config.validate({"venus": {"function": 3}})[0]["venus"]["function"] == 3


def test_a_value_nested_deep_is_refused_by_its_kind():
    deep = []
    for _ in range(2000):
        deep = [deep]
    values, errors = config.validate({"hostname": deep, "control": {"mode": {"a": deep}}})
    assert sorted(errors) == [
        "control.mode: must be one of off, manual, auto (got an object)",
        "hostname: must be text (got a list)",
    ]
    values, errors, source = config.load(tmp_file("deep.json", "[" * 5000 + "]" * 5000))
    assert errors and values == config.defaults()


def test_a_change_in_safe_mode_starts_from_the_file_not_the_safe_values():
    text = json.dumps(
        {
            "wifi": {"ssid": "home"},
            "venus": {"host": "192.168.1.5"},
            "charger": {"max_current_a": 8.0},
            "control": {"mode": "auto", "efficency": 0.9},  # the typo: safe mode
        }
    )
    path = tmp_file("typo.json", text)
    in_force, errors, source = config.load(path)
    assert errors and in_force["venus"]["host"] == "" and in_force["wifi"]["ssid"] == "home"
    in_force["admin"]["password_hash"] = "sha256$00$" + "0" * 64  # set at start, not saved
    base = config.restored(path, in_force)
    assert base["venus"]["host"] == "192.168.1.5" and base["charger"]["max_current_a"] == 8.0
    assert base["control"]["mode"] == "auto"
    assert base["admin"] == in_force["admin"] and base["wifi"]["ssid"] == "home"
    fixed = config.merged(base, {"control": {"efficiency": 0.9}})
    assert config.validate(fixed)[1] == []
    assert config.restored(tmp_file("gone.json"), in_force) is in_force


def test_topics_are_checked_in_bytes_and_for_wildcards():
    import cold

    schema = cold.load("schema")  # not kept: like config.schema()
    assert schema.topic_error("ip22/garage") is None
    assert schema.topic_error("") is None and schema.topic_error("", required=True)
    assert schema.topic_error("s/" + "x" * 120) is None  # 122 bytes: umqtt's one-byte limit
    too_long = schema.topic_error("s/" + "ü" * 61)  # 63 characters, 124 bytes
    assert too_long == "must be at most 122 bytes in UTF-8 (got 124)"
    assert "116 bytes" in schema.topic_error("x" * 117, "/set/+")  # room for what follows
    for bad in ("garage/+/ip22", "ip22/#", "a\0b"):
        assert "wildcards and NUL" in schema.topic_error(bad), bad
    assert "reserved" in schema.topic_error("$SYS/x")
    values = config.defaults()
    values["mqtt"]["base_topic"] = "garage/+"
    values["mqtt"]["discovery_prefix"] = ""
    values["plug"]["state_topic"] = "stat/" + "ä" * 60
    assert schema.topic_errors(values) == [
        "mqtt.base_topic: must not contain + (MQTT wildcards and NUL are not allowed)",
        "mqtt.discovery_prefix: must not be empty",
        "plug.state_topic: must be at most 122 bytes in UTF-8 (got 125)",
    ]
    assert schema.topic_errors(config.defaults()) == []


def test_a_password_typed_as_the_hash_is_refused_not_a_lock_out():
    values, errors = config.validate({"admin": {"password_hash": "newpass"}})
    assert errors and errors[0].startswith("admin.password_hash: must be a hash the board made")
    assert values["admin"]["password_hash"] == ""  # flash.py --admin-password sets one again
    good = "sha256$0011223344556677$" + "ab" * 32
    assert config.validate({"admin": {"password_hash": good}})[1] == []


def test_a_whole_config_has_its_topics_checked():
    errors = config.validate({"mqtt": {"base_topic": "garage/+/ip22"}})[1]
    assert errors == ["mqtt.base_topic: must not contain + (MQTT wildcards and NUL are not "
                      "allowed)"], errors
    assert config.validate({"plug": {"state_topic": "ä" * 62}})[1]  # 124 bytes in UTF-8
    assert not config.validate({"plug": {"state_topic": "ä" * 61}})[1]  # 122: fits
