#!/usr/bin/env python3
"""A picture of the status page (docs/page.png, shown in README) from a running firmware, taken
in Debian's Chromium with Playwright.

With the demo running (at --speed 4 the chart then shows a kettle or two):

    .venv/bin/python tools/demo.py --duration 240 --http-port 8097 --quiet --speed 4 &
    sleep 225; .venv/bin/python tools/screenshot.py --url http://127.0.0.1:8097/

It waits until the page shows the charger's model and a grid power, then one refresh more (the
chart), and saves the first screen (--width x --height px; --full-page: all of it) as PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
READY = """() => {
    const text = (id) => (document.getElementById(id) || {}).textContent || '';
    return text('model').trim() !== '' && text('model') !== '-' && text('grid') !== '-';
}"""


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080/", help="the page (%(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "page.png", help="PNG to write")
    p.add_argument("--width", type=int, default=1280, help="viewport width in px (1280)")
    p.add_argument("--height", type=int, default=900, help="viewport height in px (900)")
    p.add_argument("--full-page", action="store_true", help="the whole page, not the first screen")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                   help="the browser (Debian's chromium: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="s to wait for the page's data")
    return p


def shoot(url: str, out: Path, width: int, height: int, full_page: bool, chromium: str,
          timeout_s: float) -> int:
    """Saves the screenshot; returns its size in bytes."""
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(url)
            tab.wait_for_function(READY, timeout=timeout_s * 1000)
            tab.wait_for_timeout(2000)  # one more refresh (1.5 s) so the chart is drawn
            tab.screenshot(path=str(out), full_page=full_page)
        finally:
            browser.close()
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    size = shoot(args.url, args.out, args.width, args.height, args.full_page, args.chromium,
                 args.timeout)
    print("%s: %d B" % (args.out, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
