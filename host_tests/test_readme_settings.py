"""README's settings table against the schema: every setting is listed, with its real default
(three defaults had drifted from the code before this test existed)."""

from __future__ import annotations

import re
from typing import Any

import config
from conftest import ROOT

ROW = re.compile(r"^\| ((?:`[a-z_.0-9]+`(?:, )?)+) \| ([^|]+) \|", re.M)


def table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("| setting | default | meaning |")
    rows: dict[str, str] = {}
    for names, defaults in ROW.findall(text[start : text.index("\n\n", start)]):
        keys = re.findall(r"`([a-z_.0-9]+)`", names)
        values = [v.strip().strip("`") for v in defaults.split(",")]
        if len(values) == 1:  # "`wifi.ssid`, `wifi.password` | empty": one for all
            values *= len(keys)
        assert len(keys) == len(values), (names, defaults)
        rows.update(zip(keys, values))
    return rows


def shown(value: Any) -> str:
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def flat(defaults: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in defaults.items():
        if isinstance(value, dict):
            out.update({"%s.%s" % (name, key): v for key, v in value.items()})
        else:
            out[name] = value
    return out


def test_every_setting_is_in_the_table_with_its_default() -> None:
    rows = table()
    settings = flat(config.defaults())
    assert sorted(set(settings) - set(rows)) == []  # not documented
    assert sorted(set(rows) - set(settings)) == []  # documented, but no such setting
    wrong = {
        name: (rows[name], shown(value))
        for name, value in settings.items()
        if rows[name] not in (shown(value), str(value))
    }
    assert wrong == {}  # README says, the code has
