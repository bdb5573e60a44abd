"""One promotion or undo at a time per live database: an exclusive lock on
``$FLUXA_HOME/undo/.<live_db>.lock``, held from the check for unfinished promotions to the last write.

Shape: ``with PromotionLock(live_db):``; the file holds one JSON line ``{pid, host, since,
command}`` naming the holder, for messages only; ``flock(LOCK_EX | LOCK_NB)`` alone decides (the
same pattern as backup/archive_lock.py). Two writers into one live database (an undo beside a
live promotion, two reruns of one promotion) could each overwrite what the other saved, so the
second is refused, naming the first.

Failure behaviour: the kernel drops a flock when its process dies (kill -9 included), so a dead
holder never blocks a rerun. A lock file that cannot be opened is a FluxaError before any write.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone

from ..errors import FluxaError
from ..home import fluxa_home


class PromotionLock:
    def __init__(self, live_db: str):
        self.live_db = live_db
        self.path = fluxa_home() / "undo" / f".{live_db}.lock"
        self._f = None

    def __enter__(self) -> "PromotionLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise FluxaError(f"cannot open the promotion lock {self.path}: {exc.strerror or exc}",
                             "check that FLUXA_HOME is writable") from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            f.close()
            raise FluxaError(f"another promotion or undo is writing to {self.live_db!r}: pid {holder.get('pid', '?')} "
                             f"on {holder.get('host', '?')} since {holder.get('since', '?')}"
                             + (f" ({holder['command']})" if holder.get("command") else ""),
                             "wait for it to finish, then rerun this command") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "command": " ".join(os.path.basename(a) if i == 0 else a
                                                for i, a in enumerate(sys.argv[:4]))}) + "\n")
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            self._f.seek(0)
            self._f.truncate()
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._f.close()
            self._f = None
