"""What one oplog entry does to a restored database, as pure functions (no I/O).

``plan_entry`` turns an entry into operations on the *target* database (namespace
``<source db>.<coll>`` mapped to the target's ``<coll>``); ``restore/replay.py`` executes them.
``apply_update`` computes a document's new value from an update entry's ``o``:

- inserts are inserts falling back to a replacement when the ``_id`` exists (replay);
- replacement (no ``$`` keys; MongoDB's full-document updates);
- ``$v: 1`` ``$set``/``$unset`` (dotted paths). FerretDB 1.24 writes ``{$v: 1, $set: <the whole
  new document, _id included>}`` and never shows removed fields, so a ``$set`` that carries
  ``_id`` is a replacement (MongoDB never ``$set``s ``_id``);
- ``$v: 2`` diffs (MongoDB 5+): ``d`` (delete), ``u`` (update in place), ``i`` (insert, appended
  at the end), ``s<field>`` (nested diff), arrays ``{a: true, l: newLength, u<N>: value,
  s<N>: nested diff}`` - applied as MongoDB's doc_diff applier does, field order included.

Every operation is idempotent (inserts and replacements are upserts by ``_id``, deletes of a
missing document do nothing, diffs set values), which is what lets point-in-time restore replay
the entries written while the snapshot was being taken on top of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import FluxaError

# commands replay skips with a warning: they do not change documents or index definitions we restore
SKIPPED_COMMANDS = {"startIndexBuild": "index build start (the commitIndexBuild entry creates it)",
                    "abortIndexBuild": "aborted index build",
                    "collMod": "collection options change (validators, TTL) not replayed",
                    "emptycapped": "not replayed"}


@dataclass(frozen=True)
class Upsert:
    """Replace the document with this ``_id`` (insert it if missing)."""
    coll: str
    doc: dict


@dataclass(frozen=True)
class Insert:
    """Insert the document; if its ``_id`` is already there (idempotent replay), replace it."""
    coll: str
    doc: dict


@dataclass(frozen=True)
class Modify:
    """Read-modify-write: ``change(current) -> new``; skipped when the document is missing."""
    coll: str
    _id: Any
    change: Callable[[dict], dict]
    o: dict = field(compare=False, default_factory=dict)


@dataclass(frozen=True)
class Delete:
    coll: str
    _id: Any


@dataclass(frozen=True)
class Command:
    """A collection-level command on the target database: create, drop, rename, drop_all,
    create_indexes, drop_indexes."""
    name: str
    coll: str | None
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    reason: str


Op = Insert | Upsert | Modify | Delete | Command | Skip


def split_ns(ns: str) -> tuple[str, str]:
    db, _, coll = ns.partition(".")
    return db, coll


def entry_touches(entry: dict, db: str) -> bool:
    """Cheap filter before planning: is this entry (or one inside applyOps) about ``db``?"""
    ns = entry.get("ns", "")
    if ns.startswith(db + "."):
        return True
    o = entry.get("o") or {}
    return entry.get("op") == "c" and "applyOps" in o and any(entry_touches(e, db) for e in o["applyOps"])


def plan_entry(entry: dict, source_db: str, collections: set[str] | None = None) -> list[Op]:
    """Operations for one oplog entry, restricted to ``source_db`` (and ``collections``)."""
    op = entry.get("op")
    db, coll = split_ns(entry.get("ns", ""))
    o = entry.get("o") or {}
    if op == "n":
        return []
    if op == "c":
        if "applyOps" in o:  # transactions and applyOps: each inner entry carries its own ns
            return [x for inner in o["applyOps"] for x in plan_entry(inner, source_db, collections)]
        if db != source_db:
            return []
        return _plan_command(o, source_db, collections)
    if db != source_db or not coll or coll.startswith("system.") or (collections is not None and coll not in collections):
        return []
    if op == "i":
        if "_id" not in o:
            raise FluxaError(f"oplog insert into {entry.get('ns')} without _id", "the entry is malformed")
        return [Insert(coll, o)]
    if op == "d":
        return [Delete(coll, o["_id"])]
    if op == "u":
        _id = (entry.get("o2") or {}).get("_id")
        if _id is None:
            raise FluxaError(f"oplog update on {entry.get('ns')} without o2._id", "the entry is malformed")
        full = replacement_of(o)
        if full is not None:
            return [Upsert(coll, {"_id": _id, **{k: v for k, v in full.items() if k != "_id"}})]
        return [Modify(coll, _id, lambda doc, o=o: apply_update(doc, o), o)]
    raise FluxaError(f"unknown oplog op {op!r} in an entry on {entry.get('ns')}", "cannot replay it")


def _plan_command(o: dict, db: str, collections: set[str] | None) -> list[Op]:
    name = next(iter(o), None)
    keep = (lambda c: collections is None or c in collections)
    if name == "create":
        args = {k: v for k, v in o.items() if k not in ("create", "idIndex")}
        return [Command("create", o["create"], args)] if keep(o["create"]) else []
    if name == "drop":
        return [Command("drop", o["drop"])] if keep(o["drop"]) else []
    if name == "dropDatabase":
        return [Command("drop_all", None)]
    if name == "renameCollection":
        src_db, src = split_ns(o["renameCollection"])
        dst_db, dst = split_ns(o["to"])
        if src_db != db or dst_db != db:
            raise FluxaError(f"renameCollection {o['renameCollection']} -> {o['to']} crosses databases",
                             "point-in-time restore replays one database; restore to a time before or after it")
        if not (keep(src) or keep(dst)):
            return []
        return [Command("rename", src, {"to": dst, "dropTarget": bool(o.get("dropTarget"))})]
    if name == "createIndexes":  # MongoDB 4.2+: one entry per index, the spec inline
        spec = {k: v for k, v in o.items() if k not in ("createIndexes", "v")}
        return [Command("create_indexes", o["createIndexes"], {"indexes": [spec]})] if keep(o["createIndexes"]) else []
    if name == "commitIndexBuild":  # 4.4+ two-phase builds: the commit carries the specs
        specs = [{k: v for k, v in s.items() if k != "v"} for s in o.get("indexes", [])]
        return [Command("create_indexes", o["commitIndexBuild"], {"indexes": specs})] if keep(o["commitIndexBuild"]) else []
    if name == "dropIndexes" or name == "deleteIndexes":
        coll = o[name]
        return [Command("drop_indexes", coll, {"index": o.get("index")})] if keep(coll) else []
    if name in SKIPPED_COMMANDS:
        return [Skip(f"{name}: {SKIPPED_COMMANDS[name]}")]
    raise FluxaError(f"oplog command {name!r} on database {db!r} cannot be replayed",
                     "restore to a point in time before it, or restore the snapshot alone")


# ---- documents ----------------------------------------------------------------------------

def replacement_of(o: dict) -> dict | None:
    """The whole new document if the update entry is a replacement, else None."""
    if not any(k.startswith("$") for k in o) and "diff" not in o:
        return o
    if o.get("$v", 1) == 1 and set(o) <= {"$v", "$set"} and "_id" in (o.get("$set") or {}):
        return o["$set"]  # FerretDB: $set of the whole document
    return None


def apply_update(doc: dict, o: dict) -> dict:
    """The document after the update entry ``o`` (a new dict; ``doc`` is left alone)."""
    full = replacement_of(o)
    if full is not None:
        return {"_id": doc.get("_id", full.get("_id")), **{k: v for k, v in full.items() if k != "_id"}}
    version = o.get("$v", 1)
    if version == 2:
        if "diff" not in o:
            raise FluxaError("oplog $v:2 update without diff", "the entry is malformed")
        return apply_diff(doc, o["diff"])
    if version == 1:
        return apply_modifiers(doc, o)
    raise FluxaError(f"oplog update format $v:{version!r} is not supported", "supported: $v 1 and 2, replacements")


def apply_modifiers(doc: dict, o: dict) -> dict:
    """``$v: 1`` updates: ``$set``/``$unset`` with dotted paths (the only ones MongoDB logs)."""
    unknown = [k for k in o if k.startswith("$") and k not in ("$v", "$set", "$unset")]
    if unknown:
        raise FluxaError(f"oplog update with {', '.join(unknown)}", "MongoDB logs only $set and $unset in $v:1 updates")
    out = copy.deepcopy(doc)
    for path, value in (o.get("$set") or {}).items():
        _set_path(out, path.split("."), copy.deepcopy(value))
    for path in (o.get("$unset") or {}):
        _unset_path(out, path.split("."))
    return out


def _set_path(node: Any, parts: list[str], value: Any) -> None:
    key, rest = parts[0], parts[1:]
    if isinstance(node, list):
        idx = int(key)
        while len(node) <= idx:
            node.append(None)  # MongoDB pads with null when setting past the end
        if rest:
            if not isinstance(node[idx], (dict, list)):
                node[idx] = {}
            _set_path(node[idx], rest, value)
        else:
            node[idx] = value
        return
    if rest:
        if not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        _set_path(node[key], rest, value)
    else:
        node[key] = value


def _unset_path(node: Any, parts: list[str]) -> None:
    key, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if not key.isdigit() or int(key) >= len(node):
            return
        if rest:
            _unset_path(node[int(key)], rest)
        else:
            node[int(key)] = None  # $unset of an array element leaves null, as MongoDB does
        return
    if not isinstance(node, dict) or key not in node:
        return
    if rest:
        _unset_path(node[key], rest)
    else:
        del node[key]


def apply_diff(doc: dict, diff: dict) -> dict:
    """A ``$v: 2`` document diff applied to ``doc`` (MongoDB's doc_diff semantics).

    Existing fields keep their position (updated in place, nested diffs applied in place,
    deleted ones dropped); updated fields that did not exist are appended, then inserted ones
    (``i`` moves an existing field to the end, as MongoDB does)."""
    deletes = set((diff.get("d") or {}))
    updates = diff.get("u") or {}
    inserts = diff.get("i") or {}
    subs = {k[1:]: v for k, v in diff.items() if k.startswith("s") and len(k) > 1}
    out: dict = {}
    for name, value in doc.items():
        if name in deletes or name in inserts:
            continue
        if name in updates:
            out[name] = copy.deepcopy(updates[name])
        elif name in subs:
            out[name] = _apply_sub(value, subs[name])
        else:
            out[name] = value
    for name, value in updates.items():
        if name not in doc:
            out[name] = copy.deepcopy(value)
    for name, value in inserts.items():
        out[name] = copy.deepcopy(value)
    return out


def _apply_sub(value: Any, sub: dict) -> Any:
    if sub.get("a") is True:
        return apply_array_diff(value, sub) if isinstance(value, list) else value
    return apply_diff(value, sub) if isinstance(value, dict) else value  # type changed later: nothing to do


def apply_array_diff(arr: list, diff: dict) -> list:
    """``{a: true, l: n, u<N>: value, s<N>: diff}``: resize first, then element updates (padding
    with null past the end) and nested diffs of existing elements."""
    out = list(arr)
    if "l" in diff:
        n = int(diff["l"])
        out = out[:n] + [None] * max(0, n - len(out))
    for key, value in diff.items():
        if key in ("a", "l"):
            continue
        kind, idx = key[0], int(key[1:])
        if kind == "u":
            while len(out) <= idx:
                out.append(None)
            out[idx] = copy.deepcopy(value)
        elif kind == "s":
            if idx < len(out):
                out[idx] = _apply_sub(out[idx], value)
        else:
            raise FluxaError(f"unknown array diff key {key!r}", "the entry is malformed")
    return out
