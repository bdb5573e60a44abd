"""Recipe ``reconstruct-from-logs`` (S26): rebuild the missing documents of a collection (Fluxa:
chat messages) of a user, a conversation or a time window from application log entries - the
policy's log collection and JSON-lines log files - as the playbook's "Data Reconstruction from
Logs" example does, but insert by insert, never overwriting and never duplicating.

Driven by the collection's ``reconstruct`` mapping (policy/data_loss.py):

1. Entries: the log entries whose operation the mapping knows, filtered by ``--user`` (the
   collection's ``user_field``), ``--conversation`` (the mapping's ``group``) and the window
   (``--since``/``--until`` on the mapping's ``time``, both inclusive), from the collection and
   every ``--log-file`` (the same entry in both counts once: same resulting ``_id``).
2. Each entry becomes a document: ``_id`` is the log's id field (the original id) when it has
   one, else a deterministic ObjectId (the entry's time in seconds + 8 bytes of a sha256 of its
   group, time, operation and mapped values), so planning twice gives the same plan.
3. Still there? A document is skipped when its ``_id`` exists, or when a live document of the
   same group has the same ``match`` values (conversation + timestamp + text for Fluxa).
4. Deleted on purpose? A missing document whose deletion the audit log records (the
   collection's deletions rule) is left out and listed in ``unresolved`` (bring it back with
   ``undelete --hard``, which restores the audited before-image) unless ``--audited`` is given.
   A document whose parent (the group's counter rule or reference rule) is missing is listed in
   ``unresolved`` too: inserting it would make an orphan.
5. ``$previous`` (Fluxa: ``parentId``) is the ``_id`` of the document before it in its group,
   ordered by time, over the live documents and *all* the group's log entries (not only the
   window's), so a thread rebuilt in pieces links up the same.
6. The parents' counters (counter rules) are set to the count after the apply, in the same plan.

Provenance: each insert's ``reason`` names its log entry (``logs/<_id>`` or ``file:line``); the
plan is stored and its change sets go on the incident's timeline. The document itself carries
a small mark in the mapping's ``provenance_field`` (Fluxa: ``_recovered: {from: "logs", logId}``,
recovery/provenance.py) when the policy names one; a rebuilt message is byte-for-byte the lost
one once that field is removed (``provenance.content_hash_without``; docs/recovery.md).

Reads only. Memory: the touched groups' live documents (projected on the match fields) and log
entries. Failure: a collection without a mapping, an unreadable log file or a bad line is a
FluxaError before anything is planned.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import bson
from bson import ObjectId

from ...mongo.by_id import find_by_ids
from ...errors import FluxaError
from ...policy.rules import DeletionsRule, ReferenceRule
from ..counters import counter_changes, parent_collections
from ..log_sources import LogEntry, LogReader, aware, parse_id, parse_time
from ..model import Change, Param, Plan, RecipeContext, RecipeSpec, register
from ..provenance import mark

NAME = "reconstruct-from-logs"
CHUNK = 1000


def _key(v: Any) -> bytes:
    return bson.encode({"v": aware(v)})


def _chunks(items: list, n: int = CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _collection(policy, name: str | None) -> str:
    mapped = [c for c, cp in policy.collections.items() if cp.reconstruct is not None]
    if name:
        if name not in policy.collections or policy.collections[name].reconstruct is None:
            raise FluxaError(f"the policy has no reconstruct mapping for collection {name!r}",
                             "collections with one: " + (", ".join(mapped) or "(none)")
                             + "; add `reconstruct:` to the collection's policy (docs/policy.md)")
        return name
    if len(mapped) != 1:
        raise FluxaError("say which collection to rebuild with --collection" if mapped else
                         "the policy has no reconstruct mapping", "collections with one: " + (", ".join(mapped) or "(none)"))
    return mapped[0]


class _Builder:
    def __init__(self, ctx: RecipeContext, coll: str):
        self.ctx, self.coll = ctx, coll
        self.cp = ctx.policy.collections[coll]
        self.spec = self.cp.reconstruct
        self.reader = LogReader(ctx.db, self.spec, self.cp.user_field)

    def document(self, e: LogEntry) -> dict | None:
        """The document an entry rebuilds, ``$previous`` left as None for now."""
        s, d = self.spec, e.doc
        t = d.get(self.reader.time_field)
        if not isinstance(t, datetime):
            return None
        body: dict = {}
        for doc_field, source in s.fields.items():
            if source == "$operation":
                body[doc_field] = s.operations[d[s.operation_field]]
            elif source == "$previous":
                body[doc_field] = None
            elif source in d:
                body[doc_field] = d[source]
        if s.group and body.get(s.group) is None:
            return None
        _id = d.get(s.id_field) if s.id_field else None
        if _id is None:
            _id = self.derived_id(body, d[s.operation_field], aware(t))
        return {"_id": _id, **body}

    def derived_id(self, body: dict, operation: str, t: datetime) -> ObjectId:
        digest = hashlib.sha256(bson.encode({"op": operation, "body": {k: aware(v) for k, v in body.items()}})).digest()
        return ObjectId(int(t.timestamp()).to_bytes(4, "big") + digest[:8])

    def match_key(self, doc: dict) -> bytes | None:
        if not self.spec.match:
            return None
        return b"".join(_key(doc.get(f)) for f in self.spec.match)


def build(ctx: RecipeContext, collection: str | None = None, user: str | None = None,
          conversation: str | list[str] | None = None, since: datetime | None = None, until: datetime | None = None,
          log_file: list[str] | None = None, audited: bool = False) -> Plan:
    coll = _collection(ctx.policy, collection)
    b = _Builder(ctx, coll)
    spec, db = b.spec, ctx.db
    # one conversation or several: several are one read of the logs and one of the collection
    # (FerretDB scans a whole collection for any filter but _id, so N plans would be N scans each)
    wanted = [conversation] if isinstance(conversation, str) else list(conversation or [])
    user_id = parse_id(user)
    group_ids = [parse_id(c) for c in wanted] or None
    since, until = parse_time(since, "--since"), parse_time(until, "--until")
    if since and until and since > until:
        raise FluxaError(f"--since {since.isoformat()} is after --until {until.isoformat()}", "swap them")
    file_entries = b.reader.from_files(log_file or [])
    entries = list(b.reader.from_collection(user_id, None, since, until, groups=group_ids))
    entries += [e for e in file_entries if b.reader.keep(e, user_id, None, since, until, groups=group_ids)]
    ctx.tick("log entries read", len(entries), len(entries))

    candidates: dict[bytes, tuple[dict, LogEntry]] = {}
    unresolved: list[str] = []
    for e in entries:
        doc = b.document(e)
        if doc is None:
            unresolved.append(f"log entry {e.source}: no {spec.time} date"
                              + (f" or no {spec.group}" if spec.group else "") + " - cannot rebuild a document from it")
            continue
        candidates.setdefault(_key(doc["_id"]), (doc, e))

    # still there: by id, or by the match fields within the group
    ids = [d["_id"] for d, _ in candidates.values()]
    live_ids: set[bytes] = set()
    for chunk in _chunks(ids):
        live_ids.update(_key(d["_id"]) for d in find_by_ids(db[coll], chunk, {"_id": 1}))
    groups = sorted({_key(d.get(spec.group)): d.get(spec.group) for d, _ in candidates.values()}.items()) \
        if spec.group else []
    group_values = [v for _, v in groups]
    live_by_group: dict[bytes, list[dict]] = {}
    live_match: set[bytes] = set()
    if spec.group:
        proj = {f: 1 for f in {spec.group, spec.time, *spec.match}}
        for chunk in _chunks(group_values):
            for d in db[coll].find({spec.group: {"$in": chunk}}, proj):
                live_by_group.setdefault(_key(d.get(spec.group)), []).append(d)
                if (k := b.match_key(d)) is not None:
                    live_match.add(k)
    elif spec.match:  # no group: compare with every document of the window (small by design)
        for d in db[coll].find({}, {f: 1 for f in spec.match}):
            live_match.add(b.match_key(d))
    missing = [(d, e) for k, (d, e) in candidates.items()
               if k not in live_ids and (b.match_key(d) is None or b.match_key(d) not in live_match)]

    # deleted on purpose (audit log) and parents that are gone
    missing = _leave_out_audited(ctx, coll, missing, unresolved) if not audited else missing
    missing = _leave_out_orphans(ctx, coll, missing, unresolved)

    # $previous over live documents and every log entry of the group
    prev_fields = [f for f, s in spec.fields.items() if s == "$previous"]
    if prev_fields and missing:
        _link(b, missing, live_by_group, file_entries)

    dc = ctx.policy.data_class_for(coll)
    changes: list[Change] = []
    for doc, e in sorted(missing, key=lambda x: (aware(x[0].get(spec.time)), _key(x[0]["_id"]))):
        for f in prev_fields:
            if doc.get(f) is None:
                doc.pop(f, None)
        if spec.provenance_field:
            doc[spec.provenance_field] = mark(e.source.startswith(spec.log_collection + "/"), e.source, e.log_id)
        changes.append(Change(coll, "insert", doc["_id"], None, doc,
                              f"rebuilt from log entry {e.source} ({e.doc.get(spec.operation_field)} at "
                              f"{aware(e.doc.get(b.reader.time_field)):%Y-%m-%d %H:%M:%S}Z)", dc.name if dc else None))
    counters, counter_rules = counter_changes(db, ctx.policy, coll, [c.after for c in changes], "rebuilt from logs")
    changes += counters
    scope = ", ".join(f"{k} {v}" for k, v in (("user", user), ("conversation", ", ".join(wanted)),
                                               ("since", since and since.isoformat()),
                                               ("until", until and until.isoformat())) if v) or "the whole log"
    files = f" + {len(log_file)} log file(s)" if log_file else ""
    return Plan(recipe=NAME, database=db.name, params={}, source_point=ctx.now, changes=changes,
                verify=counter_rules, unresolved=unresolved,
                summary=f"{len(changes) - len(counters)} {coll} rebuilt from {len(entries)} log entries "
                        f"({scope}{files}); {len(counters)} parent counter(s) corrected")


def _leave_out_audited(ctx, coll: str, missing: list, unresolved: list[str]) -> list:
    rules = [r for c, r in ctx.policy.iter_rules(coll) if isinstance(r, DeletionsRule) and r.audit_collection]
    if not rules or not missing:
        return missing
    audited: dict[bytes, Any] = {}
    for r in rules:
        for chunk in _chunks([d["_id"] for d, _ in missing]):
            for a in ctx.db[r.audit_collection].find({r.audit_operation_field: "delete", r.audit_collection_field: coll,
                                                      r.audit_document_field: {"$in": chunk}}):
                audited[_key(a.get(r.audit_document_field))] = a.get("_id")
    keep = []
    for d, e in missing:
        audit_id = audited.get(_key(d["_id"]))
        if audit_id is None:
            keep.append((d, e))
        else:
            unresolved.append(f"{coll} {d['_id']}: deleted on purpose (audit entry {audit_id}); not rebuilt - "
                              f"use the undelete recipe, or --audited to rebuild it from the logs anyway")
    return keep


def _leave_out_orphans(ctx, coll: str, missing: list, unresolved: list[str]) -> list:
    parents = dict(parent_collections(ctx.policy, coll))
    for c, r in ctx.policy.iter_rules(coll):
        if isinstance(r, ReferenceRule):
            parents.setdefault(r.field, r.to)
    for field, parent_coll in parents.items():
        wanted = {_key(d.get(field)): d.get(field) for d, _ in missing if d.get(field) is not None}
        if field == "_id" or not wanted:
            continue
        there: set[bytes] = set()
        values = list(wanted.values())
        for chunk in _chunks(values):
            there.update(_key(p["_id"]) for p in find_by_ids(ctx.db[parent_coll], chunk, {"_id": 1}))
        # a parent rebuilt by this same plan counts (a reply to a rebuilt message)
        there.update(_key(d["_id"]) for d, _ in missing if parent_coll == coll)
        keep = []
        for d, e in missing:
            v = d.get(field)
            if v is None or _key(v) in there:
                keep.append((d, e))
            else:
                unresolved.append(f"{coll} {d['_id']} (log entry {e.source}): its {field} {v} is missing from "
                                  f"{parent_coll}; bring the parent back first (undelete), then plan again")
        missing = keep
    return missing


def _link(b: _Builder, missing: list, live_by_group: dict[bytes, list[dict]], file_entries: list[LogEntry]) -> None:
    """Fill ``$previous`` fields: the group's sequence is its live documents plus every log entry
    of the group (the collection's and the files'), ordered by (time, _id)."""
    spec = b.spec
    groups = {_key(d[spec.group]): d[spec.group] for d, _ in missing}
    seq: dict[bytes, dict[bytes, tuple]] = {g: {} for g in groups}

    def add(g: bytes, _id, t) -> None:
        if g in seq and isinstance(t, datetime):
            seq[g].setdefault(_key(_id), (aware(t), _key(_id), _id))

    for g in groups:
        for d in live_by_group.get(g, []):
            add(g, d["_id"], d.get(spec.time))
    for chunk in _chunks(list(groups.values())):
        for e in b.reader.from_collection(groups=chunk):
            doc = b.document(e)
            if doc is not None:
                add(_key(doc[spec.group]), doc["_id"], doc.get(spec.time))
    for e in file_entries:
        doc = b.document(e)
        if doc is not None:
            add(_key(doc[spec.group]), doc["_id"], doc.get(spec.time))
    previous: dict[bytes, Any] = {}
    for g, items in seq.items():
        ordered = sorted(items.values(), key=lambda x: (x[0], x[1]))
        for before, this in zip(ordered, ordered[1:]):
            previous[this[1]] = before[2]
    for d, _ in missing:
        for f, s in spec.fields.items():
            if s == "$previous":
                d[f] = previous.get(_key(d["_id"]))


register(RecipeSpec(
    name=NAME, feature="S26",
    summary="Rebuild missing documents (chat messages) of a user, conversation or time window from the logs.",
    params=[
        Param("user", "Only this user's entries (the user id, e.g. an ObjectId in hex)."),
        Param("conversation", "Only this conversation's entries (the policy's group field, e.g. conversationId); "
                              "repeat it for several, read in one pass.", multiple=True),
        Param("since", "Only entries at or after this time.", type=datetime),
        Param("until", "Only entries at or before this time.", type=datetime),
        Param("log-file", "A JSON-lines application log file with the log collection's fields.",
              multiple=True),
        Param("collection", "The collection to rebuild (default: the one with a reconstruct mapping in the policy)."),
        Param("audited", "Also rebuild documents whose deletion the audit log records (deleted on purpose).",
              type=bool, default=False),
    ],
    build=build,
))
