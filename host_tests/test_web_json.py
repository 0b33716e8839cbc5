"""web.as_json's pieces: the same JSON as json.dumps, never in one large block."""

from __future__ import annotations

import json
from typing import Any

import pytest
import web

CASES: list[Any] = [
    {},
    {"a": 1},
    {"a": {"b": [1, 2, 3], "c": {"d": None}}, "e": list(range(40)), "f": 'x"y\u00e9'},
    {"s": {"t": {"u": [{"v": 1}] * 20}}, "empty": [], "emptyd": {}, "l": [None] * 17},
]


@pytest.mark.parametrize("obj", CASES)
def test_the_pieces_make_the_same_json(obj: Any) -> None:
    assert json.loads("".join(web._chunks(web._pieces(obj)))) == obj


def test_a_history_sized_answer_comes_in_small_writes() -> None:
    history = {"interval_s": 10}
    for key in ("grid_w", "charger_w", "setpoint_a"):
        history[key] = [-12345.6 + i for i in range(180)]  # the full half hour, wide values
    whole = json.dumps(history)
    chunks = list(web._chunks(web._pieces(history)))
    assert len(whole) > 5000 and json.loads("".join(chunks)) == history
    assert max(len(c) for c in chunks) < 2 * web.CHUNK  # the largest block the heap must find


def test_a_failure_mid_answer_ends_it_instead_of_raising() -> None:
    def pieces():
        yield "x" * 300
        raise MemoryError("memory allocation failed")

    assert list(web._chunks(pieces())) == ["x" * 300]  # what was ready, then the end
    assert list(web._chunks(iter(["a" * 300, "b"]))) == ["a" * 300, "b"]
