"""Recipe ``sync`` (S31): re-run the synchronisation of a secondary system from the primary.

For each sync rule of the policy (or the one ``--rule`` names) it reads both sides whole - the
primary collection projected on the rule's ``fields`` (+ its ``timestamp_field``), the secondary
collection as it is - and plans, against ``<secondary_db>.<secondary_collection>``:

- an ``insert`` for every primary id the secondary lacks (``_id`` + the rule's fields, in the
  policy's order - the shape the sync writes);
- for every id only the secondary has: a ``delete`` (``extra: delete``, the default) or a line in
  ``unresolved`` (``extra: report``);
- for every id whose synced fields differ (type-exact: 1 and 1.0 differ), an ``update`` decided by
  the rule's ``winner``: ``primary`` writes the primary's values into the secondary document
  (keeping the secondary's own other fields in place); ``newest`` does the same unless the
  secondary's ``timestamp_field`` is later, in which case the secondary's values go to the
  primary document instead. The reason of each such change names the winner rule and both stamps;
- one change to ``<secondary_db>.<sync_state_collection>``: ``sync_state_field`` becomes the
  plan's read point (``ctx.now``, milliseconds), or the newest ``timestamp_field`` the sync carried
  if that is later (a writer with a fast clock must not leave its documents "changed after the
  sync" for ever). A real sync records when it read the primary; a primary document written after
  the plan is therefore still reported by the sync check until the next sync, which is right.
  When the two sides already agree, the state changes only if a primary document is stamped
  after it (the sync check's "changed after sync"): an idle re-run plans nothing.

``verify`` names the sync rules, so verifying the plan re-runs the sync check (missing, extra and
changed-after-sync). Memory: both sides' synced fields, one dict per document (fine to a few
million users). Failure: nothing is written here (a recipe only reads); a sync rule whose
secondary system does not exist, or a dotted name in ``fields``, is a FluxaError naming the rule
when ``--rule`` named it, else a line in ``unresolved`` (the sync check skips it too).
"""

from __future__ import annotations

from datetime import datetime, timezone

import bson
from bson.codec_options import CodecOptions

from ...errors import FluxaError
from ...policy.rules import SyncRule
from ..model import Change, Param, Plan, RecipeContext, RecipeSpec, register

UTC = timezone.utc
_AWARE = CodecOptions(tz_aware=True)


def _aware(v):
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def _ms(t: datetime) -> datetime:
    """BSON keeps milliseconds: the after-image must be what the server will hold."""
    t = _aware(t)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _key(_id) -> bytes:
    return bson.encode({"_id": _id})


def _same(a: dict, b: dict, f: str) -> bool:
    """Field ``f`` present in both or neither, with the same BSON bytes (type-exact)."""
    if (f in a) != (f in b):
        return False
    return f not in a or bson.encode({"v": a[f]}) == bson.encode({"v": b[f]})


def _sync_rules(policy, rule_id: str | None) -> list[tuple[str, SyncRule]]:
    rules = [(c, r) for c, r in policy.iter_rules() if isinstance(r, SyncRule)]
    if rule_id is None:
        return [(c, r) for c, r in rules if r.enabled]
    for c, r in rules:
        if r.id == rule_id:
            return [(c, r)]
    known = ", ".join(r.id for _, r in rules) or "(the policy has none)"
    raise FluxaError(f"no sync rule {rule_id!r} in the policy", f"sync rules: {known}")


def _stamp(doc: dict | None, f: str):
    v = _aware(doc.get(f)) if doc is not None else None
    return v if isinstance(v, datetime) else None


def _render(t) -> str:
    return t.isoformat(timespec="milliseconds") if isinstance(t, datetime) else "none"


def _plan_rule(ctx: RecipeContext, coll: str, rule: SyncRule, changes: list[Change], unresolved: list[str],
               named: bool) -> None:
    app = ctx.db.name
    sec_name = rule.secondary_db.replace("{db}", app)
    sec_db = ctx.db.client.get_database(sec_name, codec_options=_AWARE)
    prim = ctx.db.client.get_database(app, codec_options=_AWARE)[coll]
    sec = sec_db[rule.secondary_collection]
    target = f"{sec_name}.{rule.secondary_collection}"
    state_target = f"{sec_name}.{rule.sync_state_collection}"

    dotted = [f for f in rule.fields or () if "." in f or f == "_id"]
    problem = None
    if dotted:
        problem = (f"rule {rule.id}: fields {dotted} are not top-level fields besides _id",
                   "list the top-level fields the secondary keeps (a sub-document is copied whole)")
    elif rule.secondary_collection not in sec_db.list_collection_names() and \
            sec_db[rule.sync_state_collection].find_one({"_id": rule.sync_state_id}) is None:
        problem = (f"rule {rule.id}: no secondary system at {target} (and no {rule.sync_state_collection} "
                   f"{rule.sync_state_id!r})", f"check the rule's secondary_db ({rule.secondary_db!r}) "
                   "and secondary_collection")
    if problem:
        if named:
            raise FluxaError(*problem)
        unresolved.append(problem[0] + "; skipped")
        return

    ts = rule.timestamp_field
    proj = None if rule.fields is None else {f: 1 for f in [*rule.fields, ts]}
    primary: dict[bytes, dict] = {}
    for i, d in enumerate(prim.find({}, proj, batch_size=5000), 1):
        primary[_key(d["_id"])] = d
        if i % 5000 == 0:
            ctx.tick(f"{coll} (primary)", i)
    secondary: dict[bytes, dict] = {}
    for i, d in enumerate(sec.find({}, batch_size=5000), 1):
        secondary[_key(d["_id"])] = d
        if i % 5000 == 0:
            ctx.tick(f"{target} (secondary)", i)
    synced = list(rule.fields) if rule.fields is not None else None
    dc_prim = ctx.policy.data_class_for(coll)
    dc_prim = dc_prim.name if dc_prim is not None else None
    dc_sec = None  # the secondary copy is derived data (docs/policy.md): no class covers it

    def shaped(p: dict) -> dict:
        """The secondary's document for primary document ``p``: _id + the synced fields."""
        if synced is None:
            return dict(p)
        out = {"_id": p["_id"]}
        out.update((f, p[f]) for f in synced if f in p)
        return out

    def merged(base: dict, src: dict) -> tuple[dict, list[str]]:
        """``base`` with the synced fields taken from ``src`` (in place, others kept); changed names."""
        if synced is None:
            return dict(src), sorted(set(base) ^ set(src) | {f for f in set(base) & set(src) if not _same(base, src, f)})
        out, touched = dict(base), []
        for f in synced:
            if _same(base, src, f):
                continue
            touched.append(f)
            if f in src:
                out[f] = src[f]
            else:
                out.pop(f, None)
        return out, touched

    first = len(changes)
    newest: datetime | None = None
    for k, p in primary.items():
        t = _stamp(p, ts)
        if t is not None and (newest is None or t > newest):
            newest = t
        s = secondary.get(k)
        if s is None:
            changes.append(Change(target, "insert", p["_id"], None, shaped(p),
                                  f"{rule.id}: {coll} {p['_id']} is missing from {target}", dc_sec,
                                  [f for f in (synced or p) if f != "_id"]))
            continue
        fields = synced if synced is not None else sorted((set(p) | set(s)) - {"_id"})
        if all(_same(p, s, f) for f in fields):
            continue
        tp, tsec = _stamp(p, ts), _stamp(s, ts)
        stamps = f"{ts} primary {_render(tp)}, secondary {_render(tsec)}"
        if rule.winner == "newest" and tp is not None and tsec is not None and tsec > tp:
            before = prim.find_one({"_id": p["_id"]})  # the whole primary document, read now
            if before is None:  # deleted since the scan: nothing to reconcile against
                continue
            after, touched = merged(before, s)
            changes.append(Change(coll, "update", p["_id"], before, after,
                                  f"{rule.id}: {coll} {p['_id']} differs from {target} ({stamps}); winner rule "
                                  "'newest': the secondary's copy is newer and is written to the primary",
                                  dc_prim, touched))
            newest = tsec if newest is None or tsec > newest else newest
            continue
        if rule.winner == "primary":
            why = "winner rule 'primary': the primary is the system of record"
        elif tp is None or tsec is None:
            why = "winner rule 'newest': a side has no timestamp, so the primary wins"
        else:
            why = "winner rule 'newest': the primary's copy is " + ("newer" if tp > tsec else "as new (a tie: primary)")
        after, touched = merged(s, shaped(p))
        changes.append(Change(target, "update", s["_id"], s, after,
                              f"{rule.id}: {coll} {p['_id']} differs from {target} ({stamps}); {why}",
                              dc_sec, touched))
    extra = [s for k, s in secondary.items() if k not in primary]
    if rule.extra == "delete":
        for s in extra:
            changes.append(Change(target, "delete", s["_id"], s, None,
                                  f"{rule.id}: {target} {s['_id']} has no {coll} document in the primary "
                                  "(extra: delete)", dc_sec))
    elif extra:
        sample = ", ".join(str(s["_id"]) for s in extra[:5])
        unresolved.append(f"{rule.id}: {len(extra)} ids only {target} has, left there (extra: report): {sample}"
                          + (" ..." if len(extra) > 5 else ""))

    state = sec_db[rule.sync_state_collection].find_one({"_id": rule.sync_state_id})
    at = _ms(ctx.now)
    if newest is not None and _ms(newest) > at:
        at = _ms(newest)
    current = _stamp(state, rule.sync_state_field)
    if state is None:
        changes.append(Change(state_target, "insert", rule.sync_state_id, None,
                              {"_id": rule.sync_state_id, rule.sync_state_field: at},
                              f"{rule.id}: the synchronisation's state starts at {_render(at)}", None,
                              [rule.sync_state_field]))
    elif len(changes) > first or current is None or (newest is not None and newest > current):
        after = dict(state)
        after[rule.sync_state_field] = at
        changes.append(Change(state_target, "update", rule.sync_state_id, state, after,
                              f"{rule.id}: the synchronisation ran as of {_render(at)} (was {_render(current)})",
                              None, [rule.sync_state_field]))


def build(ctx: RecipeContext, rule: str | None = None) -> Plan:
    changes: list[Change] = []
    unresolved: list[str] = []
    chosen = _sync_rules(ctx.policy, rule)
    if not chosen:
        raise FluxaError("the policy has no enabled sync rule: there is nothing to synchronise",
                         "add a rule of kind sync to the primary collection (docs/policy.md)")
    for coll, r in chosen:
        _plan_rule(ctx, coll, r, changes, unresolved, named=rule is not None)
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.op] = counts.get(c.op, 0) + 1
    rules = ", ".join(r.id for _, r in chosen)
    summary = (f"synchronise {rules}: " + (", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
                                           if changes else "already in sync"))
    return Plan(recipe="sync", database=ctx.db.name, params={"rule": rule}, source_point=ctx.now,
                changes=changes, verify=[r.id for _, r in chosen], unresolved=unresolved, summary=summary)


register(RecipeSpec(
    name="sync", feature="S31",
    summary="Bring a secondary system in line with the primary per the policy's sync rule (missing, extra and "
            "stale records; the rule's winner decides a differing record), then record the sync.",
    params=[Param("rule", "The policy's sync rule id (default: every enabled sync rule).")],
    build=build,
))
