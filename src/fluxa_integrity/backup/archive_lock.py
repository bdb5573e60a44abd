"""One oplog archiver per repository: an exclusive lock on ``<repo>/oplog/.archiver.lock``.

Shape: the file holds one JSON line ``{pid, host, since, command}`` naming the holder; the lock
itself is ``flock(LOCK_EX | LOCK_NB)`` on that file, held for the archiver's life. Two archivers
on one repository would both append the same entries (duplicate catalog rows, overlapping
slices), so the second is refused with the holder's pid, host and start time.

Failure behaviour: the kernel drops a flock when its process dies (kill -9 included), so the
lock of a dead archiver is stale by construction: the next archiver takes it over and says whose
it was. The JSON is only a label for messages; the flock alone decides. flock is per open file,
so two archivers in one process (threads) exclude each other too. (On NFS, flock is emulated
with byte-range locks by Linux; a repository shared by several machines is not supported.)
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import psutil

from ..errors import FluxaError

LOCK_NAME = ".archiver.lock"


class ArchiverBusy(FluxaError):
    """Another live archiver holds the repository."""

    def __init__(self, message: str, hint: str, holder: dict):
        super().__init__(message, hint)
        self.holder = holder


def _read(f) -> dict:
    f.seek(0)
    try:
        return json.loads(f.read() or "{}")
    except ValueError:
        return {}


class ArchiveLock:
    """``with ArchiveLock(repo, log):`` - raises ArchiverBusy when another archiver holds it."""

    def __init__(self, repo: Path, log=lambda msg: None):
        self.path = repo / "oplog" / LOCK_NAME
        self.log = log
        self._f = None
        self.took_over: dict | None = None

    def acquire(self) -> "ArchiveLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise FluxaError(f"cannot open the archiver lock {self.path}: {exc.strerror or exc}",
                             "check that the backup repository is writable and has free space") from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(f)
            f.close()
            who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
                   + (f" ({holder['command']})" if holder.get("command") else ""))
            raise ArchiverBusy(f"another oplog archiver is writing {self.path.parent.parent}: {who}",
                               "only one archiver may write a repository at a time: wait for it to finish, or stop "
                               f"it (kill -TERM {holder.get('pid', 'PID')} closes its open slice and exits)",
                               holder) from None
        old = _read(f)
        if old.get("pid") and not (old.get("pid") == os.getpid() and old.get("host") == socket.gethostname()):
            alive = old.get("host") == socket.gethostname() and psutil.pid_exists(int(old["pid"]))
            self.took_over = old
            self.log(f"took over the archiver lock of pid {old['pid']} (since {old.get('since', '?')}), "
                     f"which {'no longer holds it' if alive else 'is gone'}")
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

    def __enter__(self) -> "ArchiveLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
