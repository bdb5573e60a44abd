"""Oplog slice files: ``<repo>/oplog/<first-ts>-<last-ts>.bson.zst`` (``ts`` as ``t.i``), the raw
BSON entries back to back (mongodump's .bson format), zstd-compressed.

A slice is written under a temporary name holding the writer's pid and renamed once closed and
fsynced, so a file named like a slice is always whole; its sha256 (of the bytes on disk) and
size go into the catalog row written right after.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Iterator

from bson.timestamp import Timestamp

from ..errors import FluxaError
from .files import HashedWriter, file_sha256, iter_raw_documents

OPLOG_DIR = "oplog"


def ts_name(ts: Timestamp) -> str:
    return f"{ts.time}.{ts.inc}"


def slice_name(first: Timestamp, last: Timestamp) -> str:
    return f"{ts_name(first)}-{ts_name(last)}.bson.zst"


class SliceWriter:
    """Collects entries into a temporary file; ``close()`` renames it to its final name."""

    def __init__(self, repo: Path):
        self.dir = repo / OPLOG_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.dir / f".writing-{os.getpid()}.bson.zst"
        self._w = HashedWriter(self.tmp, "zstd")
        self.first: Timestamp | None = None
        self.last: Timestamp | None = None
        self.first_wall: datetime | None = None
        self.last_wall: datetime | None = None
        self.count = 0
        self.raw_bytes = 0

    def add(self, raw: bytes, ts: Timestamp, wall: datetime | None) -> None:
        self._w.write(raw)
        if self.first is None:
            self.first, self.first_wall = ts, wall
        self.last, self.last_wall = ts, wall
        self.count += 1
        self.raw_bytes += len(raw)

    def close(self) -> tuple[Path, str, int]:
        """(final path, sha256, size on disk)."""
        sha, size = self._w.close()
        final = self.dir / slice_name(self.first, self.last)
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, final)
        return final, sha, size

    def discard(self) -> None:
        """Drop the temporary file: nothing of it is ever cataloged (also after a failed write)."""
        self._w.abort()


def remove_stale_temp(repo: Path) -> None:
    """Temporary files of archivers that died (their pid is gone) are removed at start (the
    caller holds the repository's archiver lock, so no live archiver is writing one)."""
    import psutil

    for p in (repo / OPLOG_DIR).glob(".writing-*.bson.zst"):
        try:
            pid = int(p.name.split("-")[1].split(".")[0])
        except ValueError:
            continue
        if not psutil.pid_exists(pid) or pid == os.getpid():
            p.unlink(missing_ok=True)


def read_slice(path: Path, sha256: str, size: int) -> Iterator[bytes]:
    """The raw entries of a slice, after checking it is exactly the file that was archived."""
    if not path.is_file():
        raise FluxaError(f"oplog slice {path} is missing", "the point-in-time window is broken there (`backup oplog-status`)")
    if path.stat().st_size != size or file_sha256(path) != sha256:
        raise FluxaError(f"oplog slice {path} failed its checksum (the file changed after it was archived)",
                         "the slice is damaged and is refused; restore to a time before it")
    return iter_raw_documents(path, "zstd")
