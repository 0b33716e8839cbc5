"""Fetch one file out of a source distribution on the package index pip is configured with.

umqtt.simple is frozen into every official ESP32 image, so the board needs no copy; the Unix
port does, and PyPI's sdist has no setup.py, so `pip download` refuses it. This asks pip's own
index (PIP_INDEX_URL, `pip config`, or pip's default) for the PEP 691 file list, downloads the
sdist, checks its sha256 and extracts one member. No index host is written here.

    python tools/fetch_sdist.py micropython-umqtt.simple 1.3.4 umqtt/simple.py lib/umqtt/simple.py
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

ACCEPT = "application/vnd.pypi.simple.v1+json"


def index_urls() -> list[str]:
    """pip's index: the environment, then pip's config, then pip's built-in default."""
    if os.environ.get("PIP_INDEX_URL"):
        return [os.environ["PIP_INDEX_URL"]]
    found = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    urls = re.findall(r"^[\w:.]*index-url='([^']+)'", found, re.M)
    if urls:
        return urls
    from pip._internal.models.index import PyPI

    return [PyPI.simple_url]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_sdist(project: str, version: str) -> tuple[str, str]:
    """(url, sha256) of the project's sdist for this version."""
    errors = []
    for index in index_urls():
        if not index.startswith("http"):
            continue
        page = index.rstrip("/") + "/" + normalise(project) + "/"
        try:
            request = urllib.request.Request(page, headers={"Accept": ACCEPT})
            with urllib.request.urlopen(request, timeout=60) as answer:
                files = json.load(answer)["files"]
        except (OSError, ValueError, KeyError) as err:
            errors.append("%s: %s" % (page, err))
            continue
        for f in files:
            if f["filename"] == "%s-%s.tar.gz" % (project, version):
                return f["url"], f["hashes"]["sha256"]
        errors.append("%s: no sdist %s" % (page, version))
    raise SystemExit("fetch_sdist: %s %s not found (%s)" % (project, version, "; ".join(errors)))


def fetch(
    project: str, version: str, member: str, target: Path, sha256: str | None = None
) -> Path:
    """Extract `member` of the sdist to `target`; checked against the index's hash (and
    `sha256`, when the caller pins one)."""
    url, listed = find_sdist(project, version)
    if sha256 and listed != sha256:
        raise SystemExit(
            "fetch_sdist: the index lists %s for %s, pinned is %s" % (listed, url, sha256)
        )
    with urllib.request.urlopen(url, timeout=120) as answer:
        data = answer.read()
    if hashlib.sha256(data).hexdigest() != listed:
        raise SystemExit("fetch_sdist: %s does not match its sha256" % url)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar.getmembers():
            if info.name.endswith("/" + member) and info.isfile():
                extracted = tar.extractfile(info)
                assert extracted is not None
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(extracted.read())
                return target
    raise SystemExit("fetch_sdist: %s has no %s" % (url, member))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    print(fetch(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
