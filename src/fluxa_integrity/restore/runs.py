"""The restores the catalog keeps (table ``restore_runs``, written by restore/executor.py and
restore/pitr.py): listed newest first, or one by id, each with the database its backup was
taken of. Read-only: nothing here changes a run's status (a killed run stays ``running`` until
`restore run` resumes it).

Failure: an unknown id is a FluxaError (``no restore 7``) with where to find the ids.
"""

from __future__ import annotations

from sqlalchemy import select

from ..errors import FluxaError
from ..store import Store
from ..store.backup_models import Backup, RestoreRun
from ..backup.retention import aware


def as_dict(row: RestoreRun, source_db: str | None) -> dict:
    return {"id": row.id, "backup_id": row.backup_id, "source_db": source_db, "target_db": row.target_db,
            "collections": list(row.collections or []), "filter": row.filter, "status": row.status,
            "started_at": aware(row.started_at), "finished_at": aware(row.finished_at), "seconds": row.seconds,
            "point_in_time": (row.pitr or {}).get("at") if row.pitr else None, "pitr": row.pitr,
            "progress": row.progress or {}, "error": row.error}


def _sources(s, rows: list[RestoreRun]) -> dict[str, str]:
    ids = {r.backup_id for r in rows}
    if not ids:
        return {}
    return dict(s.execute(select(Backup.id, Backup.db).where(Backup.id.in_(ids))).all())


def list_restores(store: Store, *, backup: str | None = None, target_db: str | None = None,
                  limit: int = 50) -> list[dict]:
    """Restore runs, newest first: of one backup (its exact id) or into one database, at most ``limit``."""
    with store.session() as s:
        q = select(RestoreRun).order_by(RestoreRun.id.desc()).limit(limit)
        if backup:
            q = q.where(RestoreRun.backup_id == backup)
        if target_db:
            q = q.where(RestoreRun.target_db == target_db)
        rows = list(s.scalars(q))
        src = _sources(s, rows)
        return [as_dict(r, src.get(r.backup_id)) for r in rows]


def get_restore(store: Store, restore_id: int) -> dict:
    with store.session() as s:
        row = s.get(RestoreRun, restore_id)
        if row is None:
            raise FluxaError(f"no restore {restore_id}", "the id is printed by `restore run` (restore_id); "
                             "list them at /api/restores")
        return as_dict(row, _sources(s, [row]).get(row.backup_id))
