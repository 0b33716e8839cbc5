"""The status page in headless Chromium (Debian's, driven by Playwright) against the firmware on
the Unix port with the simulated world. Leaves a screenshot in build/artifacts/."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from typing import Any, Iterator

import pytest
from conftest import IN_CI, ROOT
from fwrun import Background, Firmware, make_world

# one worker runs the whole file: its tests share a module-scoped firmware/fixture
pytestmark = pytest.mark.xdist_group("test_page")

PASSWORD = "page-test"
ARTIFACTS = ROOT / "build" / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        if IN_CI:
            pytest.fail("Debian's chromium is not installed (./dev test installs it)")
        pytest.skip("chromium is not installed")
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["unix_port", "venus_os_service"])
def page(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Any, Background, Firmware]]:
    """The page in Chromium, served by the firmware on the Unix port and by the same firmware
    as the Venus OS service runs it (CPython)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    workdir = tmp_path_factory.mktemp("page")
    world = make_world()
    world.profile = lambda t: (900.0, 300.0)
    with Background(world) as sim:
        host, port = sim.endpoints["venus"].rsplit(":", 1)
        config = {"control": {"mode": "auto"}, "venus": {"host": host, "port": int(port)}}
        fw = Firmware(
            workdir, sim.endpoints["charger"], config, extra=("--admin-password", PASSWORD),
            gx=request.param,
        )
        with fw, sync_playwright() as pw:
            fw.wait_for(lambda s: s["charger"]["min_a"] is not None, what="the probe")
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            tab = browser.new_page(viewport={"width": 1100, "height": 1000})
            tab.goto("http://127.0.0.1:%d/" % fw.port)
            yield tab, sim, fw
            browser.close()


def test_the_page_is_small_and_self_contained() -> None:
    html = (ROOT / "firmware" / "static" / "index.html").read_text()
    assert len(html.encode()) < 30 * 1024
    assert "http://" not in html and "https://" not in html  # no CDN, no fonts from the net


def test_it_renders_the_simulators_values(page: Any) -> None:
    tab, sim, fw = page
    tab.wait_for_function("document.getElementById('model').textContent.includes('24/12')")
    tab.wait_for_function("document.getElementById('grid').textContent !== '-'")
    # the page asks every 1.5 s and the charger reports every second: just after the charger
    # switches on (surplus) the page can still show the resting voltage from before; wait until
    # what it shows is the simulator's voltage of now
    deadline = time.monotonic() + 15
    while True:
        truth = sim.call(lambda: sim.world.charger.status(sim.now()))["voltage_v"]
        shown = float(tab.inner_text("#voltage"))
        if abs(shown - truth) < 0.1 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert abs(shown - truth) < 0.1, "page %.2f V, simulator %.2f V" % (shown, truth)
    assert tab.inner_text("#range") == "3.0 .. 12.0 A"
    assert tab.inner_text("#link").startswith("up")
    assert tab.inner_text("#mode") == "auto"
    assert tab.inner_text("#reason") not in ("", "-")


def history(fw: Firmware) -> dict[str, Any]:
    with urllib.request.urlopen("http://127.0.0.1:%d/api/history" % fw.port, timeout=5) as r:
        return json.load(r)


def test_a_fresh_load_has_a_clean_console(page: Any) -> None:
    """No 404 (a favicon the page does not serve) nor any other error in the console."""
    tab, sim, fw = page
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda err: problems.append(str(err)))
    tab.on("response", lambda r: problems.append("%d %s" % (r.status, r.url))
           if r.status >= 400 else None)
    tab.reload()
    tab.wait_for_function("document.getElementById('grid').textContent !== '-'")
    time.sleep(2)  # a poll or two after the load
    assert problems == []


CLIPPED_JS = """() => [...document.querySelectorAll('section')].flatMap((sec) =>
  [sec, ...sec.querySelectorAll('dd')].filter((el) => el.scrollWidth > el.clientWidth + 1
      || el.getBoundingClientRect().right > sec.getBoundingClientRect().right + 1)
    .map((el) => (el.id || sec.querySelector('h2')?.textContent) + ': ' + el.textContent))
  .concat(document.documentElement.scrollWidth > innerWidth + 1 ? ['the page scrolls sideways']
          : [])"""


@pytest.mark.parametrize("width", [1280, 390])
def test_no_value_is_clipped(page: Any, width: int) -> None:
    """Long values (the config path, the WiFi line, a reason) wrap inside their card, at a
    desktop's 1280 px and a phone's 390 px."""
    tab, sim, fw = page
    long_path = "/tmp/pytest_of_root/pytest_1234/test_the_page_configuration_directory0/config.json"

    def longer(route: Any) -> None:  # the board's answer, with values as long as they get
        status = route.fetch().json()
        status["config"]["source"] = long_path
        status["wifi"].update(connected=True, ssid="my-home-network-upstairs-5GHz-extender",
                              rssi=-67, ap_ssid="IP22-1A2B")
        route.fulfill(json=status)

    tab.route("**/api/status", longer)
    tab.set_viewport_size({"width": width, "height": 1000})
    try:
        tab.wait_for_function("document.getElementById('health').textContent.includes(%r)"
                              % long_path)
        assert tab.evaluate(CLIPPED_JS) == []
    finally:
        # wait for a handler still fetching: its fulfill after a plain unroute raised
        # "Route is already handled" into the page's teardown
        tab.unroute_all(behavior="wait")
        tab.set_viewport_size({"width": 1100, "height": 1000})


def test_the_chart_draws(page: Any) -> None:
    tab, sim, fw = page
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        grid = [v for v in history(fw)["grid_w"][-2:] if v is not None]
        if len(grid) == 2:
            break
        time.sleep(1)  # one point per 10 s
    tab.evaluate("chart()")
    time.sleep(0.5)
    colours = tab.evaluate(
        """() => {
        const c = document.getElementById('chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = {grid: 0, charger: 0};
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] === 46 && d[i + 1] === 144 && d[i + 2] === 250) seen.grid++;
            if (d[i] === 18 && d[i + 1] === 128 && d[i + 2] === 92) seen.charger++;
        }
        return seen;
    }"""
    )
    assert colours["grid"] > 100 and colours["charger"] > 100, colours  # the lines, drawn


def test_wrong_password_is_refused(page: Any) -> None:
    tab, sim, fw = page
    tab.evaluate("sessionStorage.setItem('pw', 'wrong')")
    tab.click("[data-mode=manual]")
    tab.wait_for_function("document.getElementById('msg').textContent.includes('password')")
    assert "bad" in tab.get_attribute("#msg", "class")


def test_a_bad_value_shows_its_error(page: Any) -> None:
    tab, sim, fw = page
    tab.evaluate(f"sessionStorage.setItem('pw', '{PASSWORD}')")
    tab.fill("#manual", "500")
    tab.click("#setmanual")
    tab.wait_for_function("document.getElementById('msg').textContent.includes('100')")
    assert "control.manual_current_a: must be 0.0..100.0" in tab.inner_text("#msg")


def test_manual_from_the_page_changes_the_chargers_limit(page: Any) -> None:
    tab, sim, fw = page
    tab.evaluate(f"sessionStorage.setItem('pw', '{PASSWORD}')")
    tab.fill("#manual", "5")
    tab.click("#setmanual")
    tab.wait_for_function("document.getElementById('mode').textContent === 'manual'")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if sim.call(lambda: sim.world.charger.effective_limit_raw(sim.now())) == 50:
            break
        time.sleep(0.3)
    assert sim.call(lambda: sim.world.charger.effective_limit_raw(sim.now())) == 50
    tab.wait_for_function("document.getElementById('limit').textContent.startsWith('5.0 A')")


def test_settings_form_validates_on_the_board(page: Any) -> None:
    tab, sim, fw = page
    tab.evaluate(f"sessionStorage.setItem('pw', '{PASSWORD}')")
    tab.click("#settings summary")
    tab.wait_for_selector("[name='charger.stored_daily_max']")
    tab.fill("[name='charger.stored_daily_max']", "5000")
    tab.click("#save")
    box = "[data-for='charger.stored_daily_max']"
    tab.wait_for_function(f"document.querySelector(\"{box}\").textContent.includes('0..1000')")
    tab.fill("[name='charger.stored_daily_max']", "40")
    tab.click("#save")
    tab.wait_for_function(
        "document.getElementById('formmsg').textContent.startsWith('done') || "
        "document.getElementById('formmsg').textContent.startsWith('saved')"
    )
    assert '"stored_daily_max": 40' in fw.config_path.read_text()


def test_an_error_for_an_odd_field_name_leaves_the_form_working(page: Any) -> None:
    """The errors are placed beside their fields by a CSS selector built from the name: a name
    with a quote (an answer from an older or newer board) must not throw, and the other errors
    still land. The board's answer is stood in for by Playwright's route."""
    tab, sim, fw = page
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    answer = {"errors": ['a"b]: unknown setting',
                         "charger.stored_daily_max: must be 0..1000 (got 5000)"]}

    def refuse(route: Any) -> None:
        route.fulfill(status=400, content_type="application/json", body=json.dumps(answer))

    tab.evaluate(f"sessionStorage.setItem('pw', '{PASSWORD}')")
    tab.route("**/api/config", lambda route: refuse(route) if route.request.method == "POST"
              else route.continue_())
    try:
        if not tab.evaluate("document.getElementById('settings').open"):
            tab.click("#settings summary")
        tab.wait_for_selector("[name='charger.stored_daily_max']")
        tab.click("#save")
        box = "[data-for='charger.stored_daily_max']"
        tab.wait_for_function(f"document.querySelector(\"{box}\").textContent.includes('0..1000')")
    finally:
        tab.unroute_all(behavior="wait")
    assert errors == []


def test_a_heap_too_small_for_mqtt_is_said_on_the_page(page: Any, tmp_path: Any) -> None:
    """MQTT configured on a heap below the full set's: the page's Health card says it was
    left out (the firmware compiled to .mpy, as on a board: from source it needs more)."""
    from tools import bench_heap

    browser = page[0].context.browser  # the module's Chromium: one Playwright per thread
    build = bench_heap.build(tmp_path / "build")
    with Background(make_world()) as sim:
        host, port = sim.endpoints["venus"].rsplit(":", 1)
        config = {"venus": {"host": host, "port": int(port)},
                  "mqtt": {"host": "127.0.0.1", "port": 1}}
        fw = Firmware(tmp_path, sim.endpoints["charger"], config, heapsize="240K", build=build)
        with fw:
            said = fw.wait_for(lambda s: s["left_out"], what="MQTT left out")["left_out"]
            assert "MQTT" in said and fw.status()["mqtt"] is None
            tab = browser.new_page(viewport={"width": 1100, "height": 1000})
            try:
                tab.goto("http://127.0.0.1:%d/" % fw.port)
                tab.wait_for_function(
                    "document.getElementById('health').textContent.includes('left out')")
                assert said in tab.inner_text("#health")
            finally:
                tab.close()


def test_screenshot(page: Any) -> None:
    tab, sim, fw = page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "status-page.png"
    tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
