"""An exclusive lock that names its holder: ``flock(LOCK_EX | LOCK_NB)`` on a file that also holds
one JSON line ``{pid, host, since, command}``.

The flock alone decides; the JSON is a label for messages ("pid N on HOST since T"). The kernel
drops a flock when its process dies (kill -9 included), so a dead holder's lock is stale by
construction and the next taker gets it, with the old label in ``took_over``. flock is per open
file, so two holders in one process exclude each other too. (On NFS Linux emulates flock with
byte-range locks; a file shared by several machines is not supported.)

Users: the oplog archiver (one per repository) and promotions (one writer per live database).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .errors import FluxaError


def _read(f) -> dict:
    f.seek(0)
    try:
        return json.loads(f.read() or "{}")
    except ValueError:
        return {}


def describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


class HolderLock:
    """``with HolderLock(path, busy, open_hint):`` - ``busy(holder)`` builds the error raised when
    another live process holds the lock; ``open_hint`` says what to check when the file cannot be
    opened."""

    def __init__(self, path: Path, busy: Callable[[dict], FluxaError], open_hint: str):
        self.path, self.busy, self.open_hint = path, busy, open_hint
        self._f = None
        self.took_over: dict | None = None

    def acquire(self) -> "HolderLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise FluxaError(f"cannot open the lock {self.path}: {exc.strerror or exc}", self.open_hint) from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(f)
            f.close()
            raise self.busy(holder) from None
        old = _read(f)
        if old.get("pid") and not (old.get("pid") == os.getpid() and old.get("host") == socket.gethostname()):
            self.took_over = old
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "command": " ".join(os.path.basename(a) if i == 0 else a
                                                    for i, a in enumerate(sys.argv[:4]))}) + "\n")
            f.flush()
        except OSError:
            pass  # a full disk: the label stays stale, the flock still holds
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            try:
                self._f.seek(0)
                self._f.truncate()  # no label left behind to be mistaken for a holder
            except OSError:
                pass
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._f.close()
            self._f = None

    def __enter__(self) -> "HolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
