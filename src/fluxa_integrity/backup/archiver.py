"""The oplog archiver: follows ``local.oplog.rs`` with a tailable await cursor from the last
archived ``ts`` and writes compressed, checksummed slices (slices.py) with a catalog row each.

- The cursor is (re)opened with ``ts >= last archived``: the first entry must be that very entry,
  which proves the oplog still reaches back to the archive. If the first entry is newer, the
  oplog rolled past us: a gap is recorded (catalog row + loud message) and the next slice starts
  a new window (its ``prev`` link is empty).
- The first batch asks for one entry: FerretDB 1.24 closes a tailable cursor whose first batch
  drains the result, and only a full first batch keeps it open; getMores then take ``batch``.
  Each (re)open is a full oplog scan on FerretDB, so the cursor is kept, not re-queried.
- A slice closes every ``slice_seconds`` or at ``max_slice_bytes`` of raw BSON, when ``once``
  has caught up, and on stop (SIGTERM/SIGINT in the CLI). A slice that was being written when
  the process died is never cataloged; the next run re-archives its entries (no duplicates:
  everything at or before the last cataloged ts is skipped).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import connect, first_line
from ..store import Store
from . import archive_catalog as ac
from .repository import resolve_repo
from .slices import SliceWriter, remove_stale_temp

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
UTC = timezone.utc
CAUGHT_UP_EVERY_S = 5.0  # how often an idle archiver records that it is caught up


@dataclass
class ArchiveOptions:
    once: bool = False
    slice_seconds: float = 60.0
    max_slice_bytes: int = 64 << 20
    batch: int = 1000
    poll_ms: int = 1000  # pause between polls once caught up; with one poll's cost, the stop latency


@dataclass
class ArchiveReport:
    repo: Path
    slices: list[dict] = field(default_factory=list)
    gaps: list[dict] = field(default_factory=list)
    entries: int = 0
    last: Timestamp | None = None
    seconds: float = 0.0


class _Cursor:
    """A tailable cursor on local.oplog.rs driven with raw find/getMore commands.

    Not awaitData: FerretDB answers an await getMore by re-reading the whole oplog every 10 ms
    and returns nothing when one read takes longer than maxTimeMS, so past ~30k entries an
    await cursor never sees new entries. A plain tailable getMore does one read and returns;
    the archiver sleeps ``poll_ms`` between empty polls (MongoDB answers those at once)."""

    def __init__(self, client, opts: ArchiveOptions):
        self.local = client.get_database("local", codec_options=RAW)
        self.opts = opts
        self.id = 0

    def open(self, after: Timestamp | None) -> list:
        self.close()
        r = self.local.command({"find": "oplog.rs", "filter": {"ts": {"$gte": after}} if after else {},
                                "tailable": True, "batchSize": 1}, codec_options=RAW)
        self.id = r["cursor"]["id"]
        return list(r["cursor"]["firstBatch"])

    def more(self) -> list:
        r = self.local.command({"getMore": self.id, "collection": "oplog.rs", "batchSize": self.opts.batch},
                               codec_options=RAW)
        self.id = r["cursor"]["id"]
        return list(r["cursor"]["nextBatch"])

    def close(self) -> None:
        if self.id:
            try:
                self.local.command({"killCursors": "oplog.rs", "cursors": [self.id]})
            except PyMongoError:
                pass
            self.id = 0


def archive_oplog(uri: str, store: Store, repo: str | Path | None = None, opts: ArchiveOptions | None = None,
                  stop: threading.Event | None = None, log: Callable[[str], None] = lambda msg: None) -> ArchiveReport:
    opts = opts or ArchiveOptions()
    stop = stop or threading.Event()
    repo = resolve_repo(repo)
    remove_stale_temp(repo)
    report = ArchiveReport(repo)
    t0 = time.perf_counter()
    row = ac.last_archived(store, repo)
    last = ac.last_ts(row) if row else None
    prev = last  # the link the next slice records
    writer: SliceWriter | None = None
    opened = 0.0
    proved = float("-inf")  # monotonic time of the last caught-up mark

    def close_slice() -> None:
        nonlocal writer, prev
        if writer is None or writer.count == 0:
            if writer is not None:
                writer.discard()
            writer = None
            return
        path, sha, size = writer.close()
        sid = ac.add_slice(store, repo, path, first=writer.first, last=writer.last, prev=prev,
                           first_wall=writer.first_wall, last_wall=writer.last_wall, count=writer.count,
                           size=size, raw_bytes=writer.raw_bytes, sha256=sha)
        report.slices.append({"id": sid, "path": str(path), "first": ac.ts_text(writer.first),
                              "last": ac.ts_text(writer.last), "count": writer.count, "size": size, "sha256": sha})
        log(f"slice {path.name}: {writer.count} entries, {size} bytes")
        prev, writer = writer.last, None

    client = connect(uri)
    cursor = _Cursor(client, opts)
    try:
        if "oplog.rs" not in client.local.list_collection_names(filter={"name": "oplog.rs"}):
            raise FluxaError("the server has no local.oplog.rs to archive",
                             "run a replica set (MongoDB) or the dev server (it creates a capped oplog)")
        batch, check_first = cursor.open(last), last is not None
        while True:
            added = 0
            for entry in batch:
                ts = entry["ts"]
                if check_first:
                    check_first = False
                    if ts != last and ts > last:  # the last archived entry is no longer in the oplog
                        close_slice()
                        reason = (f"the oplog rolled past the archive: the last archived entry is {ac.ts_text(last)}, "
                                  f"the oldest the oplog still has is {ac.ts_text(ts)}; entries in between are lost")
                        ac.add_gap(store, repo, last, ts, reason)
                        report.gaps.append({"after": ac.ts_text(last), "before": ac.ts_text(ts), "reason": reason})
                        log(f"GAP: {reason}; the point-in-time window is broken from {ac.ts_text(last)}")
                        prev = None
                if last is not None and ts <= last:
                    continue
                if writer is None:
                    writer, opened = SliceWriter(repo), time.monotonic()
                writer.add(entry.raw, ts, entry.get("wall"))
                last = ts
                added += 1
                report.entries += 1
                if writer.raw_bytes >= opts.max_slice_bytes:
                    close_slice()
            if writer is not None and time.monotonic() - opened >= opts.slice_seconds:
                close_slice()
            if stop.is_set():
                break
            if cursor.id == 0:  # the server ended the cursor (or it never stayed open): reopen
                if not added:  # caught up
                    if opts.once:
                        break
                    stop.wait(opts.poll_ms / 1000)
                batch, check_first = cursor.open(last), last is not None
                continue
            polled = datetime.now(UTC)
            batch = cursor.more()
            if not batch:
                if writer is None and time.monotonic() - proved >= CAUGHT_UP_EVERY_S:
                    # nothing newer than `last`, and it is in a closed slice: all writes made
                    # before this poll are archived (the RPO of an idle database stays fresh)
                    ac.mark_caught_up(store, repo, polled, last)
                    proved = time.monotonic()
                if opts.once:
                    break
                stop.wait(opts.poll_ms / 1000)
        close_slice()
    except PyMongoError as exc:
        if writer is not None:  # keep what was read: it is whole up to `last`
            close_slice()
        raise FluxaError(f"oplog archiver stopped: {first_line(exc)}",
                         "rerun it: it resumes after the last archived entry") from exc
    except BaseException:
        if writer is not None:
            close_slice()
        raise
    finally:
        cursor.close()
        client.close()
    report.last = last
    report.seconds = time.perf_counter() - t0
    return report
