"""ota.Updater without a board: what a bundle may contain, partial and wrong files, the switch,
and confirm(). The whole path runs on the Unix port in test_ota.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import ota
import pytest


class Stream:
    """What microdot's request.stream offers: async read(n)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


GOOD = {"main.py": b"print('hi')\n", "static/index.html": b"<html></html>"}


def manifest(**files: bytes) -> dict:
    return {"version": "9.9", "files": {n: digest(d) for n, d in (files or GOOD).items()}}


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"files": {}}, "1..64 files"),
        ({"files": {"../main.py": "0" * 64}}, "bad file name"),
        ({"files": {"/main.py": "0" * 64}}, "bad file name"),
        ({"files": {"main.py": "abc"}}, "64 hex digits"),
        ({"files": {"app.mpy": "0" * 64}}, "no main.py"),
        ({"files": {"a%d" % i: "0" * 64 for i in range(65)}}, "1..64 files"),
        ([1, 2], "send"),
    ],
)
def test_bad_bundles_are_refused(tmp_path: Path, bad: dict, reason: str) -> None:
    with pytest.raises(ota.UpdateError, match=reason):
        ota.Updater(str(tmp_path)).begin(bad)
    assert not (tmp_path / ota.STATE).exists()


def test_good_bundle_switches_and_confirm_ends_the_trial(tmp_path: Path) -> None:
    u = ota.Updater(str(tmp_path))
    assert u.running == "app_a" and u.staging == "app_b"
    u.begin(manifest())
    for name, data in GOOD.items():
        asyncio.run(u.receive(name, Stream(data), len(data)))
    state = u.commit()
    assert state["active"] == "app_b" and state["trial"] and state["previous"] == "app_a"
    assert json.loads((tmp_path / ota.STATE).read_text())["active"] == "app_b"
    assert (tmp_path / "app_b" / "static" / "index.html").read_bytes() == GOOD["static/index.html"]
    assert ota.confirm(str(tmp_path / ota.STATE)) is True
    assert json.loads((tmp_path / ota.STATE).read_text())["trial"] is False
    assert ota.confirm(str(tmp_path / ota.STATE)) is False  # nothing to confirm: no write


def test_confirm_forgets_the_boots_that_ran_out_of_memory(tmp_path: Path) -> None:
    """bootstrap.py counts boots that ran out of memory; a healthy run starts that count anew,
    so a later one-off is reset again rather than left at the REPL."""
    path = tmp_path / ota.STATE
    path.write_text(json.dumps({"active": "app_a", "oom": 2}))
    assert ota.confirm(str(path)) is False  # not an update on trial
    assert json.loads(path.read_text()) == {"active": "app_a", "trial": False, "boots": 0}
    before = path.stat().st_mtime_ns
    assert ota.confirm(str(path)) is False
    assert path.stat().st_mtime_ns == before  # nothing to forget: no write


def test_wrong_short_and_unlisted_files_never_switch(tmp_path: Path) -> None:
    u = ota.Updater(str(tmp_path))
    u.begin(manifest())
    with pytest.raises(ota.UpdateError, match="sha256"):
        asyncio.run(u.receive("main.py", Stream(b"print('evil')\n"), 14))
    assert not (tmp_path / "app_b" / "main.py").exists()  # the bad file is gone
    data = GOOD["main.py"]
    with pytest.raises(ota.UpdateError, match="bytes missing"):
        asyncio.run(u.receive("main.py", Stream(data[:5]), len(data)))  # the client went away
    with pytest.raises(ota.UpdateError, match="not in the bundle"):
        asyncio.run(u.receive("other.py", Stream(b"x"), 1))
    with pytest.raises(ota.UpdateError, match="has not been sent"):
        u.commit()
    asyncio.run(u.receive("main.py", Stream(data), len(data)))
    (tmp_path / "app_b" / "static").mkdir()
    (tmp_path / "app_b" / "static" / "index.html").write_bytes(b"changed on flash")
    with pytest.raises(ota.UpdateError, match="changed on flash"):
        u.commit()
    assert not (tmp_path / ota.STATE).exists()  # still app_a: nothing switched


def test_a_broken_state_file_means_app_a(tmp_path: Path) -> None:
    (tmp_path / ota.STATE).write_text("{not json")
    assert ota.Updater(str(tmp_path)).running == "app_a"
    (tmp_path / ota.STATE).write_text('{"active": "../etc"}')
    assert ota.Updater(str(tmp_path)).running == "app_a"


def install(u: ota.Updater) -> None:
    u.begin(manifest())
    for name, data in GOOD.items():
        asyncio.run(u.receive(name, Stream(data), len(data)))
    u.commit()


def test_an_update_during_a_trial_never_empties_the_way_back(tmp_path: Path) -> None:
    """flash.py --ota run twice within a minute: the second update must not stage into the
    directory the first one would roll back to, leaving a rollback to an empty directory."""
    first = ota.Updater(str(tmp_path))
    install(first)
    with pytest.raises(ota.UpdateError, match="waits for the reboot"):
        first.begin(manifest())  # switched, not yet rebooted: app_b must stay whole
    assert (tmp_path / "app_b" / "main.py").exists()
    on_trial = ota.Updater(str(tmp_path))  # the reboot: app_b runs, on trial
    assert on_trial.running == "app_b" and on_trial.status()["trial"]
    on_trial.begin(manifest())  # app_b answers and is updated from: it is the way back now
    state = json.loads((tmp_path / ota.STATE).read_text())
    assert state["active"] == "app_b" and state["trial"] is False
    for name, data in GOOD.items():
        asyncio.run(on_trial.receive(name, Stream(data), len(data)))
    assert on_trial.commit()["previous"] == "app_b"
    assert (tmp_path / "app_b" / "main.py").exists()
