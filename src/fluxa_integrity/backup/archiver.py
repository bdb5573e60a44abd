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
  has caught up, and on stop (SIGTERM/SIGINT in the CLI): a stop first archives what the oplog
  already holds (until a poll comes back empty, at most STOP_DRAIN_S), so every write made before
  the signal is in a closed slice. A slice that was being written when the process died is never
  cataloged; the next run re-archives its entries (no duplicates: everything at or before the
  last cataloged ts is skipped).
- One archiver per repository (archive_lock.py): a second one is refused naming the first.
- On the dev server it keeps an oplog guard (mongo/oplog_guard.py) at the last *cataloged* entry:
  the server trims nothing the archive does not hold, and what it holds at once (a short live
  oplog: cheap tails). Guard writes are oplog entries of the tool's own; they are not archived.
- A write that fails (full disk) discards the open slice's temporary file and raises FluxaError:
  nothing half-written, nothing of it cataloged; slices closed before stay. A slice the state
  store refuses to catalog is removed and the error names the store's failure.
- A repository with no slices while another repository holds the previous archive
  (``backup_repo`` changed) starts at the oldest entry of the live oplog and says at once
  whether that reaches back to the previous archive's last entry; if not, a gap is recorded.
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
from ..mongo.oplog_guard import OplogGuard, is_guard_entry
from ..store import Store
from . import archive_catalog as ac
from .archive_lock import ArchiveLock
from .repository import resolve_repo
from .slices import SliceWriter, remove_stale_temp

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
UTC = timezone.utc
CAUGHT_UP_EVERY_S = 5.0  # how often an idle archiver records that it is caught up
STOP_DRAIN_S = 10.0  # on stop, keep archiving what is already written for at most this long


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


def _disk_error(exc: OSError, repo: Path) -> FluxaError:
    return FluxaError(f"oplog archiver stopped: cannot write to {repo / 'oplog'}: "
                      f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""),
                      "free space on that file system (or point backup_repo elsewhere); the slice being written was "
                      "discarded and nothing of it is cataloged; rerun: it resumes after the last archived entry")


def _predecessor_check(store: Store, repo: Path, pred, oldest: Timestamp, report: ArchiveReport,
                       log: Callable[[str], None]) -> None:
    """A new repository while another one holds the previous archive (``backup_repo`` changed):
    the new archive starts at the oldest entry of the live oplog, so it continues the previous one
    only if the oplog still reaches back to the previous archive's last entry. Said at once."""
    p_last = ac.last_ts(pred)
    if oldest <= p_last:
        log(f"new archive repository {repo}: the previous archive ({pred.repo}) ends at {ac.ts_text(p_last)} and the "
            f"live oplog still reaches back to it (oldest entry {ac.ts_text(oldest)}): the archive continues without a gap")
        return
    reason = (f"the archive moved from {pred.repo} to {repo} (backup_repo changed): the previous archive ends at "
              f"{ac.ts_text(p_last)}, the oldest entry the live oplog still has is {ac.ts_text(oldest)}; "
              "entries in between are in neither")
    ac.add_gap(store, repo, p_last, oldest, reason)
    report.gaps.append({"after": ac.ts_text(p_last), "before": ac.ts_text(oldest), "reason": reason})
    log(f"GAP: {reason}; the point-in-time window is broken from {ac.ts_text(p_last)}")


def archive_oplog(uri: str, store: Store, repo: str | Path | None = None, opts: ArchiveOptions | None = None,
                  stop: threading.Event | None = None, log: Callable[[str], None] = lambda msg: None,
                  ready: Callable[[], None] = lambda: None) -> ArchiveReport:
    """Archive the oplog into ``repo``. Holds the repository's archiver lock throughout (a second
    archiver gets ArchiverBusy). ``ready`` is called once the lock is held and the cursor is open.
    On ``stop`` it archives what the oplog holds (until a poll comes back empty, at most
    STOP_DRAIN_S), closes the open slice and returns."""
    opts = opts or ArchiveOptions()
    stop = stop or threading.Event()
    repo = resolve_repo(repo)
    with ArchiveLock(repo, log):
        return _archive(uri, store, repo, opts, stop, log, ready)


def _archive(uri: str, store: Store, repo: Path, opts: ArchiveOptions, stop: threading.Event,
             log: Callable[[str], None], ready: Callable[[], None]) -> ArchiveReport:
    try:
        remove_stale_temp(repo)
    except OSError as exc:
        raise _disk_error(exc, repo) from exc
    report = ArchiveReport(repo)
    t0 = time.perf_counter()
    row = ac.last_archived(store, repo)
    last = ac.last_ts(row) if row else None
    pred = ac.previous_archive(store, repo) if row is None else None
    prev = last  # the link the next slice records
    writer: SliceWriter | None = None
    opened = 0.0
    proved = float("-inf")  # monotonic time of the last caught-up mark
    stop_seen: float | None = None  # monotonic time the stop was first seen
    poll_at = float("-inf")  # when the poll that gave `batch` started, if it was a complete answer

    def close_slice() -> None:
        nonlocal writer, prev
        if writer is None or writer.count == 0:
            if writer is not None:
                writer.discard()
            writer = None
            return
        w, writer = writer, None  # closed from here on: never closed twice, whatever fails next
        try:
            path, sha, size = w.close()
        except OSError:
            w.discard()
            raise
        try:
            sid = ac.add_slice(store, repo, path, first=w.first, last=w.last, prev=prev,
                               first_wall=w.first_wall, last_wall=w.last_wall, count=w.count,
                               size=size, raw_bytes=w.raw_bytes, sha256=sha)
        except Exception as exc:  # noqa: BLE001 - any store failure: no slice file without its row
            path.unlink(missing_ok=True)  # the rerun archives these entries again (they are still in the oplog)
            raise FluxaError(f"oplog slice {path.name} could not be recorded in the catalog: "
                             f"{(str(exc).splitlines() or [type(exc).__name__])[0]}; its file was removed",
                             "fix the state store, then rerun the archiver: it resumes after the last "
                             "cataloged entry") from exc
        report.slices.append({"id": sid, "path": str(path), "first": ac.ts_text(w.first),
                              "last": ac.ts_text(w.last), "count": w.count, "size": size, "sha256": sha})
        log(f"slice {path.name}: {w.count} entries, {size} bytes")
        prev = w.last
        hold()

    def keep_what_was_read() -> None:
        """On a server error or a stop by exception: the open slice is whole up to ``last``."""
        try:
            close_slice()
        except OSError as exc:
            raise _disk_error(exc, repo) from exc

    def stopping() -> bool:
        nonlocal stop_seen
        if stop.is_set() and stop_seen is None:
            stop_seen = time.monotonic()
        return stop_seen is not None

    client = connect(uri)
    cursor = _Cursor(client, opts)
    guard: OplogGuard | None = None

    start: Timestamp | None = None  # a new archive (or one after a gap): where it began reading

    def hold(force: bool = False) -> None:
        """The dev server keeps every entry from the last cataloged one on (throttled writes); an
        archive with none cataloged yet holds from where it began reading."""
        if guard is not None:
            try:
                guard.hold(prev if prev is not None else (writer.first if writer is not None else start), force=force)
            except PyMongoError as exc:  # the cap applies meanwhile; retried at the next poll
                log(f"oplog guard not written: {first_line(exc)}")

    try:
        if "oplog.rs" not in client.local.list_collection_names(filter={"name": "oplog.rs"}):
            raise FluxaError("the server has no local.oplog.rs to archive",
                             "run a replica set (MongoDB) or the dev server (it creates a capped oplog)")
        guard = OplogGuard(client, f"archiver:{repo}")
        if prev is None and guard.enabled:  # nothing cataloged to hold from: the oldest entry, before reading
            oldest = next(iter(client.local["oplog.rs"].find({}, {"ts": 1}).limit(1)), None)
            start = oldest["ts"] if oldest is not None else None
        hold(force=True)
        t = time.monotonic()
        batch, check_first = cursor.open(last), last is not None
        poll_at = t if cursor.id == 0 else float("-inf")
        ready()
        while True:
            added = 0
            for entry in batch:
                ts = entry["ts"]
                if pred is not None:
                    _predecessor_check(store, repo, pred, ts, report, log)
                    pred = None
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
                if is_guard_entry(entry):
                    continue  # the readers' own bookkeeping, not the application's data
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
            # stop once a poll that began after the stop reached the oplog's end (poll_at is set
            # only for such complete answers): every write made before the signal is archived
            # (bounded by STOP_DRAIN_S under a write storm)
            if stopping() and ((not added and poll_at >= stop_seen) or time.monotonic() - stop_seen >= STOP_DRAIN_S):
                break
            if cursor.id == 0:  # the server ended the cursor (or it never stayed open): reopen
                if not added and not stopping():  # caught up
                    if opts.once:
                        break
                    stop.wait(opts.poll_ms / 1000)
                t = time.monotonic()
                batch, check_first = cursor.open(last), last is not None
                poll_at = t if cursor.id == 0 else float("-inf")  # a first batch of 1 proves nothing
                continue
            hold()  # a refresh when due (an idle archiver's guard must not lapse)
            polled, started = datetime.now(UTC), time.monotonic()
            batch = cursor.more()
            # only an empty getMore proves the end: a non-empty one may be the rest of an older
            # read (FerretDB returns what its iterator still holds before it re-reads), and a
            # batch of guard notes or already-archived entries adds nothing yet proves nothing
            poll_at = started if not batch else float("-inf")
            if not batch:
                if writer is None and time.monotonic() - proved >= CAUGHT_UP_EVERY_S:
                    # nothing newer than `last`, and it is in a closed slice: all writes made
                    # before this poll are archived (the RPO of an idle database stays fresh)
                    ac.mark_caught_up(store, repo, polled, last)
                    proved = time.monotonic()
                if opts.once:
                    break
                if not stopping():
                    stop.wait(opts.poll_ms / 1000)
        close_slice()
        hold(force=True)  # the last slice's end, whatever the throttle held back
    except PyMongoError as exc:
        keep_what_was_read()
        raise FluxaError(f"oplog archiver stopped: {first_line(exc)}",
                         "rerun it: it resumes after the last archived entry") from exc
    except OSError as exc:  # a full disk, a read-only or vanished repository: nothing half-written
        if writer is not None:
            writer.discard()
        raise _disk_error(exc, repo) from exc
    except BaseException:
        keep_what_was_read()
        raise
    finally:
        cursor.close()
        client.close()
    report.last = last
    report.seconds = time.perf_counter() - t0
    return report
