"""What a restored copy is: the restore that made it and the point in time it holds.

``restored_point(store, db_name)`` -> ``(point, label)``: for a database the newest complete
restore wrote, the moment its data is from - the ``--at`` of a point-in-time restore, else the
end of the backup - and a label naming the restore and backup; ``(None, "...")`` for a database
no restore wrote (made by hand: the operator vouches for it) or a point that cannot be read.

Failure behaviour: a database whose newest restore is not complete (``running``, ``failed``,
``dropped``) holds only part of a backup: FluxaError saying to finish that restore first
(``require_whole_source``). Reads the state store only.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from ..backup import catalog
from ..errors import FluxaError
from ..store.backup_models import RestoreRun

UTC = timezone.utc


def require_whole_source(store, from_db: str) -> None:
    """Refuse a restored database whose newest restore did not complete: it holds part of a backup.
    (A database no restore wrote, made by hand, is the operator's to vouch for.)"""
    with store.session() as s:
        newest = s.scalars(select(RestoreRun).where(RestoreRun.target_db == from_db)
                           .order_by(RestoreRun.id.desc()).limit(1)).first()
        if newest is not None and newest.status != "complete":
            raise FluxaError(f"the newest restore into {from_db!r} (restore {newest.id} of backup {newest.backup_id}) "
                             f"is {newest.status}: {from_db!r} holds only part of it",
                             "rerun that restore (`restore run` resumes it) and promote once it is complete")


def _parse_at(text) -> datetime | None:
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None  # a BSON timestamp t:i: no wall-clock point to compare with
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def restored_point(store, db_name: str) -> tuple[datetime | None, str]:
    if store is None:
        return None, f"{db_name} (no state store to say which restore made it)"
    require_whole_source(store, db_name)
    with store.session() as s:
        run = s.scalars(select(RestoreRun).where(RestoreRun.target_db == db_name, RestoreRun.status == "complete")
                        .order_by(RestoreRun.id.desc()).limit(1)).first()
        if run is None:
            return None, f"{db_name} (no restore recorded: made by hand)"
        run_id, backup_id, pitr = run.id, run.backup_id, run.pitr
    if pitr and pitr.get("at"):
        return _parse_at(pitr["at"]), f"{db_name} (restore {run_id}: backup {backup_id} replayed to {pitr['at']})"
    b = catalog.get_backup(store, backup_id)
    point = b.finished_at if b.finished_at is None or b.finished_at.tzinfo else b.finished_at.replace(tzinfo=UTC)
    return point, f"{db_name} (restore {run_id} of backup {backup_id})"
