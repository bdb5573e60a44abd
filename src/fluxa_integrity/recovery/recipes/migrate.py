"""Recipe ``migrate`` (S30): a schema migration the policy declares (policy/migrations.py), run
forward as a corrective migration or rolled back to a point in time, as a plan like any other.

``--direction forward`` (the default): every document of the migration's collection that a step
still applies to - a field to add that is absent, a field to rename, convert or remove that is
there, a version field not at the declared value - gets the steps in order. ``add_field`` never
overwrites a value the document has; ``count_children`` counts the children now (one query per
1000 parents), so a counter added late is right as of the plan (the engine's conflict check
catches a parent changed before apply). A value ``convert`` cannot change without loss, or a
``rename`` onto an existing field, leaves the document in ``unresolved``. When the migration names
its ``rule``, the after-image must pass that rule (checks/document_rules.compile_migration_rule)
or the document goes to ``unresolved``, and the plan verifies that rule.

``--direction rollback --as-of T``: the fields the migration's steps touch, and only those, are
put back to their values at T in every document that existed at T (recovery/document_history.py:
the newest full backup ended by T plus the oplog up to T, document by document - no database is
restored). A field absent at T is removed; a field that comes back takes the position it had at
T (before the key that followed it then), so a document untouched since T except by the migration
equals its copy at T byte for byte. Documents created after T are left as they are (counted in
``unresolved``: a rollback cannot say what they were). Other fields changed since T are kept. A
rollback verifies nothing (after it the migration rule flags the documents by design).

Reads only. Failure: an unknown migration, a rollback without ``--as-of`` or with a future one,
no backup before T or a broken oplog window up to T: FluxaError before any plan is made.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import datetime, timezone

import bson

from ...checks.document_rules import compile_migration_rule
from ...checks.values import MISSING, get_path, short_repr, type_matches
from ...errors import FluxaError
from ...policy.migrations import AddField, Convert, Migration, RemoveField, Rename, SetVersion
from ..document_history import NoHistory, document_history, key
from ..field_values import NO_VALUE, coerce, put, set_path, unset_path
from ..model import Change, Param, Plan, RecipeContext, RecipeSpec, register

NAME = "migrate"
UTC = timezone.utc
BATCH = 1000


def _show(v) -> str:
    return "(missing)" if v is MISSING else repr(short_repr(v, 40))


def _migration(policy, migration_id: str) -> Migration:
    try:
        return policy.migration(migration_id)
    except KeyError:
        raise FluxaError(f"the policy declares no migration {migration_id!r}",
                         "declared: " + (", ".join(m.id for m in policy.migrations) or "(none)")
                         + " (docs/policy.md, `migrations:`)") from None


def _pending(step, doc: dict) -> bool:
    """Would this step change the document?"""
    v = get_path(doc, step.field)
    if isinstance(step, AddField):
        return v is MISSING
    if isinstance(step, SetVersion):
        return v != step.value or v is MISSING
    if isinstance(step, Convert):
        return v is not MISSING and v is not None and not type_matches(v, [step.to])
    return v is not MISSING  # rename, remove_field


def _child_counts(db, parents: list, spec) -> Counter:
    counts: Counter = Counter()
    for i in range(0, len(parents), BATCH):
        chunk = parents[i:i + BATCH]
        for d in db[spec.collection].find({spec.field: {"$in": chunk}}, {spec.field: 1, "_id": 0}):
            counts[bson.encode({"v": d[spec.field]})] += 1
    return counts


def _forward_doc(mig: Migration, doc: dict, counts: dict[int, Counter]) -> tuple[dict, list[str], list[str], str | None]:
    """(after, changed fields, reason parts, why unresolved)"""
    new = copy.deepcopy(doc)
    fields, parts = [], []
    for n, step in enumerate(mig.steps):
        if not _pending(step, new):
            continue
        old = get_path(new, step.field)
        if isinstance(step, AddField):
            if step.count_children is not None:
                value = counts[n][bson.encode({"v": doc["_id"]})]
                how = f"the count of {step.count_children.collection}.{step.count_children.field}"
            else:
                value, how = copy.deepcopy(step.value), "the declared value"
            set_path(new, step.field, value, before=step.before)
            fields.append(step.field)
            parts.append(f"{step.field} added = {_show(value)} ({how})")
        elif isinstance(step, Rename):
            if get_path(new, step.to) is not MISSING:
                return doc, [], [], f"rename {step.field} -> {step.to}: {step.to} already holds a value"
            if "." in step.field or "." in step.to:
                unset_path(new, step.field)
                set_path(new, step.to, old)
            else:  # the new name takes the old key's position
                items = list(new.items())
                new.clear()
                new.update((step.to if k == step.field else k, v) for k, v in items)
            fields += [step.field, step.to]
            parts.append(f"{step.field} renamed to {step.to}")
        elif isinstance(step, Convert):
            value = coerce(old, [step.to], widen=True)
            if value is NO_VALUE:
                return doc, [], [], f"{step.field} = {_show(old)} does not convert to {step.to} without loss"
            set_path(new, step.field, value)
            fields.append(step.field)
            parts.append(f"{step.field} {_show(old)} converted to {step.to} {_show(value)}")
        elif isinstance(step, RemoveField):
            unset_path(new, step.field)
            fields.append(step.field)
            parts.append(f"{step.field} removed")
        elif isinstance(step, SetVersion):
            set_path(new, step.field, step.value)
            fields.append(step.field)
            parts.append(f"{step.field} {_show(old)} -> {step.value}")
    return new, fields, parts, None


def _data_class(policy, collection: str, fields: list[str]) -> str | None:
    classes = [dc for dc in (policy.data_class_for(collection, f) for f in fields) if dc is not None]
    return min(classes, key=lambda dc: dc.recovery_priority).name if classes else None


def _forward(ctx: RecipeContext, mig: Migration) -> tuple[list[Change], list[str], list[str]]:
    coll = ctx.db[mig.collection]
    pending = [d for d in coll.find({}) if any(_pending(s, d) for s in mig.steps)]
    counts: dict[int, Counter] = {}
    for n, step in enumerate(mig.steps):
        if isinstance(step, AddField) and step.count_children is not None:
            lacking = [d["_id"] for d in pending if get_path(d, step.field) is MISSING]
            counts[n] = _child_counts(ctx.db, lacking, step.count_children)
    rule = None
    if mig.rule is not None:
        rule = compile_migration_rule(ctx.policy.rule(mig.rule), mig.collection)
    changes, unresolved = [], []
    for doc in pending:
        new, fields, parts, why = _forward_doc(mig, doc, counts)
        label = f"{mig.collection}/{doc['_id']}"
        if why is not None:
            unresolved.append(f"{label}: {why}")
            continue
        if rule is not None and (left := rule(new)):
            unresolved.append(f"{label}: after migration {mig.id} still {left[0][2]} ({mig.rule}); not planned")
            continue
        changes.append(Change(mig.collection, "update", doc["_id"], doc, new,
                              f"migration {mig.id} forward: " + "; ".join(parts),
                              _data_class(ctx.policy, mig.collection, fields), fields))
    return changes, unresolved, [mig.rule] if mig.rule else []


def _next_key(doc_then: dict, field: str, new: dict) -> str | None:
    """The first key after ``field`` in the document as it was that the new document holds."""
    keys = list(doc_then)
    for k in keys[keys.index(field) + 1:]:
        if k in new:
            return k
    return None


def _rollback(ctx: RecipeContext, mig: Migration, as_of: datetime) -> tuple[list[Change], list[str], str]:
    live = list(ctx.db[mig.collection].find({}))
    try:
        hist = document_history(ctx.store, ctx.db.client, ctx.db.name, mig.collection, [d["_id"] for d in live],
                                until=as_of, need_oplog=True)
    except NoHistory as exc:
        raise FluxaError(f"cannot roll migration {mig.id} back to {as_of.isoformat()}: {exc.message}",
                         exc.hint) from None
    touched = mig.touched_fields()
    changes, newer = [], 0
    for doc in live:
        then = hist.at(key(doc["_id"]), as_of)
        if then is None or then.doc is None:
            newer += 1
            continue
        new = copy.deepcopy(doc)
        fields, parts = [], []
        for f in touched:
            old, now = get_path(then.doc, f), get_path(doc, f)
            if old is MISSING and now is MISSING or (old is not MISSING and now is not MISSING and
                                                     bson.encode({"v": old}) == bson.encode({"v": now})):
                continue
            if old is MISSING:
                unset_path(new, f)
            elif "." not in f and f not in new:
                set_path(new, f, copy.deepcopy(old), before=_next_key(then.doc, f, new))
            else:
                put(new, f, copy.deepcopy(old))
            fields.append(f)
            parts.append(f"{f} {_show(now)} -> {_show(old)}")
        if fields:
            changes.append(Change(mig.collection, "update", doc["_id"], doc, new,
                                  f"rollback of migration {mig.id} to {as_of.isoformat()} ({then.source}): "
                                  + "; ".join(parts), _data_class(ctx.policy, mig.collection, fields), fields))
    unresolved = [f"{newer} {mig.collection} document(s) did not exist at {as_of.isoformat()}: left as they are"
                  ] if newer else []
    source = f"backup {hist.backup_id} + {hist.oplog_entries} oplog entries up to {as_of.isoformat()}"
    return changes, unresolved, source


def build(ctx: RecipeContext, migration: str, direction: str = "forward", as_of: datetime | None = None) -> Plan:
    mig = _migration(ctx.policy, migration)
    if direction not in ("forward", "rollback"):
        raise FluxaError(f"--direction {direction!r} is neither forward nor rollback", "forward | rollback")
    params = {"migration": migration, "direction": direction, "as_of": as_of}
    if direction == "forward":
        if as_of is not None:
            raise FluxaError("--as-of is for --direction rollback", "a forward migration works on the live data")
        changes, unresolved, verify = _forward(ctx, mig)
        summary = f"migration {mig.id} forward: {len(changes)} {mig.collection} document(s) to migrate"
    else:
        if as_of is None:
            raise FluxaError("--direction rollback needs --as-of", "the moment to roll the touched fields back to, "
                             "e.g. --as-of 2026-11-25T21:40:00Z (before the migration ran)")
        as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        if as_of > ctx.now:
            raise FluxaError(f"--as-of {as_of.isoformat()} is in the future", "choose a moment before the migration")
        changes, unresolved, source = _rollback(ctx, mig, as_of)
        verify = []
        summary = (f"migration {mig.id} rolled back to {as_of.isoformat()}: {len(changes)} {mig.collection} "
                   f"document(s), fields {', '.join(mig.touched_fields())} ({source})")
    if unresolved:
        summary += f", {len(unresolved)} unresolved"
    return Plan(NAME, ctx.db.name, params, ctx.now, changes, verify, unresolved, summary)


register(RecipeSpec(
    name=NAME,
    feature="S30",
    summary="Run a migration the policy declares forward (corrective) or roll its fields back to a point in time.",
    params=[
        Param("migration", "The id of a migration in the policy's `migrations:` section.", required=True),
        Param("direction", "forward (apply the declared steps where missing) or rollback (fields back to --as-of).",
              default="forward"),
        Param("as-of", "For rollback: the moment (ISO-8601, UTC) whose field values come back.", type=datetime),
    ],
    build=build,
))
