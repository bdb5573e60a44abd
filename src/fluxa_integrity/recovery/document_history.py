"""Document-level point in time: the versions some documents of one collection went through,
from the newest usable full backup forward through the oplog (archived slices, incremental
backups, the live oplog - backup/oplog_sources.py), without restoring a database.

Shape: ``History.versions`` maps the BSON key of each asked ``_id`` (``bson.encode({"_id": v})``)
to its versions, oldest first: ``Version(at, doc, source)`` where ``doc`` is the whole document
(None: absent then, deleted or not yet inserted), ``at`` the moment it became that (the backup's
end for the snapshot copy, the entry's wall clock for an oplog entry) and ``source`` says which
(``backup <id>`` or ``oplog <t:i>``). ``History.at(key, t)`` is the document as of ``t``.
Memory: the asked documents' versions only; the backup file and the oplog are streamed.

The snapshot is the newest complete/verified full backup of the database holding the collection
and ended at or before ``until`` (restore/pitr.py's choice, so both agree on "a backup before
T"). Replay uses the same pure functions as point-in-time restore (backup/oplog_apply.py):
inserts, replacements, ``$v`` 1/2 updates, deletes, and a collection drop (every document
absent). Entries stamped after ``until`` are not read.

Failure behaviour: no such backup -> ``NoHistory`` (a FluxaError; callers that can do without,
like correct-by-policy, catch it). A backup file that fails its checksum is a FluxaError. A broken
oplog window (gap, damaged slice) is a FluxaError when ``need_oplog`` (a rollback to T needs the
exact state at T); otherwise the history holds the snapshot copy alone and ``oplog_note`` says
why - an older value is still a value that was valid once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from ..backup.files import iter_raw_documents
from ..backup.manifest import read_manifest, require_intact
from ..backup.oplog_apply import Command, Delete, Insert, Modify, Upsert, entry_touches, plan_entry
from ..backup.oplog_sources import plan_chain, read_chain
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
    backup_id: str
    backup_finished: datetime
    versions: dict[bytes, list[Version]] = field(default_factory=dict)
    oplog_entries: int = 0
    oplog_note: str | None = None  # why the oplog was not replayed (snapshot copy only)

    def at(self, k: bytes, when: datetime) -> Version | None:
        """The version current at ``when`` (None: not known then - not in the backup's time range)."""
        found = None
        for v in self.versions.get(k, []):
            if v.at <= when:
                found = v
        return found


def _entry_time(entry: dict) -> datetime:
    wall = entry.get("wall")
    return aware(wall) if isinstance(wall, datetime) else datetime.fromtimestamp(entry["ts"].time, UTC)


def document_history(store, client, db_name: str, collection: str, ids: Iterable, *,
                     until: datetime | None = None, need_oplog: bool = False) -> History:
    """The versions of ``ids`` in ``db_name.collection`` from the newest full backup ended by
    ``until`` (default: now) up to ``until`` (see the module doc)."""
    wanted = {key(i) for i in ids}
    until = aware(until) if until is not None else datetime.now(UTC)
    point = Point(until.isoformat(), wall=until)
    if store is None:
        raise NoHistory("no state store, so no backup catalog to read", "run with a FLUXA_HOME state store")
    try:
        snap = choose_snapshot(store, db_name, point, [collection])
    except FluxaError as exc:
        raise NoHistory(exc.message, exc.hint) from None
    finished = aware(snap.finished_at)
    hist = History(collection, snap.id, finished, {k: [] for k in wanted})
    current: dict[bytes, dict | None] = {k: None for k in wanted}

    directory = backup_dir(Path(snap.repo), snap.id)
    manifest = read_manifest(directory, snap.manifest_sha256)
    entry = manifest["collections"].get(collection) or {}
    if entry.get("data"):
        require_intact(directory, [entry["data"]])
        for raw in iter_raw_documents(directory / entry["data"]["path"], manifest["compression"]):
            k = key(RawBSONDocument(raw, RAW)["_id"])
            if k in wanted:
                current[k] = bson.decode(raw, DECODE)
    for k in wanted:
        hist.versions[k].append(Version(finished, current[k], f"backup {snap.id}"))

    start = Timestamp(snap.oplog_start_t, snap.oplog_start_i)
    bound = point.bound(True)
    try:
        chain = plan_chain(store, client, db_name, start, bound)
    except FluxaError as exc:
        if need_oplog:
            raise FluxaError(f"cannot tell {db_name}.{collection} as of {until.isoformat()}: {exc.message}",
                             exc.hint) from None
        hist.oplog_note = exc.message
        return hist
    for raw in read_chain(chain, start, bound, []):
        if point.past(raw, True):
            break
        if not entry_touches(raw, db_name):
            continue
        e = bson.decode(raw.raw, DECODE)
        when, source = _entry_time(e), f"oplog {e['ts'].time}:{e['ts'].inc}"
        for op in plan_entry(e, db_name, {collection}):
            changed = _apply(op, current, wanted)
            for k in changed:
                hist.versions[k].append(Version(max(when, finished), current[k], source))
            hist.oplog_entries += bool(changed)
    return hist


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
