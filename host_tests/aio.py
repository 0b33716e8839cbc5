"""Stopping a firmware task from a test. asyncio.wait_for on CPython 3.11 swallows a cancel
that arrives with the reply it waited for, and a loop around it goes on: asyncio.run() would
then wait for it for ever (a CI run hung in test_charger_link this way)."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel(task: asyncio.Task[Any], timeout: float = 5.0) -> None:
    """Cancel until the task has ended; fail the test if it will not."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not task.done():
        if loop.time() > end:
            raise AssertionError("task still running %s s after cancel: %r" % (timeout, task))
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
