"""The mosquitto broker (tools/mosquitto.py) as pytest fixtures. A missing broker fails the
test in CI and skips it elsewhere.

Tests import the fixtures' functions: `from broker import mosquitto_fixture  # noqa: F401`
gives the `mosquitto` fixture (anonymous), `mosquitto_auth_fixture` gives `mosquitto_auth`
(users AUTH_USERS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from conftest import IN_CI

from tools.mosquitto import Mosquitto, MosquittoMissing

AUTH_USERS = {"venus": "secret"}


def broker(
    path: Path, users: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None
) -> Mosquitto:
    try:
        return Mosquitto(path, users, tls)
    except MosquittoMissing as err:
        if IN_CI:
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous broker, stopped after the test."""
    with broker(tmp_path / "mosquitto") as running:
        yield running


@pytest.fixture(name="mosquitto_auth")
def mosquitto_auth_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that wants a login: user "venus", password "secret" (AUTH_USERS)."""
    with broker(tmp_path / "mosquitto-auth", AUTH_USERS) as running:
        yield running
