"""The status page open in a browser: the load the heap benchmark puts on the firmware's HTTP
server, and the /api/status answers its heap figures come from."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, Callable

STATUS_EVERY_S = 1.0
HISTORY_EVERY_S = 10.0
RELOAD_EVERY_S = 60.0
HTTP_TIMEOUT_S = 5.0


class Browser:
    """The status page open in a browser: two connections' worth of polling (status on one,
    the chart and reloads on the other, so they overlap as in a browser). Every request is
    counted per path; a failure is an exception, a status other than 200, or a body that is
    not complete (JSON that does not parse, a page that does not end in </html>)."""

    def __init__(self, port: int, page_size: int | None = None) -> None:
        self.port = port
        self.page_size = page_size
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.failures: list[dict[str, Any]] = []
        self.slowest_ms: dict[str, float] = {}
        self.statuses: list[tuple[float, dict[str, Any]]] = []  # (monotonic, /api/status)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.t0 = time.monotonic()

    def get(self, path: str) -> Any:
        t = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise ValueError("HTTP %d: %r" % (resp.status, body[:200]))
            if path.startswith("/api/"):
                result: Any = json.loads(body)
            else:
                if not body.rstrip().endswith(b"</html>"):
                    raise ValueError("page cut short at %d bytes" % len(body))
                if self.page_size is not None and len(body) != self.page_size:
                    raise ValueError("page of %d bytes, not %d" % (len(body), self.page_size))
                result = body
        except Exception as err:  # noqa: BLE001 (every kind of failure is a finding)
            with self.lock:
                self.failed[path] = self.failed.get(path, 0) + 1
                self.failures.append(
                    {
                        "t_s": round(t - self.t0, 1),
                        "path": path,
                        "error": "%s: %s" % (type(err).__name__, err),
                    }
                )
            return None
        finally:
            conn.close()
        ms = (time.monotonic() - t) * 1000
        with self.lock:
            self.ok[path] = self.ok.get(path, 0) + 1
            self.slowest_ms[path] = max(self.slowest_ms.get(path, 0.0), ms)
            if path == "/api/status":
                self.statuses.append((time.monotonic(), result))
        return result

    def load(self, settings: bool = False) -> None:
        """What opening (or reloading) the page fetches."""
        self.get("/")
        self.get("/api/history")
        if settings:
            self.get("/api/schema")
            self.get("/api/config")

    def _every(self, period: float, fn: Callable[[], None]) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            fn()
            next_t = max(next_t + period, time.monotonic())  # like setInterval: no catching up
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def _chart(self) -> None:
        last_reload = time.monotonic()
        next_t = time.monotonic() + HISTORY_EVERY_S
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t = max(next_t + HISTORY_EVERY_S, time.monotonic())
            if time.monotonic() - last_reload >= RELOAD_EVERY_S - 0.5:
                last_reload = time.monotonic()
                self.load(settings=True)
            else:
                self.get("/api/history")

    def start(self) -> "Browser":
        self.load()
        for target in (
            lambda: self._every(STATUS_EVERY_S, lambda: self.get("/api/status")),
            self._chart,
        ):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(HTTP_TIMEOUT_S + 2)

    def last_status(self) -> dict[str, Any] | None:
        with self.lock:
            return self.statuses[-1][1] if self.statuses else None

    def totals(self) -> dict[str, Any]:
        with self.lock:
            paths = sorted(set(self.ok) | set(self.failed))
            return {
                "ok": sum(self.ok.values()),
                "failed": sum(self.failed.values()),
                "per_path": {
                    p: {
                        "ok": self.ok.get(p, 0),
                        "failed": self.failed.get(p, 0),
                        "slowest_ms": round(self.slowest_ms.get(p, 0.0)),
                    }
                    for p in paths
                },
                "failures": list(self.failures),
            }
