"""The web face under abuse, end to end on the Unix port with bounded loops on 127.0.0.1: idle
connections beyond the cap, slow heads, long request lines and many headers, a web task that
fails, parallel password guessing. The limits are firmware/web.py's; what a user sees is what is
checked (answers, timings, /api/status), never the firmware's internals."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from fwrun import Background, Firmware, make_world

import webguard as web  # the limits

# one worker runs the whole file: its tests share a module-scoped firmware/fixture
pytestmark = pytest.mark.xdist_group("test_web_abuse")

PASSWORD = "correct horse"


def get(fw: Firmware, path: str = "/api/status", timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (fw.port, path),
                                    timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def post_mode(fw: Firmware, password: str, timeout: float = 60) -> int:
    req = urllib.request.Request(
        "http://127.0.0.1:%d/api/mode" % fw.port, data=b'{"mode": "off"}', method="POST",
        headers={"Authorization": "Bearer " + password, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def raw(fw: Firmware, data: bytes, wait: float = 10) -> bytes:
    """Send `data`, return what comes back until the server closes (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", fw.port), timeout=wait) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # refused half-way: the answer may still be there
        out = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
    return out


def closed_by_server(s: socket.socket, deadline: float) -> bool:
    """Read until the server closes (an answer such as 408 first is fine) or the deadline."""
    while True:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not s.recv(4096):
                return True
        except ConnectionResetError:
            return True
        except OSError:  # timed out: still open
            return False


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("abuse")
    with Background(make_world()) as sim:
        fw = Firmware(workdir, sim.endpoints["charger"], {},
                      extra=("--admin-password", PASSWORD))
        with fw:
            fw.wait_for(lambda s: s["charger"]["min_a"] is not None, what="the probe")
            yield sim, fw


def test_idle_connections_are_capped_and_timed_out(running: Any) -> None:
    """Heads that stop half-way (Content-Length 100 and nothing) beyond the cap: the oldest
    are closed, the page answers during the flood and after, the link keeps its frame rate,
    each idle one is closed within the head timeout, and the heap comes back."""
    sim, fw = running
    while get(fw)[1]["uptime_s"] < 21:  # past two housekeeping rounds: the heap's level
        time.sleep(0.5)
    before = get(fw)[1]
    idle = []
    try:
        for _ in range(4 * web.MAX_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", fw.port), timeout=10)
            s.sendall(b"POST /api/mode HTTP/1.1\r\nContent-Length: 100\r\n")  # and no more
            idle.append(s)
            time.sleep(0.02)
        t0 = time.monotonic()
        status, during = get(fw, timeout=3)
        assert status == 200, "the page does not answer during the flood"
        answered_s = time.monotonic() - t0
        assert answered_s < 2, "status took %.1f s during the flood" % answered_s
        closed = 0
        deadline = time.monotonic() + web.HEAD_TIMEOUT_S + 3
        for s in idle:
            if closed_by_server(s, deadline):
                closed += 1
        assert closed == len(idle), "%d of %d idle connections still open after %.0f s" % (
            len(idle) - closed, len(idle), web.HEAD_TIMEOUT_S + 3)
        after = get(fw)[1]
        held = after["web"]["connections_max"]
        assert held <= web.MAX_CONNECTIONS, "held %d connections (cap %d)" % (
            held, web.MAX_CONNECTIONS)
        assert after["web"]["dropped"] >= len(idle) - web.MAX_CONNECTIONS
        seconds = after["uptime_s"] - before["uptime_s"]
        frames = after["counters"]["frames_ok"] - before["counters"]["frames_ok"]
        assert frames >= 1.5 * seconds, "%d frames in %d s during the flood" % (frames, seconds)
    finally:
        for s in idle:
            s.close()
    time.sleep(web.HEAD_TIMEOUT_S + 1)
    after = get(fw)[1]
    assert after["web"]["open"] <= 1  # this request's own
    # the heap in use comes back: the next housekeeping round's figure (after gc.collect)
    round_at = (after["uptime_s"] // 10 + 1) * 10 + 1
    while get(fw)[1]["uptime_s"] < round_at:
        time.sleep(0.5)
    used = get(fw)[1]["heap"]["used"]
    assert used <= before["heap"]["used"] + 4096, "heap in use %d B, was %d B" % (
        used, before["heap"]["used"])


def test_a_long_request_line_is_refused_early(running: Any) -> None:
    sim, fw = running
    heap = get(fw)[1]["heap"]["used"]
    line = b"GET /" + b"a" * (64 * 1024)  # no newline
    reply = raw(fw, line)
    assert reply.startswith(b"HTTP/1.0 414 "), reply[:80]
    st = get(fw)[1]
    assert st["web"]["refused"]["414"] >= 1
    assert st["heap"]["peak_used"] < heap + 16 * 1024  # not read whole


def test_too_many_headers_are_refused(running: Any) -> None:
    sim, fw = running
    head = b"GET /api/status HTTP/1.0\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (k, b"v" * 500) for k in range(200)) + b"\r\n"
    reply = raw(fw, head)
    assert reply.startswith(b"HTTP/1.0 431 "), reply[:80]
    long_header = b"GET /api/status HTTP/1.0\r\nX-Junk: " + b"a" * 3000 + b"\r\n\r\n"
    assert raw(fw, long_header).startswith(b"HTTP/1.0 431 ")
    assert get(fw)[0] == 200


def test_two_different_content_lengths_are_refused(running: Any) -> None:
    sim, fw = running
    head = (b"POST /api/mode HTTP/1.0\r\nContent-Length: 4\r\nContent-Length: 15\r\n\r\n"
            b'{"mode": "off"}')
    assert raw(fw, head).startswith(b"HTTP/1.0 400 ")


def test_a_body_too_large_gets_its_whole_answer(running: Any) -> None:
    """A body over 4 kB is refused (413) without being used; a refused body of modest size is
    read and dropped first, so that closing does not reset the connection under the client
    before it has read the answer (seen as ConnectionResetError in a test's client)."""
    sim, fw = running
    body = b"x" * 12000
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", fw.port), timeout=10) as s:
            s.sendall(b"POST /api/config HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            time.sleep(0.5)  # the server has answered and closed: a reset is here by now
            reply = b""
            while chunk := s.recv(4096):  # a reset raises ConnectionResetError
                reply += chunk
        head, _, answer = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 413 Content Too Large\r\n"), reply[:80]
        assert "over 4096 bytes" in json.loads(answer)["error"], reply


def test_answers_carry_the_standard_reason_phrase(running: Any) -> None:
    sim, fw = running
    assert raw(fw, b"GET /api/status HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK\r\n")
    assert raw(fw, b"GET /api/nothing HTTP/1.0\r\n\r\n").startswith(
        b"HTTP/1.0 404 Not Found\r\n")
    reply = raw(fw, b"POST /api/mode HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.0 401 Unauthorized\r\n"), reply[:60]


def test_password_guessing_is_slowed_for_everyone(tmp_path: Any) -> None:
    """Parallel guesses do not get around the delay: after the free failures every attempt
    waits its turn, growing to the cap; reads are not slowed; the right password gets in after
    its wait."""
    with Background(make_world()) as sim:
        fw = Firmware(tmp_path, sim.endpoints["charger"], {},
                      extra=("--admin-password", PASSWORD))
        with fw:
            results: list[tuple[float, int]] = []
            t0 = time.monotonic()

            def guess(k: int) -> None:
                code = post_mode(fw, "wrong %d" % k)
                results.append((time.monotonic() - t0, code))

            # within the connection cap (one left for the read below): 7 in parallel
            threads = [threading.Thread(target=guess, args=(k,))
                       for k in range(web.MAX_CONNECTIONS - 1)]
            for t in threads:
                t.start()
            time.sleep(3)
            r0 = time.monotonic()
            assert get(fw, timeout=3)[0] == 200
            assert time.monotonic() - r0 < 1, "reads were slowed by the guessing"
            for t in threads:
                t.join(120)
            assert all(code == 401 for _, code in results), results
            elapsed = max(t for t, _ in results)
            # the free ones at once, then turns 1, 2, 4 s apart (and the 1 s answer delay):
            # parallel guesses are no faster than serial ones past the free three
            assert elapsed >= 1 + 2 + 4, results
            st = get(fw)[1]
            assert st["web"]["auth_failures"] >= 7 and st["web"]["auth_delayed"] >= 3, st["web"]
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % fw.port, timeout=5) as r:
                metrics = r.read().decode()
            counted = [line for line in metrics.splitlines()
                       if line.startswith("ip22_http_auth_failures_total ")]
            assert counted and float(counted[0].split()[1]) >= 7, metrics
            w0 = time.monotonic()
            assert post_mode(fw, PASSWORD, timeout=120) == 200  # in, after its wait
            assert time.monotonic() - w0 <= web.AUTH_DELAY_MAX_S + 2


def wait_log(fw: Firmware, text: str, count: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = fw.read_log()
        if log.count(text) >= count:
            return log
        time.sleep(0.25)
    raise AssertionError("%d x %r not in the log within %.0f s:\n%s" % (count, text, timeout,
                                                                     fw.read_log()))


def test_a_failed_web_task_restarts_on_its_port(tmp_path: Any, monkeypatch: Any) -> None:
    """The web task fails twice a second after binding its port (IP22_FAIL_TASK, the Unix
    port's way to make it fail): each restart must bind the same port again."""
    monkeypatch.setenv("IP22_FAIL_TASK", "web:2")
    with Background(make_world()) as sim, Firmware(tmp_path, sim.endpoints["charger"], {}) as fw:
        log = wait_log(fw, "HTTP on", 3, 30)
        assert log.count("task web failed") == 2
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if get(fw, timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        assert get(fw)[0] == 200
        assert "EADDRINUSE" not in fw.read_log() and "Errno 98" not in fw.read_log()


def test_a_web_task_that_keeps_failing_stops_the_watchdog(
    tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("IP22_FAIL_TASK", "web:99")
    with Background(make_world()) as sim, Firmware(tmp_path, sim.endpoints["charger"], {}) as fw:
        log = wait_log(fw, "not feeding the watchdog: web keeps failing", 1, 60)
        assert log.count("task web failed") >= 5


def post_config(fw: Firmware, patch: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        "http://127.0.0.1:%d/api/config" % fw.port, data=json.dumps(patch).encode(),
        method="POST",
        headers={"Authorization": "Bearer " + PASSWORD, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_text_that_would_break_a_name_a_topic_or_a_header_is_refused(running: Any) -> None:
    """Control characters (NUL, CR, LF), and a lone surrogate that no UTF-8 file can hold,
    are refused in any text setting; the saved config is left as it was."""
    sim, fw = running
    before = fw.config_path.read_text()
    for bad in ("ip22\nadapter", "ip22\radapter", "ip22\x00", "\ud800ip22", "tab\there"):
        status, body = post_config(fw, {"hostname": bad})
        assert status == 400 and "hostname" in json.dumps(body), (bad, status, body)
    assert fw.config_path.read_text() == before
    assert post_config(fw, {"hostname": "ip22-garage"})[0] == 200  # plain text still goes in


def test_the_admin_password_cannot_be_emptied_over_the_api(running: Any) -> None:
    """An empty hash would refuse every later change (403) for good."""
    sim, fw = running
    status, body = post_config(fw, {"admin": {"password_hash": ""}})
    assert status == 400 and "password_hash" in json.dumps(body), body
    assert post_config(fw, {"hostname": "ip22-shed"})[0] == 200  # the password still works


def test_the_password_queue_is_bounded() -> None:
    """Many attempts at once: a few are checked at once, the next ones get turns up to
    AUTH_DELAY_MAX_S ahead, the rest are sent away with the seconds to come back (a queue that
    grew without end would hold every connection, and the server would answer only 503)."""
    import asyncio

    async def main() -> tuple[list[int | None], int]:
        guard = web.PasswordGuard()
        later: list[int | None] = []

        async def attempt() -> None:
            result = await guard.wait()
            later.append(result)
            if result is None:
                guard.result(False)

        await asyncio.wait_for(asyncio.gather(*(attempt() for _ in range(30))), 60)
        return later, guard.busy

    later, busy = asyncio.run(main())
    checked = [x for x in later if x is None]
    sent_away = [x for x in later if x is not None]
    assert web.AUTH_FREE_FAILURES < len(checked) < 10, later
    assert len(sent_away) == busy == 30 - len(checked)
    assert all(0 < s <= 2 * web.AUTH_DELAY_MAX_S for s in sent_away), sent_away
