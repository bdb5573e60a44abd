"""Retention of the oplog archive: the policy's ``point_in_time`` window (72 h by default).

A point in time t is restored from the newest full backup that ended before t plus the entries
after that backup's start. So to keep every point of the last 72 h reachable, the archive keeps
every slice with entries after the start of the newest complete full backup that ended before
``now - 72h`` (the *base*); slices that end at or before the base's start can go. With no such backup, nothing
older than the oldest full backup after the cutoff is reachable anyway, so the cut is that
backup's start; with no full backup at all, nothing is pruned. Never is a slice that ends
inside the window deleted. Pins exempt backups, not slices: a pinned backup older than the
window stays restorable as a snapshot, not to points after it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from bson.timestamp import Timestamp
from sqlalchemy import select

from ..policy.durations import parse_duration
from ..policy.models import Policy
from ..store import Store
from ..store.backup_models import RESTORABLE, Backup, OplogGap, OplogSlice
from . import archive_catalog as ac
from .retention import PruneItem, aware

UTC = timezone.utc


def slice_cut(store: Store, policy: Policy, now: datetime) -> tuple[Timestamp | None, str]:
    """(the oldest ts the archive must keep, why); None: keep everything."""
    sched = policy.backup.get("point_in_time")
    if sched is None or not sched.retention:
        return None, "no point_in_time retention in the policy"
    cutoff = now - parse_duration(sched.retention)
    with store.session() as s:
        fulls = list(s.scalars(select(Backup).where(Backup.kind == "full", Backup.status.in_(RESTORABLE),
                                                    Backup.oplog_start_t.is_not(None))))
    cuts = []
    for db in {b.db for b in fulls}:  # the archive is server-wide: keep what the neediest database needs
        mine = [b for b in fulls if b.db == db]
        before = [b for b in mine if aware(b.finished_at) <= cutoff]
        base = max(before, key=lambda b: aware(b.finished_at)) if before else min(mine, key=lambda b: aware(b.finished_at))
        cuts.append((Timestamp(base.oplog_start_t, base.oplog_start_i), f"start of backup {base.id} ({db})"))
    if not cuts:
        return None, "no complete full backup to restore a point in time from"
    return min(cuts, key=lambda c: c[0])


def plan_slice_prune(store: Store, policy: Policy, now: datetime | None = None) -> list[PruneItem]:
    now = now or datetime.now(UTC)
    cut, why = slice_cut(store, policy, now)
    keep_for = policy.backup["point_in_time"].retention if "point_in_time" in policy.backup else None
    out = []
    for row in ac.slices(store):
        end = aware(row.last_wall) or aware(row.created_at)
        item = PruneItem(f"slice:{row.id}", "oplog-slice", "complete",
                         round((now - end).total_seconds() / 86400, 2), "keep", "")
        if cut is None:
            item.reason = why
        elif ac.last_ts(row) > cut:  # replay starts after the base's start
            item.reason = f"needed from the {why}"
        elif keep_for and now - end <= parse_duration(keep_for):
            item.reason = f"within {keep_for}"
        else:
            item.action, item.reason = "delete", f"ends before the {why}, the oldest base of the last {keep_for}"
        out.append(item)
    return out


def apply_slice_prune(store: Store, items: list[PruneItem]) -> list[str]:
    """Delete the planned slices, then unlink the oldest kept slice of each repository from its
    pruned predecessor, so the archive's coverage starts there instead of reporting a gap; recorded
    gaps older than every slice left go too."""
    ids = [int(i.id.split(":", 1)[1]) for i in items if i.action == "delete"]
    if not ids:
        return []
    with store.session() as s:
        rows = list(s.scalars(select(OplogSlice).where(OplogSlice.id.in_(ids))))
        paths = [ac.slice_path(r) for r in rows]
        for row in rows:
            s.delete(row)
        s.flush()
        for repo in {r.repo for r in rows}:
            oldest = s.scalars(select(OplogSlice).where(OplogSlice.repo == repo)
                               .order_by(OplogSlice.first_t, OplogSlice.first_i).limit(1)).first()
            if oldest is not None and oldest.prev_t is not None and any(
                    (r.last_t, r.last_i) == (oldest.prev_t, oldest.prev_i) for r in rows):
                oldest.prev_t = oldest.prev_i = None
        # a recorded gap with nothing archived before it any more is no longer between anything
        oldest = s.scalars(select(OplogSlice).order_by(OplogSlice.first_t, OplogSlice.first_i).limit(1)).first()
        for gap in s.scalars(select(OplogGap).where(OplogGap.after_t.is_not(None))):
            if oldest is None or (gap.after_t, gap.after_i) < (oldest.first_t, oldest.first_i):
                s.delete(gap)
    for p in paths:  # after the commit: a failed commit leaves every file its row names
        p.unlink(missing_ok=True)
    return [f"slice:{r.id}" for r in rows]
