"""Execute planned oplog operations (backup/oplog_apply.py) on the target database.

A transaction MongoDB wrote as several applyOps entries (``partialTxn: true`` parts, then the
commit entry) is applied whole when its commit entry is replayed, and not at all when the point
in time comes before the commit - as the database was at that moment.

Document writes are buffered and sent as unordered-across-collections, ordered-within-a-
collection bulk writes (writes to different collections commute); a read-modify-write (``$v: 2``
diffs, ``$v: 1`` modifiers) or a command first flushes the buffer so it sees every earlier write.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure

from ..backup.oplog_apply import Command, Delete, Insert, Modify, Skip, Upsert, plan_entry
from ..mongo.unsupported import refused_values

FLUSH_OPS = 1000
#: FerretDB 1.24 keeps each update statement's SQLite read open until the whole update command
#: ends, and a database has 100 connections: a command of 100 replaces hangs forever (found by
#: benchmarks/bench_backup.py). Commands carry at most this many update statements.
UPDATES_PER_COMMAND = 50


@dataclass
class ReplayStats:
    entries: int = 0
    upserts: int = 0
    deletes: int = 0
    modified: int = 0
    missing: int = 0  # diffs on documents not in the target (deleted later in the window)
    commands: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def txn_key(entry: dict) -> tuple | None:
    """(session id, txnNumber) of an applyOps entry written by a transaction, else None."""
    o = entry.get("o") or {}
    if entry.get("op") != "c" or "applyOps" not in o or "txnNumber" not in entry:
        return None
    return (str((entry.get("lsid") or {}).get("id")), entry["txnNumber"])


def is_txn_entry(entry) -> bool:
    """Cheap check on a raw entry: must reach the replayer even when its own ops are elsewhere,
    because it may commit (or continue) a transaction whose earlier parts touch the database."""
    return entry.get("op") == "c" and "txnNumber" in entry


def bounded_updates(models: list, limit: int) -> list[list]:
    """Split an ordered list of writes so no part holds more than ``limit`` non-insert writes."""
    parts, start, n = [], 0, 0
    for i, m in enumerate(models):
        if not isinstance(m, InsertOne):
            if n == limit:
                parts.append(models[start:i])
                start, n = i, 0
            n += 1
    parts.append(models[start:])
    return [p for p in parts if p]


class Replayer:
    def __init__(self, target: Database, source_db: str, collections: set[str] | None):
        self.db, self.source_db, self.collections = target, source_db, collections
        self.pending: dict[str, list] = defaultdict(list)
        self.open_txns: dict[tuple, list[dict]] = {}  # partialTxn entries waiting for their commit
        self.n_pending = 0
        self.stats = ReplayStats()

    def apply(self, entry: dict) -> None:
        self.stats.entries += 1
        key = txn_key(entry)
        if key is not None:  # a transaction written as several applyOps entries (MongoDB 4.2+)
            parts = self.open_txns.setdefault(key, [])
            if entry["o"].get("partialTxn"):
                parts.append(entry)  # applied with its commit, or never if the point comes first
                return
            for part in self.open_txns.pop(key):
                self._apply_ops(part)
        self._apply_ops(entry)

    def _apply_ops(self, entry: dict) -> None:
        for op in plan_entry(entry, self.source_db, self.collections):
            if isinstance(op, Insert):
                self._queue(op.coll, InsertOne(op.doc))
                self.stats.upserts += 1
            elif isinstance(op, Upsert):
                self._queue(op.coll, ReplaceOne({"_id": op.doc["_id"]}, op.doc, upsert=True))
                self.stats.upserts += 1
            elif isinstance(op, Delete):
                self._queue(op.coll, DeleteOne({"_id": op._id}))
                self.stats.deletes += 1
            elif isinstance(op, Modify):
                self.flush()
                current = self.db[op.coll].find_one({"_id": op._id})
                if current is None:
                    self.stats.missing += 1
                else:
                    new = op.change(current)
                    with refused_values(self.db[op.coll], [ReplaceOne({"_id": op._id}, new)]):
                        self.db[op.coll].replace_one({"_id": op._id}, new)
                    self.stats.modified += 1
            elif isinstance(op, Command):
                self.flush()
                self._command(op)
                self.stats.commands.append(f"{op.name} {op.coll or ''}".strip())
            elif isinstance(op, Skip):
                self.stats.skipped.append(op.reason)

    def _queue(self, coll: str, model) -> None:
        self.pending[coll].append(model)
        self.n_pending += 1
        if self.n_pending >= FLUSH_OPS:
            self.flush()

    def flush(self) -> None:
        for coll, models in self.pending.items():
            for chunk in bounded_updates(models, UPDATES_PER_COMMAND):
                self._write(coll, chunk)
        self.pending.clear()
        self.n_pending = 0

    def _write(self, coll: str, models: list) -> None:
        i = 0
        while i < len(models):
            try:
                with refused_values(self.db[coll], models[i:]):
                    self.db[coll].bulk_write(models[i:], ordered=True)
                return
            except BulkWriteError as exc:
                err = exc.details["writeErrors"][0]
                j = i + err["index"]
                if err.get("code") != 11000 or not isinstance(models[j], InsertOne):
                    raise
                doc = models[j]._doc  # inserted by an earlier replay of the same entry: take this version
                with refused_values(self.db[coll], [doc]):
                    self.db[coll].replace_one({"_id": doc["_id"]}, doc)
                i = j + 1

    def _command(self, op: Command) -> None:
        db, names = self.db, set(self.db.list_collection_names())
        if op.name == "create":
            if op.coll not in names:
                db.command("create", op.coll, **op.args)
        elif op.name == "drop":
            db.drop_collection(op.coll)
        elif op.name == "drop_all":
            for n in names:
                if self.collections is None or n in self.collections:
                    db.drop_collection(n)
        elif op.name == "rename":
            if op.coll in names:
                if op.args["to"] in names and not op.args["dropTarget"]:
                    db.drop_collection(op.args["to"])  # replay: the target exists only from a later state
                db[op.coll].rename(op.args["to"], dropTarget=True)
        elif op.name == "create_indexes":
            db.command("createIndexes", op.coll, indexes=op.args["indexes"])
        elif op.name == "drop_indexes":
            index = op.args.get("index")
            try:
                if index in (None, "*"):
                    db[op.coll].drop_indexes()
                elif isinstance(index, str):
                    db[op.coll].drop_index(index)
                else:  # a key pattern
                    db[op.coll].drop_index(list(index.items()))
            except OperationFailure as exc:
                if exc.code not in (26, 27):  # namespace / index not found: already gone
                    raise
