"""An exclusive lock on a file (fcntl.flock), for what several processes make in one shared
place under build/: the parallel test workers (pytest-xdist), a demo or a flash beside them.
The kernel drops the lock when its holder exits, however it exits: no stale lock files."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold `path` (made if missing; its content is never used) locked for the block; another
    process asking for the same path waits until then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
