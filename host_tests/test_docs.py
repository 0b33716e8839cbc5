"""The docs against the code and against themselves: docs/configuration.md's settings table
against the schema (every setting is listed once, with its real default; three defaults had
drifted from the code before this test existed), every relative link and #anchor in README.md
and docs/*.md, README's quick start (exactly the two commands, the second the one CI runs) and
README's picture of the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import config
from conftest import ROOT

SETTINGS_DOC = ROOT / "docs" / "configuration.md"
# ours, in the repository; links inside them are checked (pcb/README.md too: README points there)
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "pcb" / "README.md"]
ROW = re.compile(r"^\| ((?:`[a-z_.0-9]+`(?:, )?)+) \| ([^|]+) \| ([^|\n]*)", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def table() -> dict[str, str]:
    text = SETTINGS_DOC.read_text()
    start = text.index("| setting | default | meaning |")
    rows: dict[str, str] = {}
    listed: list[str] = []
    for names, defaults, meaning in ROW.findall(text[start : text.index("\n\n", start)]):
        keys = re.findall(r"`([a-z_.0-9]+)`", names)
        values = [v.strip().strip("`") for v in defaults.split(",")]
        if len(values) == 1:  # "`wifi.ssid`, `wifi.password` | empty": one for all
            values *= len(keys)
        assert len(keys) == len(values), (names, defaults)
        assert meaning.strip(" |"), "no meaning for %s" % names
        listed += keys
        rows.update(zip(keys, values))
    assert sorted(k for k in set(listed) if listed.count(k) > 1) == []  # listed twice
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
    assert wrong == {}  # docs/configuration.md says, the code has


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code (no links or headings there)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "``", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markdown, lowercase, every character but
    letters, digits, '_', '-' and spaces dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else "%s-%d" % (base, n))
    return out


def links(path: Path) -> Iterator[str]:
    for target in LINK.findall(prose(path.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            yield target


def test_slug_follows_githubs_rules() -> None:
    assert slug("Surplus charging (`control.mode: auto`)") == "surplus-charging-controlmode-auto"
    assert slug("./dev and the demo") == "dev-and-the-demo"
    assert slug("The heap: tools/bench_heap") == "the-heap-toolsbench_heap"
    assert slug("Venus's MQTT broker instead") == "venuss-mqtt-broker-instead"


def test_every_relative_link_points_at_a_file_and_heading_that_exist() -> None:
    assert len(MARKDOWN) >= 6 and all(p.exists() for p in MARKDOWN)
    broken = []
    checked = 0
    for page in MARKDOWN:
        for target in links(page):
            checked += 1
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            where = "%s: %s" % (page.relative_to(ROOT), target)
            if not dest.exists():
                broken.append(where + " (no such file)")
            elif ROOT not in dest.parents:
                broken.append(where + " (outside the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(where + " (no such heading)")
    assert broken == []
    assert checked > 40  # the pages do link to each other


def test_the_link_checker_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n## A `b`: c\n\n[ok](#a-b-c) [gone](missing.md) [bad](#nowhere)\n\n"
        "```sh\n# not a heading [not a link](nowhere.md)\n```\n"
    )
    assert anchors(page) == {"top", "a-b-c"}
    assert list(links(page)) == ["#a-b-c", "missing.md", "#nowhere"]


def test_readme_quick_start_is_exactly_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start\n") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["./dev demo", "./dev test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./dev test\n" in ci  # CI runs README's test command, exactly


def test_readme_shows_a_small_picture_of_the_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert "](docs/page.png)" in text
    png = (ROOT / "docs" / "page.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")
    assert 1000 <= width <= 1600, width  # a desktop browser's width (tools/screenshot.py)
    assert len(png) < 300 * 1024
