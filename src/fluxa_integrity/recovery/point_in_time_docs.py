"""Document-level point in time (S28): a few documents as they were just before they were
deleted, from the newest snapshot before the deletions plus the oplog - without restoring a
database. Also: the oplog's delete entries of a collection since a time (who was hard-deleted).

How a document's last state is found:

1. The base: the newest complete/verified full backup of the database holding the collection
   that finished at or before the earliest deletion; its collection file is streamed once and
   only the wanted ``_id``s are decoded. No such backup: no base (the oplog alone may still hold
   the document's insert).
2. The oplog from the snapshot's oplog start (or from the oldest entry any source holds) to now:
   archived slices, incremental backups, then the live ``local.oplog.rs``, chained exactly as
   point-in-time restore chains them (backup/oplog_sources.py). Each entry about a wanted
   ``_id`` is applied in memory (backup/oplog_apply.py: inserts, replacements, ``$v:1``/``$v:2``
   updates); a delete entry records the state it removed. The answer is the state before the
   **last** delete; a document with no delete entry is taken as it stands at the end (the
   deletion is outside the oplog: the newest state known before it).

Shapes: ``PointInTime.documents(ids)`` -> ({key: document}, {key: where it came from}); keys are
``id_key(_id)``. ``deletes_since(since)`` -> {key: (_id, wall time, ts)}.
Failure behaviour: reads only. A window the oplog sources do not cover (a gap, a rolled-over
oplog) is not an error here: what can be read is read and ``gaps`` says what could not, so the
recipe lists the documents it could not find in ``unresolved``. A damaged backup file is skipped
the same way (named in ``gaps``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from sqlalchemy import select

from ..backup import archive_catalog as ac
from ..backup.files import iter_raw_documents
from ..backup.manifest import files_of, read_manifest, require_intact
from ..backup.oplog_apply import Delete, Insert, Modify, Upsert, entry_touches, plan_entry
from ..backup.oplog_sources import archive_sources, plan_chain, read_chain
from ..backup.repository import backup_dir
from ..backup.retention import aware
from ..errors import FluxaError
from ..store.backup_models import RESTORABLE, Backup

UTC = timezone.utc
DECODE = CodecOptions(tz_aware=True)
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)


def id_key(_id: Any) -> bytes:
    return bson.encode({"_id": _id})


def _ts_of(when: datetime) -> Timestamp:
    return Timestamp(int(aware(when).timestamp()), 0)


class PointInTime:
    def __init__(self, store, client, db_name: str, collection: str, now: datetime):
        self.store, self.client, self.db, self.coll, self.now = store, client, db_name, collection, now
        self.ns = f"{db_name}.{collection}"
        self.gaps: list[str] = []

    # --- the oplog ---------------------------------------------------------------------------

    def _oldest(self) -> Timestamp | None:
        """Just before the oldest entry any source holds (archive or live oplog)."""
        los = [s.lo for s in archive_sources(self.store, self.db)] if self.store is not None else []
        first = next(iter(self.client.local["oplog.rs"].find({}, {"ts": 1}).sort("$natural", 1).limit(1)), None)
        if first is not None:
            los.append(ac.just_before(first["ts"]))
        return min(los) if los else None

    def entries(self, after: Timestamp | None) -> Iterator[RawBSONDocument]:
        """Entries with ts > after up to now, from whatever covers them; a gap noted, not raised."""
        bound = Timestamp(int(self.now.timestamp()) + 2, 0)
        oldest = self._oldest()
        if oldest is None:
            self.gaps.append("no oplog is available (no archived slice, no live oplog)")
            return
        if after is None or after < oldest:
            if after is not None:
                self.gaps.append(f"the oplog from {ac.ts_text(after)} is gone; read from {ac.ts_text(oldest)}")
            after = oldest
        try:
            if self.store is None:
                raise FluxaError("no state store: the archive was not consulted")
            chain = plan_chain(self.store, self.client, self.db, after, bound)
        except FluxaError as exc:  # read the live oplog alone, say so
            self.gaps.append(f"oplog archive not used: {exc.message if hasattr(exc, 'message') else exc}")
            oplog = self.client.local.get_collection("oplog.rs", codec_options=RAW)
            yield from oplog.find({"ts": {"$gt": after, "$lt": bound}}).sort("$natural", 1)
            return
        yield from read_chain(chain, after, bound, [])

    def _ops(self, raw: RawBSONDocument):
        if not entry_touches(raw, self.db):
            return []
        if raw.get("op") != "c" and raw.get("ns") != self.ns:
            return []
        return plan_entry(bson.decode(raw.raw, DECODE), self.db, {self.coll})

    def deletes_since(self, since: datetime | None) -> dict[bytes, tuple[Any, datetime | None, Timestamp]]:
        """{key: (_id, wall, ts)} of the newest delete entry of each document since ``since``."""
        out: dict[bytes, tuple] = {}
        for raw in self.entries(_ts_of(since) if since else None):
            for op in self._ops(raw):
                if isinstance(op, Delete):
                    wall = raw.get("wall")
                    wall = aware(wall) if isinstance(wall, datetime) else datetime.fromtimestamp(raw["ts"].time, UTC)
                    if since is None or wall >= aware(since):
                        out[id_key(op._id)] = (op._id, wall, raw["ts"])
        return out

    # --- documents -----------------------------------------------------------------------------

    def snapshot(self, before: datetime) -> Backup | None:
        if self.store is None:
            return None
        with self.store.session() as s:
            rows = list(s.scalars(select(Backup).where(Backup.db == self.db, Backup.kind == "full",
                                                       Backup.status.in_(RESTORABLE))
                                  .order_by(Backup.finished_at.desc())))
        for b in rows:
            if self.coll in (b.collections or []) and b.finished_at is not None and aware(b.finished_at) <= aware(before):
                return b
        return None

    def _from_snapshot(self, b: Backup, wanted: set[bytes]) -> dict[bytes, dict]:
        directory = backup_dir(Path(b.repo), b.id)
        try:
            manifest = read_manifest(directory, b.manifest_sha256)
            entry = manifest["collections"][self.coll]
            require_intact(directory, files_of(manifest, [self.coll]))
            found: dict[bytes, dict] = {}
            for raw in iter_raw_documents(directory / entry["data"]["path"], manifest["compression"]):
                k = id_key(RawBSONDocument(raw, RAW)["_id"])
                if k in wanted:
                    found[k] = bson.decode(raw, DECODE)
            return found
        except (FluxaError, KeyError) as exc:
            self.gaps.append(f"backup {b.id} not used: {getattr(exc, 'message', exc)}")
            return {}

    def documents(self, ids: list[Any], deleted_at: datetime | None) -> tuple[dict[bytes, dict], dict[bytes, str]]:
        """The last state before deletion of each id that can be found, and where it came from."""
        wanted = {id_key(i) for i in ids}
        state: dict[bytes, dict | None] = {}
        origin: dict[bytes, str] = {}
        snap = self.snapshot(deleted_at or self.now)
        start = None
        if snap is not None and snap.oplog_start_t is not None:
            start = Timestamp(snap.oplog_start_t, snap.oplog_start_i)
            for k, doc in self._from_snapshot(snap, wanted).items():
                state[k], origin[k] = doc, f"backup {snap.id}"
        elif snap is None:
            self.gaps.append(f"no full backup of {self.db}.{self.coll} finished before the deletions")
        captured: dict[bytes, dict] = {}
        for raw in self.entries(start):
            for op in self._ops(raw):
                if isinstance(op, (Insert, Upsert)):
                    k = id_key(op.doc["_id"])
                    if k in wanted:
                        state[k] = dict(op.doc)
                        origin.setdefault(k, "the oplog")
                elif isinstance(op, Modify):
                    k = id_key(op._id)
                    if k in wanted and state.get(k) is not None:
                        state[k] = op.change(state[k])
                elif isinstance(op, Delete):
                    k = id_key(op._id)
                    if k in wanted and state.get(k) is not None:
                        captured[k] = state[k]
                        state[k] = None
        out: dict[bytes, dict] = {}
        for k in wanted:
            doc = captured.get(k) if k in captured else state.get(k)
            if doc is not None:
                out[k] = doc
                suffix = " + the oplog up to its deletion" if k in captured else " (its deletion is not in the oplog)"
                origin[k] = origin.get(k, "the oplog") + (suffix if origin.get(k, "").startswith("backup") else "")
        return out, {k: origin[k] for k in out}
