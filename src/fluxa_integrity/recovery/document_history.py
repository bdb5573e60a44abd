"""Document-level point in time: the versions some documents of one collection went through,
from the newest usable full backup forward through the oplog (archived slices, incremental
backups, the live oplog - backup/oplog_sources.py), without restoring a database. The one
implementation every recipe uses: correct-by-policy (a value's newest valid version), migrate
(fields as of T) and undelete (a document just before its final delete, and which documents of a
collection were deleted since T).

Shape: ``History.versions`` maps the BSON key of each asked ``_id`` (``bson.encode({"_id": v})``)
to its versions, oldest first: ``Version(at, doc, source)`` where ``doc`` is the whole document
(None: absent then, deleted or not yet inserted), ``at`` the moment it became that (the backup's
end for the snapshot copy, the entry's wall clock for an oplog entry) and ``source`` says which
(``backup <id>`` or ``oplog <t:i>``). ``History.at(key, t)`` is the document as of ``t``;
``History.before_final_delete(key)`` the version just before its last delete (with where it came
from). ``deletes_since(...)`` -> ``{key: (_id, wall, ts)}``, the newest delete entry of every
document of the collection since T, whatever its id. Memory: the asked documents' versions only;
the backup file and the oplog are streamed.

The snapshot is the newest complete/verified full backup of the database holding the collection
and ended at or before ``snapshot_before`` (default ``until``; restore/pitr.py's choice, so both
agree on "a backup before T"). Replay uses the same pure functions as point-in-time restore
(backup/oplog_apply.py): inserts, replacements, ``$v`` 1/2 updates, deletes, and a collection
drop (every document absent). Entries stamped after ``until`` are not read. One chain reader
(``entries_between``) serves every caller, live_writes.py too.

Failure behaviour, strict (the default): no such backup -> ``NoHistory`` (a FluxaError; callers
that can do without, like correct-by-policy, catch it). A backup file that fails its checksum is
a FluxaError. A broken oplog window (gap, damaged slice) is a FluxaError when ``need_oplog`` (a
rollback to T needs the exact state at T); otherwise the history holds the snapshot copy alone
and ``oplog_note`` says why - an older value is still a value that was valid once.
Tolerant (``gaps=[]``, undelete's mode: what can be read is read): no backup, or a damaged one,
means no snapshot - the replay starts at the oldest entry any source holds; an oplog window the
sources do not cover is read from what remains (the archive from its oldest slice, else the live
oplog alone); each such problem is appended to ``gaps`` (also ``History.gaps``) instead of raised,
so the recipe lists the documents it could not find in ``unresolved`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from ..backup import archive_catalog as ac
from ..backup.files import iter_raw_documents
from ..backup.manifest import read_manifest, require_intact
from ..backup.oplog import oldest_oplog_entry
from ..backup.oplog_apply import Command, Delete, Insert, Modify, Upsert, entry_touches, plan_entry
from ..backup.oplog_sources import archive_sources, plan_chain, read_chain
from ..backup.repository import backup_dir
from ..backup.retention import aware
from ..errors import FluxaError
from ..restore.pitr import Point, choose_snapshot

UTC = timezone.utc
DECODE = CodecOptions(tz_aware=True)
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)


class NoHistory(FluxaError):
    """No full backup of the database, holding the collection, ended before the moment asked."""


def key(_id) -> bytes:
    return bson.encode({"_id": _id})


@dataclass
class Version:
    at: datetime
    doc: dict | None
    source: str


@dataclass
class History:
    collection: str
    backup_id: str | None  # None: no snapshot (tolerant mode), the oplog alone
    backup_finished: datetime | None
    versions: dict[bytes, list[Version]] = field(default_factory=dict)
    oplog_entries: int = 0
    oplog_note: str | None = None  # why the oplog was not replayed (snapshot copy only)
    gaps: list[str] = field(default_factory=list)  # tolerant mode: what could not be read

    def at(self, k: bytes, when: datetime) -> Version | None:
        """The version current at ``when`` (None: not known then - not in the backup's time range)."""
        found = None
        for v in self.versions.get(k, []):
            if v.at <= when:
                found = v
        return found

    def before_final_delete(self, k: bytes) -> tuple[dict, str] | None:
        """(the document just before its last delete, where it came from); with no delete in
        the history (the deletion is outside what was read) its newest known state. None: never
        seen."""
        vs = self.versions.get(k, [])
        chosen, deleted = None, False
        for n in range(len(vs) - 1, 0, -1):
            if vs[n].doc is None and vs[n - 1].doc is not None:
                chosen, deleted = n - 1, True
                break
        if chosen is None:
            chosen = next((n for n in range(len(vs) - 1, -1, -1) if vs[n].doc is not None), None)
        if chosen is None:
            return None
        born = chosen  # the version that made this incarnation of the document: the backup or an insert
        while born > 0 and vs[born - 1].doc is not None:
            born -= 1
        base = vs[born].source if vs[born].source.startswith("backup") else "the oplog"
        if base.startswith("backup"):
            base += " + the oplog up to its deletion" if deleted else " (its deletion is not in the oplog)"
        return vs[chosen].doc, base


def _entry_time(entry) -> datetime:
    wall = entry.get("wall")
    return aware(wall) if isinstance(wall, datetime) else datetime.fromtimestamp(entry["ts"].time, UTC)


def _oldest(store, client, db_name: str) -> Timestamp | None:
    """Just before the oldest entry any source holds (archive or live oplog)."""
    los = [s.lo for s in archive_sources(store, db_name)] if store is not None else []
    first = oldest_oplog_entry(client)
    if first is not None:
        los.append(ac.just_before(first["ts"]))
    return min(los) if los else None


def entries_between(store, client, db_name: str, start: Timestamp | None, bound: Timestamp,
             gaps: list[str] | None) -> Iterator[RawBSONDocument]:
    """Oplog entries with start < ts < bound, chained over the archive and the live oplog.
    Strict (``gaps`` None): a broken window raises FluxaError before the first entry. Tolerant:
    the window is read from what covers it and each problem appended to ``gaps``."""
    if gaps is None:
        yield from read_chain(plan_chain(store, client, db_name, start, bound), start, bound, [])
        return
    oldest = _oldest(store, client, db_name)
    if oldest is None:
        gaps.append("no oplog is available (no archived slice, no live oplog)")
        return
    if start is None or start < oldest:
        if start is not None:
            gaps.append(f"the oplog from {ac.ts_text(start)} is gone; read from {ac.ts_text(oldest)}")
        start = oldest
    try:
        if store is None:
            raise FluxaError("no state store: the archive was not consulted")
        chain = plan_chain(store, client, db_name, start, bound)
    except FluxaError as exc:  # read the live oplog alone, say so
        gaps.append(f"oplog archive not used: {exc.message}")
        oplog = client.local.get_collection("oplog.rs", codec_options=RAW)
        yield from oplog.find({"ts": {"$gt": start, "$lt": bound}}).sort("$natural", 1)
        return
    yield from read_chain(chain, start, bound, [])


def _ops(raw, db_name: str, collection: str):
    """The planned operations of one entry on ``db_name.collection`` (decoded only when they are)."""
    if not entry_touches(raw, db_name):
        return []
    if raw.get("op") != "c" and raw.get("ns") != f"{db_name}.{collection}":
        return []
    return plan_entry(bson.decode(raw.raw, DECODE), db_name, {collection})


def _bound(until: datetime) -> tuple[Point, Timestamp]:
    point = Point(until.isoformat(), wall=until)
    return point, point.bound(True)


def deletes_since(store, client, db_name: str, collection: str, since: datetime | None, *,
                  until: datetime | None = None, gaps: list[str]) -> dict[bytes, tuple[Any, datetime, Timestamp]]:
    """{key: (_id, wall, ts)} of the newest delete entry of each document of the collection with
    a wall time at or after ``since`` (every one the sources hold without ``since``), whatever
    its id. Tolerant: problems go to ``gaps``."""
    until = aware(until) if until is not None else datetime.now(UTC)
    point, bound = _bound(until)
    start = Timestamp(int(aware(since).timestamp()), 0) if since is not None else None
    out: dict[bytes, tuple] = {}
    for raw in entries_between(store, client, db_name, start, bound, gaps):
        if point.past(raw, True):
            break
        for op in _ops(raw, db_name, collection):
            if isinstance(op, Delete):
                wall = _entry_time(raw)
                if since is None or wall >= aware(since):
                    out[key(op._id)] = (op._id, wall, raw["ts"])
    return out


def document_history(store, client, db_name: str, collection: str, ids: Iterable, *,
                     until: datetime | None = None, need_oplog: bool = False,
                     snapshot_before: datetime | None = None, gaps: list[str] | None = None) -> History:
    """The versions of ``ids`` in ``db_name.collection`` from the newest full backup ended by
    ``snapshot_before`` (default ``until``, default now) up to ``until`` (see the module doc;
    ``gaps`` a list: tolerant mode)."""
    wanted = {key(i) for i in ids}
    until = aware(until) if until is not None else datetime.now(UTC)
    point, bound = _bound(until)
    snap_point = point if snapshot_before is None else Point(aware(snapshot_before).isoformat(),
                                                             wall=aware(snapshot_before))
    current: dict[bytes, dict | None] = {k: None for k in wanted}
    snap, finished = _snapshot(store, db_name, collection, snap_point, gaps)
    hist = History(collection, snap.id if snap else None, finished, {k: [] for k in wanted},
                   gaps=gaps if gaps is not None else [])
    if snap is not None:
        try:
            for k, doc in _from_snapshot(snap, collection, wanted).items():
                current[k] = doc
        except FluxaError as exc:
            if gaps is None:
                raise
            gaps.append(f"backup {snap.id} not used: {exc.message}")
            snap, finished, hist.backup_id, hist.backup_finished = None, None, None, None
    if snap is not None:
        for k in wanted:
            hist.versions[k].append(Version(finished, current[k], f"backup {snap.id}"))
    start = Timestamp(snap.oplog_start_t, snap.oplog_start_i) if snap is not None else None
    entries = entries_between(store, client, db_name, start, bound, gaps)
    try:
        first = next(entries, None)  # strict: a broken window raises here, before any version
    except FluxaError as exc:
        if need_oplog:
            raise FluxaError(f"cannot tell {db_name}.{collection} as of {until.isoformat()}: {exc.message}",
                             exc.hint) from None
        hist.oplog_note = exc.message
        return hist
    for raw in _chain_first(first, entries):
        if point.past(raw, True):
            break
        ops = _ops(raw, db_name, collection)
        if not ops:
            continue
        when, source = _entry_time(raw), f"oplog {raw['ts'].time}:{raw['ts'].inc}"
        for op in ops:
            changed = _apply(op, current, wanted)
            for k in changed:
                hist.versions[k].append(Version(max(when, finished) if finished else when, current[k], source))
            hist.oplog_entries += bool(changed)
    return hist


def _chain_first(first, rest):
    if first is not None:
        yield first
        yield from rest


def _snapshot(store, db_name: str, collection: str, point: Point, gaps: list[str] | None):
    """(the backup row, its end) or, tolerant, (None, None) with the reason in ``gaps``."""
    if store is None:
        if gaps is None:
            raise NoHistory("no state store, so no backup catalog to read", "run with a FLUXA_HOME state store")
        gaps.append("no state store, so no backup was read")
        return None, None
    try:
        snap = choose_snapshot(store, db_name, point, [collection])
    except FluxaError as exc:
        if gaps is None:
            raise NoHistory(exc.message, exc.hint) from None
        gaps.append(f"no full backup of {db_name}.{collection} finished before {point.text}")
        return None, None
    return snap, aware(snap.finished_at)


def _from_snapshot(snap, collection: str, wanted: set[bytes]) -> dict[bytes, dict]:
    directory = backup_dir(Path(snap.repo), snap.id)
    manifest = read_manifest(directory, snap.manifest_sha256)
    entry = manifest["collections"].get(collection) or {}
    found: dict[bytes, dict] = {}
    if entry.get("data"):
        require_intact(directory, [entry["data"]])
        for raw in iter_raw_documents(directory / entry["data"]["path"], manifest["compression"]):
            k = key(RawBSONDocument(raw, RAW)["_id"])
            if k in wanted:
                found[k] = bson.decode(raw, DECODE)
    return found


def _apply(op, current: dict[bytes, dict | None], wanted: set[bytes]) -> list[bytes]:
    """Apply one planned oplog operation to the tracked documents; the keys it changed."""
    if isinstance(op, (Insert, Upsert)):
        k = key(op.doc["_id"])
        if k in wanted:
            current[k] = dict(op.doc)
            return [k]
    elif isinstance(op, Modify):
        k = key(op._id)
        if k in wanted and current[k] is not None:
            current[k] = op.change(current[k])
            return [k]
    elif isinstance(op, Delete):
        k = key(op._id)
        if k in wanted and current[k] is not None:
            current[k] = None
            return [k]
    elif isinstance(op, Command) and op.name in ("drop", "drop_all", "rename"):
        gone = [k for k in wanted if current[k] is not None]
        for k in gone:
            current[k] = None
        return gone
    return []
