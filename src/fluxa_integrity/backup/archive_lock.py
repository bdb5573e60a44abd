"""One oplog archiver per repository: the holder-naming lock of ``locks.py`` on
``<repo>/oplog/.archiver.lock``, held for the archiver's life.

Two archivers on one repository would both append the same entries (duplicate catalog rows,
overlapping slices), so the second is refused with the holder's pid, host and start time. A dead
archiver's lock is stale by construction (the kernel drops a flock with its process): the next
archiver takes it over and logs whose it was.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from ..errors import FluxaError
from ..locks import HolderLock, describe

LOCK_NAME = ".archiver.lock"


class ArchiverBusy(FluxaError):
    """Another live archiver holds the repository."""

    def __init__(self, message: str, hint: str, holder: dict):
        super().__init__(message, hint)
        self.holder = holder


class ArchiveLock(HolderLock):
    """``with ArchiveLock(repo, log):`` - raises ArchiverBusy when another archiver holds it."""

    def __init__(self, repo: Path, log=lambda msg: None):
        def busy(holder: dict) -> ArchiverBusy:
            return ArchiverBusy(f"another oplog archiver is writing {repo}: {describe(holder)}",
                                "only one archiver may write a repository at a time: wait for it to finish, or stop "
                                f"it (kill -TERM {holder.get('pid', 'PID')} closes its open slice and exits)", holder)

        super().__init__(repo / "oplog" / LOCK_NAME, busy,
                         "check that the backup repository is writable and has free space")
        self.log = log

    def acquire(self) -> "ArchiveLock":
        super().acquire()
        old = self.took_over
        if old:
            import socket

            alive = old.get("host") == socket.gethostname() and psutil.pid_exists(int(old["pid"]))
            self.log(f"took over the archiver lock of pid {old['pid']} (since {old.get('since', '?')}), "
                     f"which {'no longer holds it' if alive else 'is gone'}")
        return self
