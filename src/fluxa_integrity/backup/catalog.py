"""The backup catalog in the state store: rows for running/complete/failed/verified backups."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from bson.timestamp import Timestamp
from sqlalchemy import select

from ..errors import FluxaError
from ..store import Store
from ..store.backup_models import RESTORABLE, Backup, Verification
from .repository import backup_dir, partial_dir, writer_alive

UTC = timezone.utc


def _ts_cols(prefix: str, ts: Timestamp | None) -> dict:
    return {f"oplog_{prefix}_t": ts.time if ts else None, f"oplog_{prefix}_i": ts.inc if ts else None}


def start_backup(store: Store, backup_id: str, kind: str, db: str, repo: Path, collections: list[str],
                 started_at: datetime, oplog_start: Timestamp | None = None) -> None:
    with store.session() as s:
        s.add(Backup(id=backup_id, kind=kind, db=db, repo=str(repo), status="running", collections=collections,
                     size=0, file_count=0, started_at=started_at, **_ts_cols("start", oplog_start)))


def set_oplog_start(store: Store, backup_id: str, ts: Timestamp | None) -> None:
    with store.session() as s:
        row = s.get(Backup, backup_id)
        for k, v in _ts_cols("start", ts).items():
            setattr(row, k, v)


def finish_backup(store: Store, backup_id: str, *, size: int, file_count: int, finished_at: datetime,
                  oplog_end: Timestamp | None, manifest_sha256: str) -> None:
    with store.session() as s:
        row = s.get(Backup, backup_id)
        row.status, row.size, row.file_count, row.finished_at = "complete", size, file_count, finished_at
        row.manifest_sha256 = manifest_sha256
        for k, v in _ts_cols("end", oplog_end).items():
            setattr(row, k, v)


def fail_backup(store: Store, backup_id: str, error: str, finished_at: datetime | None = None) -> None:
    with store.session() as s:
        row = s.get(Backup, backup_id)
        if row is not None:
            row.status, row.error, row.finished_at = "failed", error, finished_at or datetime.now(UTC)


def mark_stale_failed(store: Store) -> list[str]:
    """Rows left ``running`` by a process that died (kill -9, power loss) become failed."""
    stale = []
    with store.session() as s:
        for row in s.scalars(select(Backup).where(Backup.status == "running")):
            part = partial_dir(Path(row.repo), row.id)
            if not writer_alive(part):
                row.status, row.finished_at = "failed", datetime.now(UTC)
                row.error = "interrupted: the process writing it is gone"
                stale.append(row.id)
    return stale


def get_backup(store: Store, backup_id: str) -> Backup:
    with store.session() as s:
        row = s.get(Backup, backup_id)
        if row is None:  # a unique prefix is enough, as with git
            rows = list(s.scalars(select(Backup).where(Backup.id.like(f"{backup_id}%"))))
            row = rows[0] if len(rows) == 1 else None
    if row is None:
        raise FluxaError(f"no backup {backup_id!r} in the catalog", "list them with `fluxa-integrity backup list`")
    return row


def restorable_backup(store: Store, backup_id: str) -> Backup:
    """The backup, if it may be restored: complete or verified, a full snapshot, files present."""
    row = get_backup(store, backup_id)
    if row.status not in RESTORABLE:
        raise FluxaError(f"backup {row.id} is {row.status}" + (f" ({row.error})" if row.error else "")
                         + ": it is never offered for restore",
                         "choose a complete or verified backup (`fluxa-integrity backup list`)")
    if row.kind != "full":
        raise FluxaError(f"backup {row.id} is a {row.kind} backup, not a snapshot",
                         "restore from a full backup (`fluxa-integrity backup list --kind full`)")
    if not (backup_dir(Path(row.repo), row.id) / "manifest.json").is_file():
        raise FluxaError(f"backup {row.id}: {backup_dir(Path(row.repo), row.id)} is missing from the repository",
                         "was the repository moved? the catalog row keeps its old path")
    return row


def list_backups(store: Store, db: str | None = None, kind: str | None = None) -> list[Backup]:
    with store.session() as s:
        q = select(Backup).order_by(Backup.started_at.desc(), Backup.id.desc())
        if db:
            q = q.where(Backup.db == db)
        if kind:
            q = q.where(Backup.kind == kind)
        return list(s.scalars(q))


def set_pin(store: Store, backup_id: str, reason: str | None) -> Backup:
    row = get_backup(store, backup_id)
    with store.session() as s:
        got = s.get(Backup, row.id)
        got.pinned_by = reason
        return got


def record_verification(store: Store, backup_id: str, verdict: str, restore_seconds: dict, details: dict,
                        at: datetime | None = None) -> int:
    with store.session() as s:
        v = Verification(backup_id=backup_id, verified_at=at or datetime.now(UTC), verdict=verdict,
                         restore_seconds=restore_seconds, details=details)
        s.add(v)
        row = s.get(Backup, backup_id)
        if verdict == "pass" and row.status == "complete":
            row.status = "verified"
        s.flush()
        return v.id


def verifications(store: Store, backup_id: str | None = None) -> list[Verification]:
    with store.session() as s:
        q = select(Verification).order_by(Verification.verified_at.desc(), Verification.id.desc())
        if backup_id:
            q = q.where(Verification.backup_id == backup_id)
        return list(s.scalars(q))


def oplog_ts(row: Backup, which: str) -> Timestamp | None:
    t, i = getattr(row, f"oplog_{which}_t"), getattr(row, f"oplog_{which}_i")
    return Timestamp(t, i) if t is not None else None


def as_dict(row: Backup) -> dict:
    return {"id": row.id, "kind": row.kind, "db": row.db, "repo": row.repo, "status": row.status,
            "collections": row.collections, "size": row.size, "file_count": row.file_count,
            "started_at": row.started_at, "finished_at": row.finished_at,
            "oplog_start": [row.oplog_start_t, row.oplog_start_i] if row.oplog_start_t is not None else None,
            "oplog_end": [row.oplog_end_t, row.oplog_end_i] if row.oplog_end_t is not None else None,
            "manifest_sha256": row.manifest_sha256, "pinned_by": row.pinned_by, "error": row.error}
