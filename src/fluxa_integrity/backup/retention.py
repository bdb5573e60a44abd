"""Retention from the policy's ``backup`` section: what `backup prune` deletes.

A backup expires ``retention`` after it finished (started, if it never finished). Schema
backups (retention null) are kept forever; pinned backups are exempt until unpinned; a running
backup is never touched. Failed backups expire like their kind, so the failure stays visible
for the same window.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import delete

from ..policy.durations import parse_duration
from ..policy.models import Policy
from ..store import Store
from ..store.backup_models import Backup, Verification
from .catalog import list_backups
from .repository import backup_dir

UTC = timezone.utc
KIND_TO_POLICY = {"full": "full", "incremental": "incremental", "schema": "schema"}


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; the store only ever holds UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass
class PruneItem:
    id: str
    kind: str
    status: str
    age_days: float
    action: str  # delete | keep
    reason: str


def plan_prune(store: Store, policy: Policy, now: datetime | None = None, db: str | None = None) -> list[PruneItem]:
    now = now or datetime.now(UTC)
    out = []
    for row in list_backups(store, db):
        at = aware(row.finished_at) or aware(row.started_at)
        age = now - at
        sched = policy.backup.get(KIND_TO_POLICY.get(row.kind, row.kind))
        keep_for = parse_duration(sched.retention) if sched and sched.retention else None
        item = PruneItem(row.id, row.kind, row.status, round(age.total_seconds() / 86400, 2), "keep", "")
        if row.status == "running":
            item.reason = "running"
        elif keep_for is None:
            item.reason = "kept indefinitely" if sched else f"no retention for kind {row.kind!r} in the policy"
        elif age <= keep_for:
            item.reason = f"within {sched.retention}"
        elif row.pinned_by:
            item.reason = f"pinned: {row.pinned_by}"
        else:
            item.action, item.reason = "delete", f"older than {sched.retention}"
        out.append(item)
    return out


def apply_prune(store: Store, items: list[PruneItem]) -> list[str]:
    deleted = []
    for item in items:
        if item.action != "delete":
            continue
        with store.session() as s:
            row = s.get(Backup, item.id)
            if row is None or row.pinned_by:  # pinned since the plan was made
                continue
            shutil.rmtree(backup_dir(Path(row.repo), row.id), ignore_errors=True)
            s.execute(delete(Verification).where(Verification.backup_id == row.id))
            s.delete(row)
        deleted.append(item.id)
    return deleted
