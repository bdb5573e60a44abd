"""Where the oplog entries after a point come from, in order: archived slices, then incremental
backups, then the live ``local.oplog.rs`` - whichever continuously covers the next stretch.

Each source covers every entry with ``lo < ts <= hi`` (``hi`` None: up to now). A slice's ``lo``
is its ``prev`` link (the last ts of the slice it continues) or just before its first entry; the
live oplog's ``lo`` is just before its oldest entry (it holds everything after that). The walk
starts at ``after`` and moves the cursor to the end of each source it uses; when no source
covers the cursor, the window is broken there and the walk refuses, naming the gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from ..errors import FluxaError
from ..store import Store
from . import archive_catalog as ac
from .files import iter_raw_documents
from .manifest import read_manifest
from .oplog import oldest_oplog_entry
from .repository import backup_dir
from .archive_catalog import just_before
from .slices import read_slice

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
LIVE_CHUNK = 20000
#: A caught-up record (the archiver's clock) proves the archive complete up to a bound (the
#: server's clock) only this far past it: the two clocks may differ by up to this much.
CLOCK_MARGIN_S = 1


@dataclass
class Source:
    kind: str  # slice | incremental | live
    label: str
    lo: Timestamp
    hi: Timestamp | None
    read: Callable[[], Iterator[bytes]]

    def covers(self, c: Timestamp) -> bool:
        return self.lo <= c and (self.hi is None or c < self.hi)


def archive_sources(store: Store, db: str | None) -> list[Source]:
    from .catalog import list_backups

    out = []
    for row in ac.slices(store):
        if ac.file_problem(row) is None:
            lo = ac.prev_ts(row) or just_before(ac.first_ts(row))
            out.append(Source("slice", str(ac.slice_path(row)), lo, ac.last_ts(row),
                              lambda row=row: read_slice(ac.slice_path(row), row.sha256, row.size)))
    if db is not None:
        for b in list_backups(store, db, "incremental"):
            if b.status in ("complete", "verified") and b.oplog_start_t is not None and b.oplog_end_t is not None:
                out.append(Source("incremental", b.id, Timestamp(b.oplog_start_t, b.oplog_start_i),
                                  Timestamp(b.oplog_end_t, b.oplog_end_i), lambda b=b: _read_incremental(b)))
    return out


def _read_incremental(b) -> Iterator[bytes]:
    from .manifest import require_intact

    directory = backup_dir(Path(b.repo), b.id)
    manifest = read_manifest(directory, b.manifest_sha256)
    require_intact(directory, [manifest["oplog_file"]])
    return iter_raw_documents(directory / manifest["oplog_file"]["path"], "zstd")


def live_source(client, after: Timestamp, bound: Timestamp | None) -> tuple[Source | None, Timestamp | None]:
    """(the live oplog as a source, its oldest entry's ts). The oldest entry is one read (also on
    FerretDB: backup/oplog.py); the entries after ``after`` are read in chunks, each a full scan there."""
    oplog = client.local.get_collection("oplog.rs", codec_options=RAW)
    oldest = oldest_oplog_entry(client)
    if oldest is None:
        return None, None

    def read() -> Iterator[bytes]:
        # Chunks, each drained before it is replayed, bound the memory and never hold a cursor on
        # local.oplog.rs open while the replay writes (which append to it). Each chunk is a full
        # scan on FerretDB. (A hang once blamed on the open cursor was FerretDB's update
        # statements holding connections: see restore/replay.py.)
        c = after
        while True:
            query = {"ts": {"$gt": c, **({"$lt": bound} if bound else {})}}
            chunk = [e.raw for e in oplog.find(query, batch_size=LIVE_CHUNK).limit(LIVE_CHUNK)]
            yield from chunk
            if len(chunk) < LIVE_CHUNK:
                return
            c = RawBSONDocument(chunk[-1], RAW)["ts"]

    return Source("live", "local.oplog.rs", just_before(oldest["ts"]), None, read), oldest["ts"]


def _gap_error(store: Store, c: Timestamp, oldest_live: Timestamp | None, live_checked: bool) -> FluxaError:
    _, breaks = ac.coverage(store)
    near = [b for b in breaks if b["after"] is None or _parse(b["after"]) <= c]
    where = f"after {ac.ts_text(c)}"
    if near:
        b = near[-1]
        where += f" (gap after {b['after']} up to {b['before']}: {b['reason']})"
    live = (f"the live oplog's oldest entry is {ac.ts_text(oldest_live)}" if oldest_live else
            "the live oplog is empty") if live_checked else "the live oplog was not consulted"
    return FluxaError(f"the point-in-time window is broken: no archived slice, incremental backup or live oplog "
                      f"holds the oplog entries {where}; {live}",
                      "restore to a point before the gap (see `backup oplog-status`), or from a snapshot taken after it")


def _parse(text: str) -> Timestamp:
    t, i = text.split(":")
    return Timestamp(int(t), int(i))


def plan_chain(store: Store, client, db: str | None, after: Timestamp, bound: Timestamp | None) -> list[Source]:
    """The sources that together hold every entry with ``after < ts < bound`` (``bound`` None: to
    the end of the archive, archive only). Past the archive's last entry, the archiver's record of
    being caught up (with nothing newer) after the bound ends the chain; otherwise the live oplog
    must reach back. Slices' checksums are verified here, so a damaged or
    missing file is refused before anything is written. Raises naming the gap."""
    from .files import file_sha256

    sources = archive_sources(store, db)
    need = just_before(bound) if bound is not None else max((s.hi for s in sources), default=after)
    proofs = ac.caught_up(store)
    c, chain = after, []
    rank = {"slice": 0, "incremental": 1}
    damaged: list[str] = []  # slices that failed their checksum: never chosen again
    while c < need:
        cand = [s for s in sources if s.covers(c)]
        src = _intact_choice(store, cand, rank, damaged, file_sha256)
        if cand and src is None:  # every archived source for this stretch is damaged
            raise FluxaError(f"oplog slice {damaged[0]} failed its checksum (the file changed after it was archived)"
                             + (f"; so did {', '.join(damaged[1:])}" if len(damaged) > 1 else ""),
                             "the slice is damaged and is refused; restore to a time before it")
        if src is not None:
            pass
        elif bound is not None and c in proofs and proofs[c].timestamp() >= bound.time + CLOCK_MARGIN_S:
            break  # the archiver found nothing after c until past the bound: nothing else was written
        elif client is not None:
            src, oldest = live_source(client, c, bound)
            if src is None or not src.covers(c):
                raise _gap_error(store, c, oldest, True)
        else:
            raise _gap_error(store, c, None, False)
        chain.append(src)
        if src.hi is None:
            break
        c = src.hi
    return chain


def _intact_choice(store: Store, cand: list[Source], rank: dict, damaged: list[str], file_sha256) -> Source | None:
    """The preferred candidate whose file passes its sha256 (a damaged duplicate slice is dropped
    and the next one chosen); None when none is left."""
    for src in sorted(cand, key=lambda s: (rank[s.kind], -(s.hi.time), -(s.hi.inc))):
        if src.label in damaged:
            continue
        if src.kind != "slice":
            return src
        row = next(r for r in ac.slices(store) if str(ac.slice_path(r)) == src.label)
        if file_sha256(ac.slice_path(row)) == row.sha256:
            return src
        damaged.append(src.label)
    return None


def read_chain(chain: list[Source], after: Timestamp, bound: Timestamp | None, used: list[dict]) -> Iterator[RawBSONDocument]:
    """Every entry with ``after < ts < bound`` from the chain, in ts order; each source used is
    appended to ``used`` with its entry count."""
    c = after
    for src in chain:
        rec = {"kind": src.kind, "source": src.label, "from": ac.ts_text(c),
               "to": ac.ts_text(src.hi) if src.hi else "now", "entries": 0}
        used.append(rec)
        for raw in src.read():
            e = RawBSONDocument(raw, RAW) if isinstance(raw, bytes) else raw
            ts = e["ts"]
            if ts <= c:
                continue
            if bound is not None and ts >= bound:
                break
            if src.hi is not None and ts > src.hi:
                break
            rec["entries"] += 1
            yield e
        if src.hi is None:
            return
        c = src.hi
