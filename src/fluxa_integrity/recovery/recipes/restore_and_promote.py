"""Recipe ``restore-and-promote`` (S24/S25): bring documents back from a restored copy.

The restored copy is a database `restore run --backup` or `restore run --at` made (or one made by
hand); the plan is `restore diff`'s classification of it against live (restore.diff.classify: the
one diff), per collection, optionally only for ``--ids``:

- in the copy, not in live (deleted since) -> ``insert`` of the copy's document;
- in both, different bytes -> ``replace``: ``before`` = the live document now, ``after`` = the copy's;
- in live only (created since) -> left alone, counted in the summary (as `restore promote` does).

The plan's source point is the copy's point (restored_copy.restored_point: the ``--at`` of a
point-in-time restore, else the end of the backup). A live document written after it - seen in
the oplog (archive + live, recovery/live_writes.py) or by its time field (the policy's
``watermark_field``) later than the point - is a newer write the copy does not hold: its
``replace`` is **held** (``params["held"]``: ``{collection, id, why}``), which the engine treats
as a conflict - reported, not written unless forced by id (`recover apply --force-id`), or, in
``supersede`` mode (`restore promote`), kept in the journal and overwritten. Naming the document
in ``--ids`` is asking for it by id: it is not held (its reason still says it was written after
the point). An ``insert`` (a document deleted from live since) overwrites nothing and is never
held. A copy made by hand has no known point: nothing can be held, and ``unresolved`` says so. A
document that changes after the plan is made is the engine's conflict at apply time as always. ``verify`` lists the enabled rules
of the promoted collections except ``count_drop`` and ``deletions``: they report events (a drop
between two runs, a delete in the audit log), which bringing documents back does not erase, not
the state of documents. ``--ids`` that neither side holds are listed in ``unresolved``.

Reads only (the oplog too). Failure: the copy being the live database, a collection the copy lacks, bad ``--ids``
or a copy whose newest restore did not complete: FluxaError before anything is read in bulk.
Memory: one fingerprint per document of each side (restore.compare), then the differing documents.
"""

from __future__ import annotations

import bson
from bson import json_util
from bson.codec_options import CodecOptions

from ...mongo.by_id import find_by_ids
from ...errors import FluxaError
from ...policy.rules import CountDropRule, DeletionsRule
from ...restore.compare import id_key
from ...restore.diff import classify
from ..model import Change, Param, Plan, RecipeContext, RecipeSpec, register
from ..live_writes import written_since
from ..restored_copy import restored_point

_AWARE = CodecOptions(tz_aware=True)
IDS_HINT = 'an Extended JSON array, e.g. --ids \'[{"$oid": "65f0c0ffee0000000000abcd"}]\''


def _names(collections) -> list[str]:
    raw = [collections] if isinstance(collections, str) else list(collections or [])
    return [n.strip() for part in raw for n in str(part).split(",") if n.strip()]


def _id_list(ids) -> list | None:
    if ids is None or ids == "" or ids == []:
        return None
    if isinstance(ids, (list, tuple)) and not (len(ids) == 1 and isinstance(ids[0], str) and ids[0].lstrip().startswith("[")):
        return list(ids)
    text = ids[0] if isinstance(ids, (list, tuple)) else ids
    try:
        out = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise FluxaError(f"--ids is not valid Extended JSON: {exc}", IDS_HINT) from exc
    if not isinstance(out, list):
        raise FluxaError("--ids must be a JSON array", IDS_HINT)
    return out


def _fetch(coll, ids: list) -> dict[bytes, dict]:
    out = {}
    for i in range(0, len(ids), 500):
        for d in find_by_ids(coll, ids[i:i + 500]):
            out[id_key(d["_id"])] = d
    return out


def _changed_fields(before: dict, after: dict) -> list[str]:
    """Top-level fields that differ, type-exact (1 and 1.0 differ), in the live document's order."""
    enc = lambda d, f: bson.encode({"v": d[f]}) if f in d else None  # noqa: E731
    return [f for f in [*before, *(f for f in after if f not in before)] if enc(before, f) != enc(after, f)]


def build(ctx: RecipeContext, source_db: str | None = None, collections=None, ids=None) -> Plan:
    live_name = ctx.db.name
    if not source_db:
        raise FluxaError("say which restored copy to bring back: --source-db NAME",
                         "make one with `restore run --backup ID --to-db NAME` or `restore run --at TIME --to-db NAME`")
    if source_db == live_name:
        raise FluxaError(f"--source-db {source_db!r} is the live database", "name the database `restore run --to-db` made")
    names = _names(collections)
    if not names:
        raise FluxaError("say which collections to bring back: --collections a,b", "e.g. --collections users,messages")
    id_list = _id_list(ids)
    client = ctx.db.client
    source = client.get_database(source_db, codec_options=_AWARE)
    live = client.get_database(live_name, codec_options=_AWARE)
    have = set(source.list_collection_names())
    if not have:
        raise FluxaError(f"the restored copy {source_db!r} does not exist (no collections)",
                         "restore it first: `restore run --backup ID --to-db NAME`")
    gone = [n for n in names if n not in have]
    if gone:
        raise FluxaError(f"{source_db!r} has no collection {', '.join(map(repr, gone))}",
                         f"it has: {', '.join(sorted(have))}")
    point, label = restored_point(ctx.store, source_db)
    query = {"_id": {"$in": id_list}} if id_list is not None else None
    asked = {id_key(i) for i in id_list} if id_list is not None else set()
    unresolved: list[str] = []
    if point is not None:  # the documents live wrote after the copy's point, from the oplog
        ctx.tick("oplog since the copy's point", 0, None)
        oplog_writes, notes = written_since(ctx.store, client, live_name, names, point)
        unresolved += [f"finding writes after the copy's point: {n} (the time fields still count)" for n in notes]
    else:
        oplog_writes = {}
        unresolved.append(f"{label}: the copy's point in time is unknown, so writes made in live after it cannot be "
                          "found; every difference is planned as an ordinary change - check the dry run, or name "
                          "documents with --ids")

    changes: list[Change] = []
    held: list[dict] = []
    left, newer_total, seen = 0, 0, set()
    for name in names:
        cp = ctx.policy.collections.get(name)
        time_field = cp.watermark_field if cp is not None else None
        c = classify(live, source, name, time_field, query)
        ctx.tick(name, len(c.restored), len(c.restored))
        left += len(c.added)
        if id_list is not None:
            seen.update(c.live, c.restored)
        dc = ctx.policy.data_class_for(name)
        dc = dc.name if dc is not None else None
        ins_ids = [c.restored[k][0] for k in c.removed]
        rep_ids = [c.restored[k][0] for k in c.changed]
        theirs = _fetch(source[name], ins_ids + rep_ids)
        ours = _fetch(live[name], rep_ids)
        for _id in ins_ids:
            after = theirs.get(id_key(_id))
            if after is not None:  # gone from the copy since it was fingerprinted: nothing to bring
                changes.append(Change(name, "insert", _id, None, after,
                                      f"in {label}, deleted from live since", dc))
        for key, _id in zip(c.changed, rep_ids):
            before, after = ours.get(key), theirs.get(key)
            if before is None or after is None:
                continue
            why = f"live differs from {label}"
            newer = []
            t = c.live[key][2]
            if point is not None and time_field and hasattr(t, "tzinfo"):
                t = t if t.tzinfo else t.replace(tzinfo=point.tzinfo)
                if t > point:
                    newer.append(f"live {time_field} {t.isoformat(timespec='milliseconds')}")
            w = oplog_writes.get(name, {}).get(key)
            if w is not None:
                newer.append(f"the oplog has a write at {w.isoformat(timespec='milliseconds')}")
            if newer:
                newer_total += 1
                late = (f"written in live after the copy's point {point.isoformat(timespec='milliseconds')} "
                        f"({'; '.join(newer)}): replacing undoes that write")
                if key in asked:
                    why += f"; {late} (asked for by --ids)"
                else:
                    why += f"; {late}: held - a conflict unless forced by id"
                    held.append({"collection": name, "id": _id, "why": late})
            changes.append(Change(name, "replace", _id, before, after, why, dc, _changed_fields(before, after)))
    if id_list is not None:
        absent = [i for i in id_list if id_key(i) not in seen]
        if absent:
            unresolved.append(f"{len(absent)} of the --ids are in neither {source_db} nor {live_name} "
                              f"({', '.join(map(str, absent[:5]))}{' ...' if len(absent) > 5 else ''})")
    counts: dict[str, int] = {}
    for ch in changes:
        counts[ch.op] = counts.get(ch.op, 0) + 1
    summary = (f"bring back from {label}: " + (", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
                                              or "nothing differs")
               + (f"; {left} live-only document(s) left alone" if left else "")
               + (f"; {newer_total} replaced document(s) were written in live after the copy's point"
                  if newer_total else "")
               + (f" ({len(held)} held: each a conflict at apply unless forced by id; `restore promote` keeps "
                  "each live version in the journal, then overwrites it)" if held else ""))
    verify = [r.id for n in names for _, r in ctx.policy.iter_rules(n)
              if r.enabled and not isinstance(r, (CountDropRule, DeletionsRule))]  # events, not document states
    params = {"source_db": source_db, "collections": names,
              "ids": json_util.dumps(id_list, json_options=json_util.CANONICAL_JSON_OPTIONS) if id_list is not None else None,
              "held": held}
    return Plan(recipe="restore-and-promote", database=live_name, params=params, source_point=point or ctx.now,
                changes=changes, verify=verify, unresolved=unresolved, summary=summary)


register(RecipeSpec(
    name="restore-and-promote", feature="S25",
    summary="Bring documents back from a restored copy (restore run --backup/--at): deleted ones inserted, "
            "changed ones replaced; live-only documents left alone.",
    params=[Param("source-db", "The restored copy to bring back from (the database `restore run --to-db` made).",
                  required=True),
            Param("collections", "Collections to bring back (comma-separated, or the option repeated).",
                  multiple=True, required=True),
            Param("ids", "Only these _ids: an Extended JSON array (default: every document that differs).")],
    build=build,
))
