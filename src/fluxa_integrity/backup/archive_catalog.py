"""Catalog rows of the oplog archive (slices, gaps) and the windows of continuous coverage.

A window is a run of slices each continuing the previous one (``prev`` == the previous slice's
last ts) whose files are present: every oplog entry from the window's first to its last ts is
archived. A break between windows is a gap: recorded by the archiver when the oplog rolled past
it, or found here (a slice file missing or the wrong size, a slice row gone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bson.timestamp import Timestamp
from sqlalchemy import select

from ..store import Store
from ..store.backup_models import OplogArchiveState, OplogGap, OplogSlice
from .retention import aware

UTC = timezone.utc


def ts_of(t: int | None, i: int | None) -> Timestamp | None:
    return Timestamp(t, i) if t is not None else None


def just_before(ts: Timestamp) -> Timestamp:
    return Timestamp(ts.time, ts.inc - 1) if ts.inc > 0 else Timestamp(ts.time - 1, 0xFFFFFFFF)


def ts_text(ts: Timestamp | None) -> str | None:
    return f"{ts.time}:{ts.inc}" if ts is not None else None


def add_slice(store: Store, repo: Path, path: Path, *, first: Timestamp, last: Timestamp, prev: Timestamp | None,
              first_wall, last_wall, count: int, size: int, raw_bytes: int, sha256: str) -> int:
    with store.session() as s:
        row = OplogSlice(repo=str(repo), path=str(path.relative_to(repo)), first_t=first.time, first_i=first.inc,
                         last_t=last.time, last_i=last.inc, prev_t=prev.time if prev else None,
                         prev_i=prev.inc if prev else None, first_wall=first_wall, last_wall=last_wall, count=count,
                         size=size, raw_bytes=raw_bytes, sha256=sha256, created_at=datetime.now(UTC))
        s.add(row)
        s.flush()
        return row.id


def add_gap(store: Store, repo: Path, after: Timestamp | None, before: Timestamp | None, reason: str) -> int:
    with store.session() as s:
        row = OplogGap(repo=str(repo), after_t=after.time if after else None, after_i=after.inc if after else None,
                       before_t=before.time if before else None, before_i=before.inc if before else None,
                       detected_at=datetime.now(UTC), reason=reason)
        s.add(row)
        s.flush()
        return row.id


def mark_caught_up(store: Store, repo: Path, at: datetime, last: Timestamp | None) -> None:
    with store.session() as s:
        row = s.get(OplogArchiveState, str(repo)) or OplogArchiveState(repo=str(repo))
        row.caught_up_at, row.last_t, row.last_i = at, last.time if last else None, last.inc if last else None
        s.merge(row)


def caught_up(store: Store) -> dict[Timestamp, datetime]:
    """Newest proof of being caught up per archived ts: {last archived ts: caught_up_at}."""
    with store.session() as s:
        rows = list(s.scalars(select(OplogArchiveState)))
    return {Timestamp(r.last_t, r.last_i): aware(r.caught_up_at) for r in rows if r.last_t is not None}


def slices(store: Store, repo: Path | None = None) -> list[OplogSlice]:
    with store.session() as s:
        q = select(OplogSlice).order_by(OplogSlice.first_t, OplogSlice.first_i, OplogSlice.id)
        if repo is not None:
            q = q.where(OplogSlice.repo == str(repo))
        return list(s.scalars(q))


def gaps(store: Store, repo: Path | None = None) -> list[OplogGap]:
    with store.session() as s:
        q = select(OplogGap).order_by(OplogGap.id)
        if repo is not None:
            q = q.where(OplogGap.repo == str(repo))
        return list(s.scalars(q))


def last_archived(store: Store, repo: Path) -> OplogSlice | None:
    with store.session() as s:
        return s.scalars(select(OplogSlice).where(OplogSlice.repo == str(repo))
                         .order_by(OplogSlice.last_t.desc(), OplogSlice.last_i.desc()).limit(1)).first()


def slice_path(row: OplogSlice) -> Path:
    return Path(row.repo) / row.path


def first_ts(row) -> Timestamp:
    return Timestamp(row.first_t, row.first_i)


def last_ts(row) -> Timestamp:
    return Timestamp(row.last_t, row.last_i)


def prev_ts(row) -> Timestamp | None:
    return ts_of(row.prev_t, row.prev_i)


def file_problem(row: OplogSlice) -> str | None:
    """Cheap check (presence and size); restores check the sha256."""
    p = slice_path(row)
    if not p.is_file():
        return f"slice file {p} is missing"
    if p.stat().st_size != row.size:
        return f"slice file {p} is {p.stat().st_size} bytes, the catalog says {row.size}"
    return None


@dataclass
class Window:
    first: Timestamp
    last: Timestamp
    first_wall: datetime | None
    last_wall: datetime | None
    slices: list = field(default_factory=list)
    entries: int = 0
    lo: Timestamp | None = None  # covers every entry with lo < ts <= last

    def covers_from(self, ts: Timestamp) -> bool:
        return self.lo is not None and self.lo <= ts <= self.last

    def as_dict(self) -> dict:
        return {"from": ts_text(self.first), "to": ts_text(self.last), "from_wall": self.first_wall,
                "to_wall": self.last_wall, "slices": len(self.slices), "entries": self.entries}


def coverage(store: Store, repo: Path | None = None) -> tuple[list[Window], list[dict]]:
    """(windows of continuous coverage, gaps), oldest first. A gap says: oplog entries after
    ``after`` and up to ``before`` are not in the archive."""
    recorded = {(g.after_t, g.after_i): g for g in gaps(store, repo)}
    windows: list[Window] = []
    breaks: list[dict] = []
    cur: Window | None = None
    lost_upto: Timestamp | None = None  # last ts of a damaged slice just reported
    for row in slices(store, repo):
        problem = file_problem(row)
        after = cur.last if cur is not None else prev_ts(row)
        if problem:
            breaks.append({"after": ts_text(after), "before": ts_text(last_ts(row)), "reason": problem,
                           "after_wall": cur.last_wall if cur else None, "file": row.path})
            cur, lost_upto = None, last_ts(row)
            continue
        if cur is not None and prev_ts(row) == cur.last:
            cur.last, cur.last_wall = last_ts(row), aware(row.last_wall)
        else:
            if (cur is not None or prev_ts(row) is not None) and not (lost_upto and prev_ts(row) == lost_upto):
                gap = recorded.get((after.time, after.inc)) if after else None
                breaks.append({"after": ts_text(after), "before": ts_text(first_ts(row)),
                               "reason": gap.reason if gap else "slices between them are missing from the catalog",
                               "after_wall": cur.last_wall if cur else None, "file": None})
            cur = Window(first_ts(row), last_ts(row), aware(row.first_wall), aware(row.last_wall),
                         lo=prev_ts(row) or just_before(first_ts(row)))
            windows.append(cur)
        lost_upto = None
        cur.slices.append(row)
        cur.entries += row.count
    tail = windows[-1].last if windows else None
    for g in recorded.values():  # detected, but no slice after it closed yet
        after = ts_of(g.after_t, g.after_i)
        if after is not None and (tail is None or after >= tail) and not any(b["after"] == ts_text(after) for b in breaks):
            breaks.append({"after": ts_text(after), "before": ts_text(ts_of(g.before_t, g.before_i)), "reason": g.reason,
                           "after_wall": windows[-1].last_wall if windows else None, "file": None})
    return windows, breaks
