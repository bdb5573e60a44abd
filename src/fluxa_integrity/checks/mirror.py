"""A local copy of a database's collections, kept current from the oplog: what lets
`check run --changes` read from the server only the documents written since its last run.

Per collection the copy is a list of *parts*: raw BSON files of about ``PART_DOCS`` documents in
the order the server handed them over, and an index from each ``_id``'s hash to its part. A
refresh reads the oplog (archived slices, incremental backups, the live oplog, chained as for
point-in-time restore) since the copy's point, fetches the current version of every document
written since then by ``_id`` (mongo/by_id.py), and rewrites only the parts that hold them;
ids the copy has not seen go to the last part. Every write shows up in the oplog - including
one that changed no ``lastUpdated`` - which is why the oplog and not a watermark field says
what changed. A collection a command touched (drop, rename, index builds do not count) is read
whole again, and so is every collection when the oplog since the copy's point is broken.

Nothing is changed in place. A refresh writes new part files under new names; ``commit()``
replaces ``state.json`` atomically (the list of parts, the oplog point, the stored partition
results and exports of the run); files the new state no longer names are deleted after it. A run
that fails leaves the previous state, which the next run refreshes from its own point.

Disk: the raw BSON of the copied collections (~250 bytes a message) plus the stored partition
results; `docs/checks.md` ("Runs that read only what changed").
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import bson
import numpy as np
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from ..backup.files import iter_raw_documents
from ..backup.oplog import newest_oplog_ts
from ..backup.oplog_apply import Command, Delete, Insert, Modify, Upsert, entry_touches, plan_entry
from ..backup.oplog_sources import plan_chain, read_chain
from ..errors import FluxaError
from ..locks import HolderLock, describe
from ..mongo.by_id import find_by_ids
from ..mongo.unsupported import is_ferretdb
from .values import key_hash, oid_hashes

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
RAW_DECODE = CodecOptions(tz_aware=True)  # an oplog entry decoded to plan its operations
PART_DOCS = 20_000
PER_ID_MOST = 8
STATE = "state.json"
FORMAT = 1


def id_hashes(raws: list[bytes]) -> np.ndarray:
    """``key_hash`` of each raw document's ``_id``. A server stores ``_id`` first, so an
    ObjectId id is read straight from its bytes (type 7, name ``_id``: bytes 9-21); any other
    document is decoded."""
    if not raws:
        return np.empty(0, dtype=np.int64)
    fast = [r[4] == 7 and r[5:9] == b"_id\x00" for r in raws]
    if all(fast):
        return oid_hashes(b"".join(r[9:21] for r in raws))
    out = np.empty(len(raws), dtype=np.int64)
    for i, r in enumerate(raws):
        out[i] = oid_hashes(r[9:21])[0] if fast[i] else key_hash(bson.decode(r)["_id"])
    return out


@dataclass
class Part:
    name: str  # file name in the collection's directory; a new name for every rewrite
    docs: int

    def path(self, root: Path, coll: str) -> Path:
        return root / coll / self.name


@dataclass
class CollectionCopy:
    name: str
    parts: list[Part] = field(default_factory=list)
    rewritten: set[str] = field(default_factory=set)  # part names written by this refresh
    read: int = 0  # documents this refresh read from the server
    _index: tuple[np.ndarray, np.ndarray] | None = None  # (sorted id hashes, part position)

    @property
    def docs(self) -> int:
        return sum(p.docs for p in self.parts)


def _point(client) -> tuple[Timestamp | None, str]:
    """The oplog point the refreshed copy will stand for: every entry at or before it is in the
    copy. MongoDB names its last write (hello.lastWrite). FerretDB does not, and finding its
    newest entry reads the whole oplog (7 s for 18k entries, measured), so its clock bounds it:
    the start of the next second, once the server's clock is past it - every entry stamped before
    then is committed (the dev server stamps entries in commit order, tools/ferretdb). Costs up
    to two seconds a run there."""
    if not is_ferretdb(client):
        point, how, _ = newest_oplog_ts(client)
        return point, how
    local = client.admin.command("hello").get("localTime")
    if local is None:
        return None, "the server reports no clock"
    point = Timestamp(int(local.timestamp()) + 1, 0)
    deadline = time.monotonic() + 10
    while int(client.admin.command("hello")["localTime"].timestamp()) <= point.time:
        if time.monotonic() > deadline:
            raise FluxaError("the server's clock did not advance for 10 s", "check the server")
        time.sleep(0.1)  # polling the server's own clock, not waiting a guessed time
    return point, "server clock"


def mirror_root(home: Path, uri: str, db: str) -> Path:
    key = hashlib.sha256(f"{uri}\0{db}".encode()).hexdigest()[:12]
    return home / "check-mirror" / f"{db}-{key}"


def copy_lock(home: Path, uri: str, db: str) -> HolderLock:
    """One --changes run at a time per copy: two would refresh and commit the same state."""
    root = mirror_root(home, uri, db)
    return HolderLock(root / "lock", lambda h: FluxaError(
        f"another --changes run on {db} is using its local copy ({describe(h)})",
        "wait for it to finish, or run without --changes"), f"check that {root} is writable")


def _ids_path(part: Path) -> Path:
    return part.with_name(part.name.replace(".bson", ".ids.npy"))


def _new_name(seq: int) -> str:
    return f"{seq:05d}-{secrets.token_hex(4)}.bson"


class Mirror:
    """The copy of one database (``root``: a directory under $FLUXA_HOME/check-mirror)."""

    def __init__(self, root: Path, db: str):
        self.root, self.db = root, db
        self.state: dict = {}
        path = root / STATE
        if path.exists():
            try:
                self.state = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise FluxaError(f"{path} is unreadable ({exc})",
                                 f"delete {root} to have the next --changes run copy the database again") from exc
            if self.state.get("format") != FORMAT:
                self.state = {}
        self.generation = int(self.state.get("generation", 0))
        self.copies: dict[str, CollectionCopy] = {}
        self.point: Timestamp | None = None
        self.warnings: list[str] = []

    @classmethod
    def open(cls, home: Path, uri: str, db: str) -> "Mirror":
        root = mirror_root(home, uri, db)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, db)

    # -- refresh ------------------------------------------------------------------------------
    def refresh(self, client, store, collections: list[str], progress=None) -> None:
        """Bring every collection of ``collections`` up to the server's state."""
        point, how = _point(client)
        if point is None:
            raise FluxaError(f"--changes needs the server's oplog to know what changed, and {how}",
                             "run on a replica set (or the dev server), or drop --changes")
        known = self.state.get("collections", {})
        since = self.state.get("point")
        changed: dict[str, dict[int, object]] = {c: {} for c in collections}
        whole = {c for c in collections if c not in known}
        if since is not None and whole != set(collections):
            since_ts = Timestamp(*since)
            try:
                self._changes(client, store, since_ts, point, changed, whole)
            except FluxaError as exc:
                self.warnings.append(f"the oplog since the last --changes run is incomplete ({exc.message}); "
                                     "every collection was read whole again")
                whole = set(collections)
        else:
            whole = set(collections)
        for coll in collections:
            if coll in whole:
                self.copies[coll] = self._build(client, coll, progress)
            else:
                copy = CollectionCopy(coll, [Part(**p) for p in known[coll]["parts"]])
                self._apply(client, copy, changed[coll])
                self.copies[coll] = copy
        self.point = point

    def _changes(self, client, store, since: Timestamp, upto: Timestamp, changed: dict, whole: set) -> None:
        bound = Timestamp(upto.time, upto.inc + 1)
        for raw in read_chain(plan_chain(store, client, self.db, since, bound), since, bound, []):
            if not entry_touches(raw, self.db):
                continue
            for op in plan_entry(bson.decode(raw.raw, RAW_DECODE), self.db, set(changed)):
                if isinstance(op, Command):
                    if op.name in ("create_indexes", "drop_indexes"):
                        continue  # no document changed
                    whole.update(c for c in (op.coll, (op.args or {}).get("to")) if c in changed)
                    if op.name == "drop_all":
                        whole.update(changed)
                    continue
                if not isinstance(op, (Insert, Upsert, Modify, Delete)):
                    continue
                _id = op.doc["_id"] if isinstance(op, (Insert, Upsert)) else op._id
                if op.coll in changed:
                    changed[op.coll][key_hash(_id)] = _id

    def _build(self, client, coll: str, progress=None) -> CollectionCopy:
        """The collection read whole into new parts. ``progress``: a ProgressSink (a bar per
        collection, labelled ``copy <collection>``)."""
        copy = CollectionCopy(coll)
        (self.root / coll).mkdir(parents=True, exist_ok=True)
        handle = client[self.db].get_collection(coll, codec_options=RAW)
        label = f"copy {coll}"
        if progress is not None:
            progress.start(label, handle.estimated_document_count())
        buf: list[bytes] = []
        for doc in handle.find({}, batch_size=2000):
            buf.append(doc.raw)
            if len(buf) >= PART_DOCS:
                self._write_part(copy, buf)
                if progress is not None:
                    progress.advance(label, len(buf))
                buf = []
        if buf or not copy.parts:
            self._write_part(copy, buf)
            if progress is not None:
                progress.advance(label, len(buf))
        copy.read = copy.docs
        if progress is not None:
            progress.done(label)
        return copy

    def _write_part(self, copy: CollectionCopy, raws: list[bytes], seq: int | None = None) -> Part:
        part = Part(_new_name(len(copy.parts) if seq is None else seq), len(raws))
        path = part.path(self.root, copy.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"".join(raws))
        np.save(_ids_path(path), id_hashes(raws))  # the index's share of this part
        copy.rewritten.add(part.name)
        if seq is None:
            copy.parts.append(part)
        return part

    def index(self, copy: CollectionCopy) -> tuple[np.ndarray, np.ndarray]:
        if copy._index is None:
            hashes, where = [], []
            for k, part in enumerate(copy.parts):
                h = np.load(_ids_path(part.path(self.root, copy.name)))
                hashes.append(h)
                where.append(np.full(len(h), k, dtype=np.int32))
            h = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.int64)
            w = np.concatenate(where) if where else np.empty(0, dtype=np.int32)
            order = np.argsort(h, kind="stable")
            copy._index = (h[order], w[order])
        return copy._index

    def _apply(self, client, copy: CollectionCopy, changed: dict[int, object]) -> None:
        """Rewrite the parts that hold a changed document; new ids go to the last part."""
        if not changed:
            return
        coll = client[self.db].get_collection(copy.name, codec_options=RAW)
        current = {}
        # FerretDB's lookup by _id reads the collection in insertion order up to the match: 0.9 ms
        # for an old document of 8k, 42 ms for a new one (measured 2026-11-27), and the changed
        # documents are mostly new ones - so more than a few go in one $in read (one scan)
        for doc in find_by_ids(coll, list(changed.values()), most=PER_ID_MOST):
            current[int(id_hashes([doc.raw])[0])] = doc.raw
        copy.read = len(current)
        hashes, where = self.index(copy)
        wanted = np.fromiter(changed, dtype=np.int64, count=len(changed))
        at = np.searchsorted(hashes, wanted)
        at[at >= len(hashes)] = 0
        known = (hashes[at] == wanted) if len(hashes) else np.zeros(len(wanted), dtype=bool)
        parts_hit = set(where[at[known]].tolist())
        new = [int(h) for h, k in zip(wanted.tolist(), known.tolist()) if not k and h in current]
        last = len(copy.parts) - 1
        if new:
            parts_hit.add(last)
        for k in sorted(parts_hit):
            old = copy.parts[k]
            raws = list(iter_raw_documents(old.path(self.root, copy.name), "none"))
            ids = np.load(_ids_path(old.path(self.root, copy.name)))
            out = []
            for raw, h in zip(raws, ids.tolist()):
                if h in changed:
                    if h in current:  # updated (in place: the part keeps its order); else deleted
                        out.append(current[h])
                else:
                    out.append(raw)
            if k == last:
                out.extend(current[h] for h in new)
            copy.parts[k] = self._write_part(copy, out, seq=int(old.name[:5]))
        if copy.parts[last].docs > 2 * PART_DOCS:  # the tail grew: cut it
            tail = copy.parts.pop()
            raws = list(iter_raw_documents(tail.path(self.root, copy.name), "none"))
            for i in range(0, len(raws), PART_DOCS):
                self._write_part(copy, raws[i:i + PART_DOCS])
        copy._index = None

    # -- stored results -----------------------------------------------------------------------
    def stored(self, coll: str) -> dict:
        """Part name -> (result file, fingerprint) of the last committed run."""
        return self.state.get("collections", {}).get(coll, {}).get("results", {})

    def load_result(self, coll: str, file: str):
        with open(self.root / coll / file, "rb") as f:
            return pickle.load(f)

    def save_result(self, coll: str, part: str, obj) -> str:
        name = part.replace(".bson", ".result")
        path = self.root / coll / name
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        return name

    def old_exports(self) -> dict:
        name = self.state.get("exports")
        if not name:
            return {}
        try:
            with open(self.root / name, "rb") as f:
                return pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError):
            return {}

    def commit(self, results: dict[str, dict], exports: dict) -> None:
        """The run is complete: make this refresh and these results the copy's state."""
        self.generation += 1
        ename = f"exports-{self.generation}-{secrets.token_hex(4)}.pickle"
        with open(self.root / ename, "wb") as f:
            pickle.dump(exports, f, protocol=pickle.HIGHEST_PROTOCOL)
        state = {"format": FORMAT, "db": self.db, "generation": self.generation,
                 "point": [self.point.time, self.point.inc] if self.point else None, "exports": ename,
                 "collections": {c: {"parts": [{"name": p.name, "docs": p.docs} for p in copy.parts],
                                     "results": results.get(c, {})} for c, copy in self.copies.items()}}
        tmp = self.root / (STATE + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.root / STATE)
        self.state = state
        self._sweep()

    def _sweep(self) -> None:
        """Delete files the committed state does not name (a previous state's, a failed run's)."""
        keep = {self.state.get("exports")}
        for c, info in self.state.get("collections", {}).items():
            keep.update(p["name"] for p in info["parts"])
            keep.update(_ids_path(Path(p["name"])).name for p in info["parts"])
            keep.update(r[0] for r in info["results"].values())
        for path in self.root.rglob("*"):
            if path.is_file() and path.name not in (STATE, "lock") and path.name not in keep:
                path.unlink(missing_ok=True)

