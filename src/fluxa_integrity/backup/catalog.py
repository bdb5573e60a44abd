"""The backup catalog in the state store: rows for running/complete/failed/verified backups.

A backup's status says whether it was written whole; its latest verification (ok / failed with
why / never, and when) is shown beside it, and a failed drill takes ``verified`` back to
``complete``. Runs whose writer died are swept: rows failed, partial folders deleted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from bson.timestamp import Timestamp
from sqlalchemy import select, update

from ..errors import FluxaError
from ..store import Store
from ..store.backup_models import RESTORABLE, Backup, Verification
from .repository import backup_dir, dead_partials, partial_dir, writer_alive

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
    return [s["id"] for s in sweep_dead_runs(store) if s["row"]]


def sweep_dead_runs(store: Store, repos: list[Path] | tuple = (), dry_run: bool = False) -> list[dict]:
    """Runs whose writer died: their ``running`` rows become failed and their ``.partial-<id>/``
    folders are deleted (in the rows' repositories and in ``repos``). A folder whose writer is
    alive is never touched. Returns ``[{id, folder, row}]`` (row: a catalog row was marked);
    ``dry_run`` only lists them."""
    import shutil

    swept: dict[str, dict] = {}
    look = {Path(r) for r in repos}
    with store.session() as s:
        for row in s.scalars(select(Backup).where(Backup.status == "running")).all():
            part = partial_dir(Path(row.repo), row.id)
            look.add(Path(row.repo))
            # a sealed folder is a backup between its rename and its catalog update: not dead
            if writer_alive(part) or backup_dir(Path(row.repo), row.id).is_dir():
                continue
            if dry_run:
                swept[row.id] = {"id": row.id, "folder": None, "row": True}
                continue
            done = s.execute(update(Backup).where(Backup.id == row.id, Backup.status == "running").values(
                status="failed", finished_at=datetime.now(UTC),
                error="interrupted: the process writing it is gone (its partial folder was removed)"))
            if done.rowcount == 1:  # only if it was still running: a finish that landed meanwhile stands
                swept[row.id] = {"id": row.id, "folder": None, "row": True}
    for repo in look:
        for part in dead_partials(repo):
            backup_id = part.name[len(".partial-"):]
            if not dry_run:
                shutil.rmtree(part, ignore_errors=True)
            if dry_run or not part.exists():
                swept.setdefault(backup_id, {"id": backup_id, "folder": None, "row": False})["folder"] = str(part)
    return list(swept.values())


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
        elif verdict != "pass" and row.status == "verified":  # the latest drill decides, not the best one
            row.status = "complete"
        s.flush()
        return v.id


def verifications(store: Store, backup_id: str | None = None) -> list[Verification]:
    with store.session() as s:
        q = select(Verification).order_by(Verification.verified_at.desc(), Verification.id.desc())
        if backup_id:
            q = q.where(Verification.backup_id == backup_id)
        return list(s.scalars(q))


def latest_verifications(store: Store) -> dict[str, Verification]:
    """{backup id: its most recent verification}."""
    out: dict[str, Verification] = {}
    for v in reversed(verifications(store)):  # oldest first: the newest overwrites
        out[v.backup_id] = v
    return out


def verification_summary(v: Verification | None) -> dict:
    """The verdict a person reads next to a backup: ok, failed (with why) or never, and when."""
    if v is None:
        return {"verdict": "never", "at": None, "reason": None, "verification_id": None}
    problems = (v.details or {}).get("problems") or []
    reason = None
    if v.verdict != "pass":
        reason = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "") \
            if problems else "failed (no problem recorded)"
    return {"verdict": "ok" if v.verdict == "pass" else "failed", "at": v.verified_at, "reason": reason,
            "verification_id": v.id}


def verification_text(summary: dict) -> str:
    if summary["verdict"] == "never":
        return "never verified"
    at = f"{summary['at']:%Y-%m-%d %H:%M}"
    return f"verified ok {at}" if summary["verdict"] == "ok" else f"verification FAILED {at}: {summary['reason']}"


def oplog_ts(row: Backup, which: str) -> Timestamp | None:
    t, i = getattr(row, f"oplog_{which}_t"), getattr(row, f"oplog_{which}_i")
    return Timestamp(t, i) if t is not None else None


def as_dict(row: Backup, verification: Verification | None = None) -> dict:
    return {"verification": verification_summary(verification), "id": row.id, "kind": row.kind, "db": row.db, "repo": row.repo, "status": row.status,
            "collections": row.collections, "size": row.size, "file_count": row.file_count,
            "started_at": row.started_at, "finished_at": row.finished_at,
            "oplog_start": [row.oplog_start_t, row.oplog_start_i] if row.oplog_start_t is not None else None,
            "oplog_end": [row.oplog_end_t, row.oplog_end_i] if row.oplog_end_t is not None else None,
            "manifest_sha256": row.manifest_sha256, "pinned_by": row.pinned_by, "error": row.error}
