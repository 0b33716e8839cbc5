"""Import SKiDL quietly and keep its messages in memory.

SKiDL looks for KiCad libraries at import time and warns on stderr when there are none (we need
none: every part is defined in code), and it writes `<script>.log`/`.erc` files into the current
directory. Both are noise in a test run, so the import happens with stderr parked, file output is
switched off, and the loggers' console handlers are replaced by one that collects records; the
checks read ERC messages from there.
"""

from __future__ import annotations

import contextlib
import io
import logging

with contextlib.redirect_stderr(io.StringIO()):
    import skidl  # noqa: F401  (imported for its side effects and re-export)
    from skidl.logger import erc_logger, rt_logger, stop_log_file_output

stop_log_file_output()


class Collector(logging.Handler):
    """Keeps formatted log records (level name, message) until cleared."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


ERC_MESSAGES = Collector()
RUNTIME_MESSAGES = Collector()
for _logger, _collector in ((erc_logger, ERC_MESSAGES), (rt_logger, RUNTIME_MESSAGES)):
    for _handler in list(_logger.handlers):
        _logger.removeHandler(_handler)
    _logger.addHandler(_collector)

__all__ = ["skidl", "erc_logger", "rt_logger", "ERC_MESSAGES", "RUNTIME_MESSAGES"]
