"""The status page's chart in headless Chromium (issue #18 item 7): a time axis in minutes ago
taken from the history's sample spacing (interval_s), a labelled zero line, W on the left and A
on the right, and all of it readable on a 390 px phone as on a 1280 px desktop. draw() leaves
the labels it drew on the canvas (`chart.labels`: text, left, top, width, font size in CSS px)
for these tests to read. The firmware, simulator and Chromium: test_page's `page` fixture."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from test_page import history, page  # noqa: F401  (page: a fixture)

# one worker runs the whole file: its tests share a module-scoped firmware/fixture
pytestmark = pytest.mark.xdist_group("test_page_chart")

LABELS_JS = "() => document.getElementById('chart').labels || []"
SIZE_JS = """() => {
  const c = document.getElementById('chart'), r = c.getBoundingClientRect();
  return {backing: c.width, backingH: c.height, css: r.width, cssH: r.height,
          dpr: devicePixelRatio};
}"""


def full_half_hour(interval_s: float, points: int) -> dict[str, Any]:
    """A full history as the board gives it after half an hour: the grid from export (about
    -1500 W) to import, the charger on and off, the setpoint with a gap (link down)."""
    grid = [round(-1500 + 2300 * (0.5 + 0.5 * math.sin(i / 9))) for i in range(points)]
    charger = [None if i % 50 < 5 else round(600 + 500 * math.sin(i / 13)) for i in range(points)]
    setpoint = [None if i % 50 < 5 else round(3 + 9 * (0.5 + 0.5 * math.cos(i / 11)), 1)
                for i in range(points)]
    return {"interval_s": interval_s, "grid_w": grid, "charger_w": charger,
            "setpoint_a": setpoint}


def open_chart(page: Any, width: int, dpr: float, answer: Any) -> tuple[Any, list[str]]:
    """A new tab at `width` CSS px and `dpr` device pixels a CSS px, its /api/history answered
    by `answer(real_answer)`; returns the tab once the chart has drawn, and the console's
    errors."""
    tab0, sim, fw = page
    tab = tab0.context.browser.new_page(viewport={"width": width, "height": 900},
                                        device_scale_factor=dpr)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda err: problems.append(str(err)))
    tab.on("response", lambda r: problems.append("%d %s" % (r.status, r.url))
           if r.status >= 400 else None)
    tab.route("**/api/history",
              lambda route: route.fulfill(json=answer(route.fetch().json())))
    tab.goto("http://127.0.0.1:%d/" % fw.port)
    tab.wait_for_function("(document.getElementById('chart').labels || []).length > 3",
                          timeout=10_000)
    return tab, problems


def boxes_overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["s"] and b["y"] < a["y"] + a["s"])


def minutes(labels: list[dict[str, Any]]) -> list[str]:
    return [x["t"] for x in labels if x["t"].endswith(" min")]


@pytest.mark.parametrize("width, dpr", [(1280, 1), (390, 3)])
def test_the_chart_is_labelled_and_readable(page: Any, width: int, dpr: float) -> None:
    """A full half hour at the board's own sample spacing, at a desktop's 1280 px and a phone's
    390 px (3 device pixels a CSS px)."""
    tab0, sim, fw = page
    real = history(fw)
    assert real["interval_s"] > 0  # the spacing the page's time axis is built from
    points = round(1800 / real["interval_s"])
    tab, problems = open_chart(page, width, dpr, lambda h: full_half_hour(h["interval_s"], points))
    try:
        size = tab.evaluate(SIZE_JS)
        labels = tab.evaluate(LABELS_JS)
        # (a) the backing store is the CSS size in device pixels: the text is not scaled down
        assert abs(size["backing"] - size["css"] * size["dpr"]) <= 1, size
        assert abs(size["backingH"] - size["cssH"] * size["dpr"]) <= 1, size
        assert size["dpr"] == dpr and size["css"] < width
        texts = [x["t"] for x in labels]
        # (b) a time axis in minutes ago, the zero line's label, W on the left and A on the right
        times = [t for t in texts if not t.endswith((" W", " A"))]
        assert times[-1] == "now" and len(times) >= 3, texts
        assert minutes(labels) == times[:1], texts  # "-N min", "-M", ..., "now"
        oldest = int(times[0].split()[0])
        assert -30 < oldest <= -20, texts  # interval_s x (points - 1): just under 30 min
        assert "0 W" in texts and any(t.startswith("-") and t.endswith(" W") for t in texts)
        assert "0 A" in texts and any(t.endswith(" A") and t != "0 A" for t in texts), texts
        # (c) readable: 10 CSS px or more, inside the canvas, no two labels on each other
        for x in labels:
            assert x["s"] >= 10, x
            assert x["x"] >= 0 and x["x"] + x["w"] <= size["css"] + 0.5, x
            assert x["y"] >= 0 and x["y"] + x["s"] <= size["cssH"] + 0.5, x
        overlaps = [(a["t"], b["t"]) for i, a in enumerate(labels) for b in labels[i + 1:]
                    if boxes_overlap(a, b)]
        assert overlaps == []
        # (d) a clean console
        assert problems == []
    finally:
        tab.close()


def test_the_time_axis_follows_the_sample_spacing(page: Any) -> None:
    """The same number of points at twice the spacing reads as an hour; a few points after a
    start read in seconds."""
    tab, problems = open_chart(page, 390, 2, lambda h: full_half_hour(20, 181))
    try:
        labels = tab.evaluate(LABELS_JS)
        assert len(minutes(labels)) == 1, labels
        assert -60 <= int(minutes(labels)[0].split()[0]) <= -45, labels
    finally:
        tab.close()
    tab, problems = open_chart(page, 1280, 1, lambda h: full_half_hour(10, 4))
    try:
        texts = [x["t"] for x in tab.evaluate(LABELS_JS)]
        assert "-30 s" in texts and "now" in texts and not minutes(tab.evaluate(LABELS_JS))
        assert problems == []
    finally:
        tab.close()


def test_the_chart_follows_a_resize(page: Any) -> None:
    """Turned from portrait to landscape: the backing store follows the new width."""
    tab, problems = open_chart(page, 390, 2, lambda h: h)
    try:
        tab.set_viewport_size({"width": 844, "height": 390})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            size = tab.evaluate(SIZE_JS)
            if size["css"] > 700 and abs(size["backing"] - size["css"] * 2) <= 1:
                break
            time.sleep(0.1)
        assert size["css"] > 700 and abs(size["backing"] - size["css"] * 2) <= 1, size
        assert problems == []
    finally:
        tab.close()


def test_the_real_history_draws_without_errors(page: Any) -> None:
    """The board's own answer, unchanged, whatever it holds yet: labels and a clean console."""
    tab0, sim, fw = page
    deadline = time.monotonic() + 40
    while len(history(fw)["grid_w"]) < 2 and time.monotonic() < deadline:
        time.sleep(1)  # one point per interval_s
    tab, problems = open_chart(page, 390, 3, lambda h: h)
    try:
        texts = [x["t"] for x in tab.evaluate(LABELS_JS)]
        assert "now" in texts and "0 W" in texts, texts
        assert problems == [], problems
    finally:
        tab.close()
