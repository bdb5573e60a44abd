"""Recipe ``indexes`` (S29): rebuild the indexes a collection should have, run the server's
``validate`` where it exists, and say what could not be repaired.

What a collection should have: the indexes its ``corruption`` rules expect (policy
``expected_indexes``: keys + unique) and the indexes the newest complete full backup of the
database recorded in its ``<coll>.metadata.json`` (name and options as the server had them);
``--source policy`` or ``--source backup`` uses one of the two. A policy index the backup also
holds takes the backup's name and options. Compared with ``listIndexes`` on live:

- missing (no live index with the same keys and options): ``create``;
- different (a live index of that name with other keys or options): ``replace`` - drop it, create
  the expected one (the live definition is kept in the plan, so undo puts it back);
- live indexes nobody expects are never dropped: listed in ``unresolved``.

Index changes are not document changes: the plan has no ``changes`` for them. They are kept in
``plan.params["index_changes"]`` (saved with the plan; the summary, which every dry run shows,
lists them one by one) and the engine applies them through this
recipe's ``apply_extra`` after the (absent) documents, undoes them through ``undo_extra``, and
records both on the incident's timeline with the usual counts (``<coll> (indexes)``: created,
replaced, already, conflicts). Both are idempotent: an index already as planned is left alone,
so a rerun completes. A live index that is neither what was planned against nor the target (a
person changed it since the plan) is a conflict: left alone and counted.

The index journal: apply writes one record per DDL it is about to perform to
``<plan dir>/index-journal.bson`` (BSON records ``{i, collection, action: create|replace, name,
key, options, dropped}`` - ``dropped`` the live definition a replace drops), appended, fsynced
with its directory BEFORE the drop or create. Undo acts on that journal only: an index the apply
counted "already" (a person recreated it before the apply) is not in it and is never dropped; a
record whose DDL never ran (killed between the journal and the server) finds nothing to drop. A
record cut short by a kill is the last one and is ignored (its DDL did not start).

A unique index over duplicate values cannot be built: the plan counts duplicates (honouring the
index's partial filter and sparseness) and leaves such an index out of the plan, in
``unresolved``, so a replace never drops the old index for a create that will fail. Should a
create fail anyway (the data changed since the plan), apply stops with a message that says what
was dropped and that ``recover undo`` puts it back (a rerun would fail the same way).

``validate`` (``--validate``, default on) runs per collection when the capability probe (one
``validate`` on the first collection) finds the command; FerretDB 1.24 and MongoDB both have it
(a server without it is said in the summary). A collection ``validate`` finds invalid cannot be
repaired here (storage repair is the server's ``repairDatabase``/resync, not a client's job): it
goes to ``unresolved`` with the way out (restore the collection from a backup with the
restore-and-promote recipe). ``verify`` names the corruption rules of the collections whose
indexes change. Reads only while planning.
"""

from __future__ import annotations

import os
from pathlib import Path

import bson
from bson.errors import InvalidBSON
from pymongo.errors import OperationFailure, PyMongoError

from ...backup.catalog import list_backups
from ...backup.manifest import read_manifest
from ...backup.repository import backup_dir
from ...errors import FluxaError
from ...policy.rules import CorruptionRule
from ...restore.executor import load_metadata
from ...mongo.connection import first_line
from ..model import Param, Plan, RecipeContext, RecipeSpec, register
from ..plans_store import fsync_dir, plan_dir as default_plan_dir

NAME = "indexes"
SOURCES = ("auto", "policy", "backup")
_NOT_OPTIONS = {"v", "key", "name", "ns", "background"}


def _key(spec_key) -> list[list]:
    return [[k, int(v) if isinstance(v, (int, float)) else v] for k, v in (spec_key.items() if hasattr(spec_key, "items")
                                                                           else spec_key)]


def _options(ix: dict) -> dict:
    out = {k: v for k, v in ix.items() if k not in _NOT_OPTIONS}
    for flag in ("unique", "sparse"):  # false is the absence of the option
        if out.get(flag) is False:
            out.pop(flag)
    return dict(sorted(out.items()))


def _name(key: list[list]) -> str:
    return "_".join(f"{k}_{v}" for k, v in key)


def _same(a: dict, b: dict) -> bool:
    return a["key"] == b["key"] and a["options"] == b["options"]


def _norm(ix: dict) -> dict:
    return {"name": ix["name"], "key": _key(ix["key"]), "options": _options(ix)}


def live_indexes(db, collection: str) -> list[dict]:
    return [_norm(ix) for ix in db[collection].list_indexes() if ix["name"] != "_id_"]


def _policy_indexes(policy, collection: str) -> list[dict]:
    out = []
    for _, rule in policy.iter_rules(collection):
        if isinstance(rule, CorruptionRule) and rule.enabled:
            for spec in rule.expected_indexes:
                key = [[k, int(v)] for k, v in spec.keys]
                out.append({"name": _name(key), "key": key, "options": {"unique": True} if spec.unique else {},
                            "from": f"policy rule {rule.id}"})
    return out


def _backup_indexes(store, db_name: str) -> tuple[str | None, dict[str, list[dict]]]:
    """(backup id, {collection: indexes}) of the newest complete full backup; (None, {}) if none."""
    if store is None:
        return None, {}
    for b in list_backups(store, db_name, "full"):
        if b.status not in ("complete", "verified"):
            continue
        directory = backup_dir(Path(b.repo), b.id)
        manifest = read_manifest(directory, b.manifest_sha256)
        out = {}
        for coll, entry in manifest["collections"].items():
            if entry.get("metadata"):
                meta = load_metadata(directory / entry["metadata"]["path"])
                out[coll] = [dict(_norm(ix), **{"from": f"backup {b.id}"}) for ix in meta.get("indexes", [])
                             if ix.get("name") != "_id_"]
        return b.id, out
    return None, {}


def expected_indexes(ctx: RecipeContext, collections: list[str], source: str) -> tuple[dict[str, list[dict]], str]:
    backup_id, from_backup = (None, {}) if source == "policy" else _backup_indexes(ctx.store, ctx.db.name)
    if source == "backup" and backup_id is None:
        raise FluxaError(f"--source backup: no complete full backup of {ctx.db.name!r} to read index definitions from",
                         "take one with `fluxa-integrity backup run`, or use --source policy")
    out: dict[str, list[dict]] = {}
    for coll in collections:
        want = [] if source == "backup" else _policy_indexes(ctx.policy, coll)
        theirs = from_backup.get(coll, [])
        for i, ix in enumerate(want):  # the backup's name and options for the same keys
            twin = next((b for b in theirs if b["key"] == ix["key"]
                         and b["options"].get("unique") == ix["options"].get("unique")), None)
            if twin is not None:
                want[i] = dict(twin, **{"from": f"{ix['from']} (as in {twin['from']})"})
        want += [b for b in theirs if not any(w["key"] == b["key"] and w["name"] == b["name"] for w in want)]
        out[coll] = want
    where = {"policy": "the policy", "backup": f"backup {backup_id}",
             "auto": "the policy" + (f" and backup {backup_id}" if backup_id else " (no full backup to compare with)")}
    return out, where[source]


def _duplicates(db, coll: str, want: dict) -> tuple[int, list]:
    """(how many key values more than one document shares, up to 3 of them) for a unique index."""
    match: dict = dict(want["options"].get("partialFilterExpression") or {})
    if want["options"].get("sparse"):
        match = {"$and": [match, {"$or": [{k: {"$exists": True}} for k, _ in want["key"]]}]} if match else \
            {"$or": [{k: {"$exists": True}} for k, _ in want["key"]]}
    pipeline = ([{"$match": match}] if match else []) + [
        {"$group": {"_id": {f"k{n}": f"${k}" for n, (k, _) in enumerate(want["key"])}, "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}}]
    dups = list(db[coll].aggregate(pipeline))
    return len(dups), [list(d["_id"].values()) for d in dups[:3]]


def _validate(db, collections: list[str]) -> tuple[list[str], str | None]:
    """(unresolved lines, a note when the server has no validate)."""
    lines: list[str] = []
    for n, coll in enumerate(collections):
        try:
            verdict = db.command("validate", coll)
        except OperationFailure as exc:
            if n == 0 and (exc.code in (59, 115) or "no such" in str(exc).lower() or "not implemented" in str(exc).lower()):
                return [], f"the server has no validate command ({exc.details.get('errmsg', exc) if exc.details else exc})"
            lines.append(f"{coll}: validate failed: {exc.details.get('errmsg', exc) if exc.details else exc}")
            continue
        if not verdict.get("valid", True) or verdict.get("errors") or verdict.get("corruptRecords"):
            errors = "; ".join(str(e) for e in (verdict.get("errors") or [])[:3]) or "invalid"
            lines.append(f"{coll}: the server's validate reports corruption ({errors}); not repairable here - restore "
                         "the collection from a backup (`recover plan restore-and-promote`)")
    return lines, None


def build(ctx: RecipeContext, collection: list[str] | None = None, source: str = "auto", validate: bool = True) -> Plan:
    if source not in SOURCES:
        raise FluxaError(f"--source {source!r} is not one of {', '.join(SOURCES)}", "auto: the policy and the newest backup")
    live_names = set(ctx.db.list_collection_names())
    colls = list(collection or [])
    if not colls:
        colls = [c for c in ctx.policy.collections if c in live_names]
    unknown = [c for c in colls if c not in ctx.policy.collections and c not in live_names]
    if unknown:
        raise FluxaError(f"no collection {unknown[0]!r} in the policy or in {ctx.db.name!r}",
                         "collections: " + ", ".join(sorted(set(ctx.policy.collections) | live_names)))
    expected, where = expected_indexes(ctx, colls, source)
    changes: list[dict] = []
    unresolved: list[str] = []
    for coll in colls:
        if coll not in live_names:
            if expected.get(coll):
                unresolved.append(f"{coll}: the collection is absent from live; restore it first, then rebuild its indexes")
            continue
        live = live_indexes(ctx.db, coll)
        for want in expected.get(coll, []):
            if any(_same(ix, want) for ix in live):
                continue
            named = next((ix for ix in live if ix["name"] == want["name"]), None)
            action = "replace" if named is not None else "create"
            if want["options"].get("unique"):
                n, some = _duplicates(ctx.db, coll, want)
                if n:
                    unresolved.append(f"{coll}: unique index {want['name']} {want['key']} cannot be built: {n} value(s) "
                                      f"held by more than one document (e.g. {', '.join(map(repr, some))}); not "
                                      f"planned{' (the live index of that name is kept)' if named else ''} - resolve "
                                      "the duplicates, then plan again")
                    continue
            changes.append({"collection": coll, "action": action, "name": want["name"], "key": want["key"],
                            "options": want["options"], "live": named,
                            "reason": f"{'differs from' if named else 'missing, expected by'} {want['from']}"})
        for ix in live:
            if not any(_same(ix, w) or ix["name"] == w["name"] for w in expected.get(coll, [])):
                unresolved.append(f"{coll}: index {ix['name']} {ix['key']} is not expected by {where}: kept")
    note = None
    if validate:
        lines, note = _validate(ctx.db, [c for c in colls if c in live_names])
        unresolved += lines
    touched = {c["collection"] for c in changes}
    verify = [r.id for c, r in ctx.policy.iter_rules() if c in touched and isinstance(r, CorruptionRule) and r.enabled
              and r.expected_indexes]
    listed = "".join(f"; {c['collection']}: {c['action']} {c['name']} {c['key']}"
                     f"{' ' + str(c['options']) if c['options'] else ''} ({c['reason']})" for c in changes)
    summary = (f"{len(changes)} index change(s) against {where}{listed}"
               + (f"; {note}" if note else "; validate run" if validate else ""))
    params = {"collection": colls, "source": source, "validate": validate, "index_changes": changes}
    return Plan(NAME, ctx.db.name, params, ctx.now, [], verify, unresolved, summary)


def _index_args(c: dict) -> tuple[list[tuple], dict]:
    return [(k, v) for k, v in c["key"]], {"name": c["name"], **c["options"]}


JOURNAL_FILE = "index-journal.bson"


def _journal_path(plan: Plan, plan_dir) -> Path:
    return Path(plan_dir if plan_dir is not None else default_plan_dir(plan.id)) / JOURNAL_FILE


def _journal(path: Path, record: dict) -> None:
    """Append one record, on disk (file and directory fsynced) before the DDL it announces."""
    new = not path.exists()
    with open(path, "ab") as f:
        f.write(bson.encode(record))
        f.flush()
        os.fsync(f.fileno())
    if new:
        fsync_dir(path.parent)


def journaled(path: Path) -> dict[int, dict]:
    """Index change position -> what the apply did to it: the first record, with the definition a
    replace dropped (a rerun after a failed create journals the same change as a create)."""
    out: dict[int, dict] = {}
    if not path.exists():
        return out
    data = path.read_bytes()
    pos = 0
    while pos + 4 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "little")
        if size < 5 or pos + size > len(data):
            break  # cut short by a kill: its DDL never started
        try:
            rec = bson.decode(data[pos:pos + size])
        except InvalidBSON:
            break
        pos += size
        first = out.setdefault(rec["i"], rec)
        if first.get("dropped") is None and rec.get("dropped") is not None:
            first["dropped"] = rec["dropped"]
    return out


def apply_index_changes(db, plan: Plan, plan_dir=None) -> dict:
    """Create (or drop and create) each planned index, journaled first; idempotent.
    {"<coll> (indexes)": counts}."""
    path = _journal_path(plan, plan_dir)
    counts: dict[str, dict] = {}
    for i, c in enumerate(plan.params.get("index_changes") or []):
        n = counts.setdefault(f"{c['collection']} (indexes)", {"created": 0, "replaced": 0, "already": 0,
                                                                "conflicts": 0})
        live = live_indexes(db, c["collection"])
        target = {"key": c["key"], "options": c["options"]}
        if any(_same(ix, target) for ix in live):
            n["already"] += 1
            continue
        named = next((ix for ix in live if ix["name"] == c["name"]), None)
        if named is not None and not (c["live"] is not None and _same(named, c["live"])):
            n["conflicts"] += 1  # changed by someone since the plan: left alone
            continue
        _journal(path, {"i": i, "collection": c["collection"], "action": "replace" if named else "create",
                        "name": c["name"], "key": c["key"], "options": c["options"], "dropped": named})
        if named is not None:
            db[c["collection"]].drop_index(c["name"])
        key, opts = _index_args(c)
        try:
            db[c["collection"]].create_index(key, **opts)
        except PyMongoError as exc:
            dropped = (f"; the index it replaces ({c['name']} {named['key']}) was dropped" if named is not None else "")
            raise FluxaError(f"creating index {c['name']} {c['key']} on {c['collection']} failed: {first_line(exc)}"
                             f"{dropped}. A rerun fails the same way until the data allows the index: put back what "
                             f"this plan changed with `fluxa-integrity recover undo {plan.id}`",
                             f"`fluxa-integrity recover undo {plan.id} --yes`") from exc
        n["replaced" if named is not None else "created"] += 1
    return counts


def undo_index_changes(db, plan: Plan, plan_dir=None) -> dict:
    """Undo exactly the DDL the apply journaled: drop an index it created, put back one it
    replaced. An index the apply found already there is not touched. Idempotent."""
    changes = plan.params.get("index_changes") or []
    counts: dict[str, dict] = {}
    for i, rec in sorted(journaled(_journal_path(plan, plan_dir)).items(), reverse=True):
        c = changes[i] if i < len(changes) else rec
        coll = c["collection"]
        n = counts.setdefault(f"{coll} (indexes)", {"dropped": 0, "put back": 0, "already": 0, "conflicts": 0})
        target = {"key": c["key"], "options": c["options"]}
        live = live_indexes(db, coll)
        named = next((ix for ix in live if ix["name"] == c["name"]), None)
        if named is not None and not _same(named, target) and not (rec.get("dropped") and _same(named, rec["dropped"])):
            n["conflicts"] += 1  # someone changed it since the apply: left alone
            continue
        mine = named is not None and _same(named, target)
        if mine:
            db[coll].drop_index(c["name"])
            n["dropped"] += 1
        old = rec.get("dropped")
        if old is not None and not any(_same(ix, old) for ix in live_indexes(db, coll)):
            key, opts = _index_args(old)
            db[coll].create_index(key, **opts)
            n["put back"] += 1
        elif not mine:
            n["already"] += 1
    return counts


register(RecipeSpec(
    name=NAME,
    feature="S29",
    summary="Rebuild missing or different indexes (policy and newest backup), run validate, report what cannot be repaired.",
    params=[
        Param("collection", "Only these collections (repeatable; default: every policy collection in live).",
              multiple=True),
        Param("source", "Where the expected indexes come from: auto (policy + newest backup), policy or backup.",
              default="auto"),
        Param("validate", "Run the server's validate on each collection where the server has it.", type=bool,
              default=True),
    ],
    build=build,
    apply_extra=apply_index_changes,
    undo_extra=undo_index_changes,
))
