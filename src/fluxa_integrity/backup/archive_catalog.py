"""Catalog rows of the oplog archive (slices, gaps) and the windows of continuous coverage.

A slice holds every entry with ``lo < ts <= last``, ``lo`` being its ``prev`` link (the last ts
of the slice it continues) or just before its first entry. A window is the union of such ranges
of intact slices (file present, cataloged size; with ``deep`` also the sha256) that touch or
overlap: every oplog entry from the window's first to its last ts is archived. Overlaps are
tolerated, never reported as gaps: duplicate rows written by two archivers at once (before
archive_lock.py existed) and an archive moved to a new repository both produce them. A break
between windows is a gap: recorded by the archiver (the oplog rolled past it, or the archive
moved and the oplog no longer reached back), or found here (a slice file missing, the wrong size
or checksum, a slice row gone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bson.timestamp import Timestamp
from sqlalchemy import select

from ..store import Store
from ..store.backup_models import OplogArchiveState, OplogGap, OplogSlice
from .files import file_sha256
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


def previous_archive(store: Store, repo: Path) -> OplogSlice | None:
    """The newest slice of any other repository: the archive before ``backup_repo`` changed."""
    with store.session() as s:
        return s.scalars(select(OplogSlice).where(OplogSlice.repo != str(repo))
                         .order_by(OplogSlice.last_t.desc(), OplogSlice.last_i.desc()).limit(1)).first()


def slice_path(row: OplogSlice) -> Path:
    return Path(row.repo) / row.path


def first_ts(row) -> Timestamp:
    return Timestamp(row.first_t, row.first_i)


def last_ts(row) -> Timestamp:
    return Timestamp(row.last_t, row.last_i)


def prev_ts(row) -> Timestamp | None:
    return ts_of(row.prev_t, row.prev_i)


def file_problem(row: OplogSlice, deep: bool = False) -> str | None:
    """Presence and size; with ``deep`` also the sha256 of the bytes (restores always check it)."""
    p = slice_path(row)
    if not p.is_file():
        return f"slice file {p} is missing"
    if p.stat().st_size != row.size:
        return f"slice file {p} is {p.stat().st_size} bytes, the catalog says {row.size}"
    if deep and file_sha256(p) != row.sha256:
        return f"slice file {p} failed its checksum (its sha256 is not the one cataloged when it was archived)"
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
    duplicates: list = field(default_factory=list)  # slices wholly inside the window (two archivers at once)
    problems: list = field(default_factory=list)  # damaged slices whose entries other slices also hold

    def covers_from(self, ts: Timestamp) -> bool:
        return self.lo is not None and self.lo <= ts <= self.last

    def as_dict(self) -> dict:
        return {"from": ts_text(self.first), "to": ts_text(self.last), "from_wall": self.first_wall,
                "to_wall": self.last_wall, "slices": len(self.slices), "entries": self.entries,
                "duplicate_slices": [r.path for r in self.duplicates], "problems": self.problems}


def _lo(row) -> Timestamp:
    """Every entry with lo < ts <= last is in the slice: its prev link, or just before its first."""
    return prev_ts(row) or just_before(first_ts(row))


def coverage(store: Store, repo: Path | None = None, deep: bool = False) -> tuple[list[Window], list[dict]]:
    """(windows of continuous coverage, gaps), oldest first. A gap says: oplog entries after
    ``after`` and up to ``before`` are not in the archive.

    The windows are the union of the intact slices' ranges ``(lo, last]``, so duplicate or
    overlapping rows (two archivers that ran at once before the lock existed; an archive moved
    to a new repository that re-archived the live oplog) join the window instead of breaking it;
    a gap's ``after`` is always before its ``before``. ``deep`` checks every slice's sha256."""
    recorded = gaps(store, repo)
    healthy, damaged = [], []
    for row in slices(store, repo):
        problem = file_problem(row, deep)
        (damaged if problem else healthy).append((_lo(row), row, problem))
    # widest first among equal starts: a duplicate then falls wholly inside and is not counted twice
    # (a slice that only partly overlaps the window adds its whole count: an upper bound)
    healthy.sort(key=lambda x: (x[0], -x[1].last_t, -x[1].last_i, x[1].id))
    windows: list[Window] = []
    for lo, row, _ in healthy:
        cur = windows[-1] if windows else None
        if cur is not None and lo <= cur.last:  # continues (or overlaps) the window
            if last_ts(row) <= cur.last:
                cur.duplicates.append(row)
                continue
            cur.last, cur.last_wall = last_ts(row), aware(row.last_wall)
        else:
            cur = Window(first_ts(row), last_ts(row), aware(row.first_wall), aware(row.last_wall), lo=lo)
            windows.append(cur)
        cur.slices.append(row)
        cur.entries += row.count
    breaks: list[dict] = []
    left = []  # damaged slices no window makes up for
    for lo, row, problem in damaged:
        w = next((w for w in windows if w.lo <= lo and last_ts(row) <= w.last), None)
        if w is not None:
            w.problems.append(problem)
        else:
            left.append((lo, row, problem))
    for k, w in enumerate(windows):
        before_w = windows[k - 1] if k else None
        if before_w is None and prev_ts(w.slices[0]) is None:
            continue  # the archive starts here
        after = before_w.last if before_w else w.lo
        inside = [(lo, r, p) for lo, r, p in left if last_ts(r) > after and lo < w.first]
        for item in inside:
            left.remove(item)
        gap = next((g for g in recorded if ts_of(g.after_t, g.after_i) == after), None)
        reason = ("; ".join(p for _, _, p in inside) if inside else
                  gap.reason if gap else "slices between them are missing from the catalog")
        breaks.append({"after": ts_text(after), "before": ts_text(w.first), "reason": reason,
                       "after_wall": before_w.last_wall if before_w else None,
                       "file": inside[0][1].path if inside else None})
    for lo, row, problem in left:  # damaged slices past the last window (or with no window at all)
        breaks.append({"after": ts_text(prev_ts(row)), "before": ts_text(last_ts(row)), "reason": problem,
                       "after_wall": None, "file": row.path})
    # detected, but not between two windows: no slice after it closed yet, or the previous archive
    # is in another repository (slice pruning deletes gaps with nothing archived before them)
    for g in recorded:
        after, before = ts_of(g.after_t, g.after_i), ts_of(g.before_t, g.before_i)
        if after is None or any(b["after"] == ts_text(after) for b in breaks):
            continue
        if any(w.lo <= after and before is not None and just_before(before) <= w.last for w in windows):
            continue  # another slice holds those entries after all (the archive moved, the oplog reached back)
        breaks.append({"after": ts_text(after), "before": ts_text(before), "reason": g.reason,
                       "after_wall": None, "file": None})
    breaks.sort(key=lambda b: (b["after"] is not None, _key(b["after"])))
    return windows, breaks


def _key(text: str | None) -> tuple[int, int]:
    if text is None:
        return (0, 0)
    t, i = text.split(":")
    return (int(t), int(i))


def slice_lags(store: Store, since: datetime, until: datetime) -> list[dict]:
    """The archiver's lag as each slice closed, oldest first: ``{at: the slice's catalog time,
    lag_seconds: that time minus the wall time of its newest entry, entries, repo, path}`` for the
    slices cataloged from ``since`` to ``until`` (of every repository). A slice closes when it is
    full or the archiver's flush interval has passed, so the lag is how far behind the live oplog
    the archive was at that moment; between slices it only grows (`backup oplog-status` and the
    service's ``fluxa_archiver_lag_seconds`` gauge say the present value)."""
    cols = (OplogSlice.created_at, OplogSlice.last_wall, OplogSlice.count, OplogSlice.repo, OplogSlice.path)
    with store.session() as s:
        rows = s.execute(select(*cols).where(OplogSlice.created_at >= since, OplogSlice.created_at <= until)
                         .order_by(OplogSlice.created_at, OplogSlice.id)).all()
    return [{"at": aware(at), "lag_seconds": round((aware(at) - aware(wall)).total_seconds(), 3), "entries": n,
             "repo": repo, "path": path} for at, wall, n, repo, path in rows if wall is not None]
