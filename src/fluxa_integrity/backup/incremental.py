"""Incremental backups (policy: hourly, kept 7 days): the database's oplog entries since the
previous full or incremental backup's end, copied out of the archive into the backup's own
``oplog.bson.zst`` - a copy, so pruning slices after 72 hours (point-in-time retention) never
breaks an incremental kept for 7 days. The archiver runs once first so the copy reaches now.
It covers ``(start, end]``: end = the last archived entry; start = the previous incremental's end,
or - when the previous backup is a full one - that snapshot's oplog *start*, not its end: the
snapshot is not a point-in-time copy, so replaying it needs the entries written while it ran, and
a full backup plus its incrementals must be enough on their own once the slices are pruned.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from bson.timestamp import Timestamp

from ..errors import FluxaError
from ..store import Store
from . import archive_catalog as ac
from . import catalog
from .archive_lock import ArchiverBusy
from .archiver import ArchiveOptions, archive_oplog
from .files import HashedWriter
from .manifest import FORMAT, seal
from .oplog_apply import entry_touches
from .oplog_sources import plan_chain, read_chain
from .repository import new_backup_id, partial_dir, resolve_repo, write_pid
from .snapshot import BackupResult, _iso

UTC = timezone.utc


def previous_end(store: Store, db: str):
    rows = [b for b in catalog.list_backups(store, db) if b.kind in ("full", "incremental")
            and b.status in ("complete", "verified") and b.oplog_end_t is not None]
    if not rows:
        raise FluxaError(f"no complete backup of {db!r} to base an incremental backup on",
                         "take a full backup first (`backup run`)")
    return max(rows, key=lambda b: (b.oplog_end_t, b.oplog_end_i))


def run_incremental(uri: str, db: str, store: Store, repo: str | Path | None = None, archive: bool = True) -> BackupResult:
    repo = resolve_repo(repo)
    catalog.sweep_dead_runs(store, [repo])
    base = previous_end(store, db)
    start = (Timestamp(base.oplog_start_t, base.oplog_start_i) if base.kind == "full" and base.oplog_start_t is not None
             else Timestamp(base.oplog_end_t, base.oplog_end_i))
    if archive:
        try:
            archive_oplog(uri, store, repo, ArchiveOptions(once=True, poll_ms=200))
        except ArchiverBusy:
            pass  # a follower is archiving this repository: the copy ends at its last closed slice
    last = ac.last_archived(store, repo)
    end = max(ac.last_ts(last), start) if last else start
    chain = plan_chain(store, None, db, start, Timestamp(end.time, end.inc + 1))  # refuses a gap
    started = datetime.now(UTC)
    backup_id = new_backup_id(started)
    work = partial_dir(repo, backup_id)
    work.mkdir(parents=True)
    write_pid(work)
    catalog.start_backup(store, backup_id, "incremental", db, repo, [], started, oplog_start=start)
    t0 = time.perf_counter()
    try:
        writer = HashedWriter(work / "oplog.bson.zst", "zstd")
        count, used = 0, []
        for e in read_chain(chain, start, Timestamp(end.time, end.inc + 1), used):
            if entry_touches(e, db):
                writer.write(e.raw)
                count += 1
        sha, size = writer.close()
        finished = datetime.now(UTC)
        manifest = {"format": FORMAT, "id": backup_id, "kind": "incremental", "status": "complete", "db": db,
                    "based_on": base.id, "started_at": _iso(started), "finished_at": _iso(finished),
                    "oplog": {"start": {"t": start.time, "i": start.inc}, "end": {"t": end.time, "i": end.inc}},
                    "oplog_file": {"path": "oplog.bson.zst", "sha256": sha, "size": size}, "entries": count,
                    "sources": used, "collections": {}, "totals": {"documents": count, "files": 1, "bytes": size}}
        final, manifest_sha = seal(work, repo, backup_id, manifest)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        catalog.fail_backup(store, backup_id, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        raise
    catalog.finish_backup(store, backup_id, size=size + (final / "manifest.json").stat().st_size, file_count=2,
                          finished_at=finished, oplog_end=end, manifest_sha256=manifest_sha)
    return BackupResult(backup_id, db, final, manifest, time.perf_counter() - t0)
