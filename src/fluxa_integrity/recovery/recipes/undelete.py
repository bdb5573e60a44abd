"""Recipe ``undelete`` (S28): bring back what was deleted since a time - soft deletes cleared,
hard-deleted documents restored document by document - as the playbook's Data Loss recovery
("recover from soft-deleted records", "restore specific data from backups") describes.

Soft (``--soft``; the collection's deletions rule names a ``soft_delete_field``, Fluxa:
``users.deletedAt``): every document whose marker is at or after ``--since`` (any marker without
``--since``) gets it removed - an ``update`` whose after-image is the document without the field,
which is the document as it was before the soft delete appended it. The children soft-deleted
with it come back in the same plan: documents of collections whose reference rules point at this
collection and whose own deletions rule names a soft-delete field, with a marker within the
collection's ``undelete.cascade_window`` of the parent's.

Hard (``--hard``): the documents deleted since ``--since`` according to the audit log (the
collection's deletions rule: ``delete`` entries of this collection) and the oplog (archived slices
and the live oplog: delete entries of ``<db>.<collection>``). Each comes back as an ``insert`` of,
in order of preference: the audit entry's ``before`` image; else its last state before the
deletion from the newest backup before it plus the oplog (recovery/document_history.py in its
tolerant mode, no database restore). What is found nowhere goes to ``unresolved``. A document that exists again is
left alone. Parents' counters (counter rules) are set to the count after the apply.

Neither flag: both, as far as the policy allows (soft only where a soft-delete field exists).
``--ids`` narrows either to those ``_id``s. ``verify``: the collection's deletions rules for soft
deletes (they report soft-deleted documents), the counter rules for hard ones (the audit entries
stay: they are history, and the deletions rule keeps reporting them for its lookback).

Reads only. Failure: an unknown collection, ``--soft`` on a collection without a soft-delete
field, or ``--hard`` with neither an audit log nor an oplog to read is a FluxaError.
"""

from __future__ import annotations

from datetime import datetime

from ...mongo.by_id import find_by_ids
from ...errors import FluxaError
from ...policy.durations import parse_duration
from ...policy.rules import DeletionsRule, ReferenceRule
from ..counters import counter_changes
from ..log_sources import aware, parse_id, parse_time
from ..document_history import deletes_since, document_history, key as id_key
from ..model import Change, Param, Plan, RecipeContext, RecipeSpec, register

NAME = "undelete"
CHUNK = 1000


def _deletion_rules(policy, coll: str) -> list[DeletionsRule]:
    return [r for _, r in policy.iter_rules(coll) if isinstance(r, DeletionsRule)]


def _soft_field(policy, coll: str) -> tuple[str | None, str | None]:
    for r in _deletion_rules(policy, coll):
        if r.soft_delete_field:
            return r.soft_delete_field, r.id
    return None, None


def _when(v) -> str:
    return f"{aware(v):%Y-%m-%d %H:%M:%S}Z" if isinstance(v, datetime) else repr(v)


def build(ctx: RecipeContext, collection: str, since: datetime | None = None, ids: list[str] | None = None,
          hard: bool = False, soft: bool = False) -> Plan:
    policy, db = ctx.policy, ctx.db
    if collection not in policy.collections:
        raise FluxaError(f"the policy has no collection {collection!r}",
                         "collections: " + ", ".join(policy.collections))
    since = parse_time(since, "--since")
    wanted = {id_key(parse_id(i)) for i in ids} if ids else None
    field, _ = _soft_field(policy, collection)
    if soft and field is None:
        raise FluxaError(f"{collection} has no soft-delete field in the policy",
                         "name it in the collection's deletions rule (soft_delete_field), or use --hard")
    do_soft = soft or (not hard and field is not None)
    do_hard = hard or not soft
    changes: list[Change] = []
    verify: list[str] = []
    unresolved: list[str] = []
    n_soft = n_hard = 0
    if do_soft:
        soft_changes, rules = _soft(ctx, collection, since, wanted)
        changes += soft_changes
        verify += rules
        n_soft = len(soft_changes)
    if do_hard:
        hard_changes, rules, notes = _hard(ctx, collection, since, wanted)
        n_hard = sum(1 for c in hard_changes if c.op == "insert")
        changes += hard_changes
        verify += [r for r in rules if r not in verify]
        unresolved += notes
    window = f" since {since:%Y-%m-%d %H:%M:%S}Z" if since else ""
    return Plan(recipe=NAME, database=db.name, params={}, source_point=ctx.now, changes=changes, verify=verify,
                unresolved=unresolved,
                summary=f"{collection}{window}: {n_soft} soft delete(s) cleared (children included), "
                        f"{n_hard} hard-deleted document(s) brought back, {len(unresolved)} not found")


# --- soft ------------------------------------------------------------------------------------

def _children(policy, coll: str) -> list[tuple[str, str, str, str]]:
    """(child collection, its reference field, its soft-delete field, its deletions rule id)."""
    out = []
    for child, r in policy.iter_rules():
        if isinstance(r, ReferenceRule) and r.to == coll and child != coll:
            f, rid = _soft_field(policy, child)
            if f:
                out.append((child, r.field, f, rid))
    return out


def _clear(ctx, coll: str, doc: dict, field: str, reason: str) -> Change:
    after = {k: v for k, v in doc.items() if k != field}
    dc = ctx.policy.data_class_for(coll, field)
    return Change(coll, "update", doc["_id"], doc, after, reason, dc.name if dc else None, [field])


def _soft(ctx, coll: str, since, wanted) -> tuple[list[Change], list[str]]:
    field, rule_id = _soft_field(ctx.policy, coll)
    q: dict = {field: {"$gte": since} if since else {"$ne": None, "$exists": True}}
    changes, rules = [], [rule_id]
    window = parse_duration(ctx.policy.collections[coll].undelete.cascade_window)
    children = _children(ctx.policy, coll)
    for doc in ctx.db[coll].find(q).sort("_id", 1):
        if wanted is not None and id_key(doc["_id"]) not in wanted:
            continue
        t = doc.get(field)
        changes.append(_clear(ctx, coll, doc, field, f"soft-deleted at {_when(t)} ({coll}.{field})"))
        if not isinstance(t, datetime):
            continue
        for child, ref, cfield, crule in children:
            lo, hi = aware(t) - window, aware(t) + window
            for c in ctx.db[child].find({ref: doc["_id"], cfield: {"$gte": lo, "$lte": hi}}).sort("_id", 1):
                changes.append(_clear(ctx, child, c, cfield, f"soft-deleted at {_when(c.get(cfield))} with "
                                      f"{coll} {doc['_id']} (within {window} of its {field})"))
                if crule not in rules:
                    rules.append(crule)
    return changes, rules


# --- hard ------------------------------------------------------------------------------------

def _audited(ctx, coll: str, since, wanted) -> dict[bytes, dict]:
    """{key: {"_id", "before", "when", "audit"}} newest audit delete per document."""
    out: dict[bytes, dict] = {}
    for r in _deletion_rules(ctx.policy, coll):
        if not r.audit_collection:
            continue
        q: dict = {r.audit_operation_field: "delete", r.audit_collection_field: coll}
        if since:
            q[r.audit_timestamp_field] = {"$gte": since}
        for a in ctx.db[r.audit_collection].find(q).sort(r.audit_timestamp_field, 1):
            _id = a.get(r.audit_document_field)
            if _id is None or (wanted is not None and id_key(_id) not in wanted):
                continue
            before = a.get("before")
            out[id_key(_id)] = {"_id": _id, "when": a.get(r.audit_timestamp_field), "audit": a.get("_id"),
                                "actor": a.get("actor"),
                                "before": before if isinstance(before, dict) and before.get("_id") == _id else None}
    return out


def _hard(ctx, coll: str, since, wanted) -> tuple[list[Change], list[str], list[str]]:
    db = ctx.db
    audited = _audited(ctx, coll, since, wanted)
    gaps: list[str] = []  # what the oplog and the backups could not tell (tolerant reading)
    oplog = deletes_since(ctx.store, db.client, db.name, coll, since, until=ctx.now, gaps=gaps)
    if wanted is not None:
        oplog = {k: v for k, v in oplog.items() if k in wanted}
    deleted: dict[bytes, dict] = dict(audited)
    for k, (_id, wall, ts) in oplog.items():
        deleted.setdefault(k, {"_id": _id, "when": wall, "audit": None, "before": None})
        deleted[k]["ts"] = ts
    ctx.tick("deletions found", len(deleted), len(deleted))
    # documents that exist again are left alone
    keys = list(deleted)
    for i in range(0, len(keys), CHUNK):
        chunk = [deleted[k]["_id"] for k in keys[i:i + CHUNK]]
        for d in find_by_ids(db[coll], chunk, {"_id": 1}):
            deleted.pop(id_key(d["_id"]), None)
    need = [d["_id"] for d in deleted.values() if d["before"] is None]
    found: dict[bytes, dict] = {}
    origin: dict[bytes, str] = {}
    if need:
        times = [aware(d["when"]) for d in deleted.values() if d["before"] is None and isinstance(d["when"], datetime)]
        hist = document_history(ctx.store, db.client, db.name, coll, need, until=ctx.now,
                                snapshot_before=min(times) if times else ctx.now, gaps=gaps)
        for k in hist.versions:
            last = hist.before_final_delete(k)
            if last is not None:
                found[k], origin[k] = last
    dc = ctx.policy.data_class_for(coll)
    changes: list[Change] = []
    unresolved: list[str] = []
    for k, d in sorted(deleted.items(), key=lambda kv: kv[0]):
        how = (f"audit entry {d['audit']} (deleted by {d.get('actor')} at {_when(d['when'])})" if d["audit"]
               else f"oplog delete at {_when(d['when'])}")
        if d["before"] is not None:
            doc, src = d["before"], "the audit entry's before-image"
        elif k in found:
            doc, src = found[k], origin[k]
        else:
            unresolved.append(f"{coll} {d['_id']}: deleted ({how}) but found in no audit before-image, "
                              f"backup or oplog" + (f" ({'; '.join(dict.fromkeys(gaps))})" if gaps else ""))
            continue
        doc = {"_id": doc["_id"], **{f: v for f, v in doc.items() if f != "_id"}}
        changes.append(Change(coll, "insert", d["_id"], None, doc, f"{how}; brought back from {src}",
                              dc.name if dc else None))
    counters, rules = counter_changes(db, ctx.policy, coll, [c.after for c in changes], "brought back")
    return changes + counters, rules, unresolved


register(RecipeSpec(
    name=NAME, feature="S28",
    summary="Bring back deleted documents: clear soft deletes since T (with their children), restore hard deletes "
            "from the audit log, backups and the oplog.",
    params=[
        Param("collection", "The collection whose deleted documents come back (e.g. users, messages).", required=True),
        Param("since", "Only deletions at or after this time (default: every deletion found)",
              type=datetime),
        Param("ids", "Only these _ids (24-hex ObjectIds or plain values).", multiple=True),
        Param("hard", "Only hard-deleted documents (audit log, oplog, backups); neither --hard nor --soft: both.",
              type=bool, default=False),
        Param("soft", "Only soft deletes (the policy's soft-delete field); neither --hard nor --soft: both.",
              type=bool, default=False),
    ],
    build=build,
))
