"""The service's log: one line per event on stderr and in ``$FLUXA_HOME/logs/serve.log``.

Shape: ``2026-11-26T13:33:12Z INFO job backup-full run 3 ok in 1.2s [schedule, attempt 1]: ...``;
the file rotates at 5 MB keeping 3 old files. APScheduler's own logger is kept to errors (its
"maximum number of running instances" warnings are expected: the runner coalesces instead).
Failure: a log directory that cannot be created is a FluxaError before the service starts.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import FluxaError

LOGGER = "fluxa_integrity.service"


def setup(home: Path) -> tuple[Callable[[str, str], None], Path]:
    path = home / "logs" / "serve.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 << 20, backupCount=3, encoding="utf-8")
    except OSError as exc:
        raise FluxaError(f"cannot write the service log {path}: {exc.strerror or exc}",
                         "check that FLUXA_HOME is writable") from exc
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    fmt.converter = time.gmtime
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in (logging.StreamHandler(sys.stderr), file_handler):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)

    def log(level: str, msg: str) -> None:
        logger.log(getattr(logging, level.upper(), logging.INFO), msg)

    return log, path
