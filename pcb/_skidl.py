"""Import SKiDL quietly and keep its messages in memory.

SKiDL looks for KiCad libraries at import time and warns on stderr when there are none (we need
none: every part is defined in code), and it writes `<script>.log`/`.erc` files into the current
directory. Both are noise in a test run, so the import happens with stderr parked, file output is
switched off, and the loggers' console handlers are replaced by one that collects records; the
checks read ERC messages from there.

The import runs in a private temporary directory: those files are made and removed there, not in
the shared current directory, where parallel test workers (pytest-xdist) importing SKiDL at the
same moment would remove each other's (FileNotFoundError). SKiDL's configuration is then read
from /etc and its own storage directory, not from a `.skidlcfg` in the current directory (there
is none: this design needs no configuration).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile

_cwd = os.getcwd()
with tempfile.TemporaryDirectory(prefix="skidl-import-") as _private:
    os.chdir(_private)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import skidl  # noqa: F401  (imported for its side effects and re-export)
            from skidl.logger import erc_logger, rt_logger, stop_log_file_output

        stop_log_file_output()
    finally:
        os.chdir(_cwd)


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
