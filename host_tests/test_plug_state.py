"""What relays publish on their state topic, read as on/off (plug.parse_state): Tasmota's
ON/OFF, Shelly Gen2's JSON "output", Shelly Gen1's "ison", generic true/false/1/0."""

from __future__ import annotations

import plug
import pytest


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"ON", True),
        (b"OFF", False),
        (b"on", True),
        (b" off\n", False),
        (b"true", True),
        (b"false", False),
        (b"1", True),
        (b"0", False),
        (b'{"id":0,"source":"WS_in","output":true,"apower":0.0}', True),
        (b'{"id":0,"output":false}', False),
        (b'{"POWER":"ON"}', True),
        (b'{"POWER":"OFF"}', False),
        (b'{"ison":true}', True),
        (b'{"state":"off"}', False),
        (b"", None),
        (b"maybe", None),
        (b"{not json", None),
        (b'{"apower": 12}', None),
        (b'["ON"]', None),
        (b"\xff\xfe", None),
    ],
)
def test_parse_state(payload: bytes, expected: bool | None) -> None:
    assert plug.parse_state(payload) is expected
