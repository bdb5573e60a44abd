"""Point-in-time restore: the newest usable snapshot, then the oplog replayed up to the point.

1. The snapshot: the newest complete/verified full backup of the database that holds the chosen
   collections and ended at or before the point (``finished_at`` for a time, the oplog end for a
   ``t:i`` timestamp). It is restored with restore/executor.py.
2. Replay: every entry after the snapshot's oplog **start** up to the point. The snapshot is
   not a point-in-time copy - a write made while it ran may or may not be in it - so the entries
   between its start and end are replayed too; replay is idempotent (oplog_apply.py), so an entry
   whose effect the snapshot already holds changes nothing.
3. The point: an ISO datetime (UTC; compared with each entry's ``wall``) or a BSON timestamp
   ``t:i`` (compared with ``ts``). **Inclusive by default**: an entry stamped exactly at the point
   is applied (``--exclusive``: it is not). Replay is a prefix of the oplog: it stops at the first
   entry past the point.
Entries come from archived slices first, then the live oplog (oplog_sources.py).
A server that goes away (while planning the chain or replaying) is a FluxaError saying to rerun
the same command: the rerun resumes the snapshot restore and replays again (replay is idempotent).
A restore authorised by an incident (``authority``) is recorded on its timeline once, when the
replay has ended (or when the snapshot or the replay failed).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import bson
from bson.codec_options import CodecOptions
from bson.timestamp import Timestamp
from pymongo.errors import PyMongoError
from sqlalchemy import select

from ..backup import archive_catalog as ac
from ..backup.oplog_apply import entry_touches
from ..backup.oplog_sources import plan_chain, read_chain
from ..backup.retention import aware
from ..errors import FluxaError
from ..mongo.connection import connect, first_line
from ..store import Store
from ..store.backup_models import RESTORABLE, Backup
from .authority import Authority
from .executor import _any, _set_run, _written, restore_snapshot
from .replay import Replayer, is_txn_entry
from .server_errors import server_errors

RERUN = "rerun the same command once the server is reachable: it resumes the restore and replays again (idempotent)"

UTC = timezone.utc
DECODE = CodecOptions(tz_aware=True)


@dataclass(frozen=True)
class Point:
    text: str
    wall: datetime | None = None
    ts: Timestamp | None = None

    def bound(self, inclusive: bool) -> Timestamp:
        """Every entry that may be applied has ts < bound."""
        if self.ts is not None:
            return Timestamp(self.ts.time, self.ts.inc + 1) if inclusive else self.ts
        return Timestamp(math.floor(self.wall.timestamp()) + 1, 0)

    def past(self, entry, inclusive: bool) -> bool:
        if self.ts is not None:
            return entry["ts"] > self.ts if inclusive else entry["ts"] >= self.ts
        wall = entry.get("wall")
        wall = aware(wall) if isinstance(wall, datetime) else datetime.fromtimestamp(entry["ts"].time, UTC)
        return wall > self.wall if inclusive else wall >= self.wall


def parse_point(text: str) -> Point:
    t = text.strip()
    if ":" in t and t.replace(":", "").isdigit() and t.count(":") == 1:
        secs, inc = t.split(":")
        return Point(t, ts=Timestamp(int(secs), int(inc)))
    try:
        wall = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise FluxaError(f"--at {text!r} is neither an ISO datetime nor a BSON timestamp t:i",
                         "e.g. --at 2026-11-25T21:40:00Z, or --at 1795643032:7") from None
    return Point(t, wall=wall.replace(tzinfo=UTC) if wall.tzinfo is None else wall.astimezone(UTC))


def choose_snapshot(store: Store, db: str, point: Point, collections: list[str] | None) -> Backup:
    with store.session() as s:
        rows = list(s.scalars(select(Backup).where(Backup.db == db, Backup.kind == "full",
                                                   Backup.status.in_(RESTORABLE)).order_by(Backup.started_at.desc())))
    for b in rows:
        if b.oplog_start_t is None or b.oplog_end_t is None:
            continue
        if collections and not set(collections) <= set(b.collections or []):
            continue
        ended = (Timestamp(b.oplog_end_t, b.oplog_end_i) <= point.ts) if point.ts else (aware(b.finished_at) <= point.wall)
        if ended:
            return b
    raise FluxaError(f"no complete full backup of {db!r} ended at or before {point.text}"
                     + (f" holding {', '.join(collections)}" if collections else ""),
                     "a point in time needs a snapshot before it (`backup list --kind full`)")


def restore_to_point(uri: str, store: Store, db: str, target_db: str, at: str, *, collections: list[str] | None = None,
                     inclusive: bool = True, drop_target: bool = False, progress=None,
                     authority: Authority | None = None) -> dict:
    authority = authority or Authority.none()
    point = parse_point(at)
    if point.wall is not None and point.wall > datetime.now(UTC):
        raise FluxaError(f"--at {at} is in the future", "choose a time in the past")
    snap = choose_snapshot(store, db, point, collections)
    start = Timestamp(snap.oplog_start_t, snap.oplog_start_i)
    client = connect(uri)
    try:  # refuse a gap or a damaged slice before anything is written
        with server_errors(f"planning the point-in-time restore of {db!r} as of {at} failed; nothing was written",
                           RERUN):
            chain = plan_chain(store, client, db, start, point.bound(inclusive))
    except BaseException:
        client.close()
        raise
    t0 = time.perf_counter()
    res = restore_snapshot(uri, store, snap.id, target_db, collections=collections, drop_target=drop_target,
                           progress=progress, authority=authority, record_on_success=False)
    replayer = Replayer(client[target_db], db, set(collections) if collections else None)
    used: list[dict] = []
    pitr = {"at": at, "inclusive": inclusive, "snapshot": snap.id, "replay_from": ac.ts_text(start), "sources": used}
    try:
        last = None
        for raw in read_chain(chain, start, point.bound(inclusive), used):
            if point.past(raw, inclusive):
                break
            if entry_touches(raw, db) or is_txn_entry(raw):
                replayer.apply(bson.decode(raw.raw, DECODE))
            last = raw["ts"]
        replayer.flush()
    except BaseException as exc:
        pitr["error"] = first_line(exc) if isinstance(exc, PyMongoError) else str(getattr(exc, "message", exc))
        _set_run(store, res.run_id, status="failed", error=f"point-in-time replay: {pitr['error']}", pitr=pitr)
        client.close()
        written = _written(res.collections)
        authority.record("restore", res.run_id, f"point-in-time restore {res.run_id} of {db} as of {at} into {target_db} "
                         f"failed during the replay: {pitr['error']}", written, status="partial" if _any(written) else "failed")
        if isinstance(exc, PyMongoError):
            raise FluxaError(f"point-in-time restore {res.run_id} of {db} into {target_db!r} failed during the replay: "
                             f"{pitr['error']}", RERUN) from exc
        raise
    client.close()
    pitr.update(last_applied=ac.ts_text(last), replay=replayer.stats.as_dict())
    seconds = time.perf_counter() - t0
    _set_run(store, res.run_id, pitr=pitr, seconds=round(seconds, 3))
    stats = replayer.stats.as_dict()
    timeline = authority.record("restore", res.run_id, f"point-in-time restore {res.run_id} of {db} as of {at} into "
                                f"{target_db}: snapshot {snap.id} + {stats.get('entries', 0)} oplog entries replayed "
                                f"({stats.get('upserts', 0)} upserts, {stats.get('deletes', 0)} deletes)",
                                _written(res.collections))
    return {"timeline": timeline, "restore_id": res.run_id, "backup_id": snap.id, "source_db": db, "target_db": target_db,
            "at": at, "inclusive": inclusive, "seconds": round(seconds, 3), "snapshot_seconds": round(res.seconds, 3),
            "collections": res.collections, "replay": replayer.stats.as_dict(), "sources": used,
            "last_applied": ac.ts_text(last)}
