"""One streaming pass over one collection: every rule of the collection in a single read.

A pass may run in a worker process, so its input (PassSpec) and output (PassResult) are plain
picklable data. Cross-collection facts come in as ``imports`` (key sets and per-id facts built
by earlier passes) and go out as ``keys``, ``facts`` and ``child_counts`` for later ones.
Documents are read in batches; reference lookups are vectorised per batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import numpy as np

from ..mongo.connection import connect
from ..policy.rules import (CopiedFieldRule, DeletionsRule, ReferenceRule, SyncRule, TimestampOrderRule,
                            UniqueRule)
from .document_rules import compile_document_rule, dangling_message, reference_items
from .facts import NONE, Facts, from_ms, to_ms
from .findings import DEFAULT_SAMPLES, Findings, FindingResult
from .keyset import KeySet
from .self_order import SelfOrder
from .values import MISSING, doc_time, get_path, key_hash, normalise_key

Progress = Callable[[str, int], None]


@dataclass
class PassSpec:
    uri: str
    db: str
    collection: str
    rules: list = field(default_factory=list)
    export_keys: list[str] = field(default_factory=list)
    export_facts: list[str] = field(default_factory=list)
    count_children: list[str] = field(default_factory=list)
    imports: dict = field(default_factory=dict)
    user_field: str | None = "userId"
    filter: dict = field(default_factory=dict)
    # incremental: (watermark field, value) - only documents past it are checked; when the pass
    # must also export keys for other collections it still reads everything, for the exports
    changed_since: tuple[str, datetime] | None = None
    since: datetime | None = None
    sync_cutoffs: dict = field(default_factory=dict)  # sync rule id -> lastSyncAt
    watermark_field: str | None = None  # report the highest date in it (the next incremental start)
    source_db: str | None = None  # read another database (the secondary system), keys only
    max_samples: int = DEFAULT_SAMPLES
    keep_ids: bool = False
    batch_size: int = 2000
    # where the documents come from instead of the server (checks/sources.py: a backup file's
    # segment); anything with ``batches(size)`` yielding lists of documents decoded as the cursor would
    source: object | None = None


@dataclass
class PassResult:
    collection: str
    docs: int
    seconds: float
    findings: list[FindingResult]
    keys: dict[str, KeySet]
    facts: Facts | None
    child_counts: dict[str, Counter]
    watermark: datetime | None = None


@dataclass
class _Pending:
    """A self-reference whose target had not been seen yet when its document was read."""
    rule: ReferenceRule
    h: int
    _id: object
    value: object
    user: int | None
    when: datetime | None


def run_pass(spec: PassSpec, progress: Progress | None = None) -> PassResult:
    began = time.perf_counter()
    return scan(spec, progress).finish(time.perf_counter() - began)


def scan(spec: PassSpec, progress: Progress | None = None) -> "_Scanner":
    """Every document of the pass evaluated; the scanner is returned unfinished, so that
    checks/partitions.py can merge the scanners of several partitions before finishing."""
    if spec.source is not None:
        return _consume(spec, spec.source.batches(spec.batch_size), progress)
    client = connect(spec.uri)
    try:
        db = client[spec.source_db or spec.db]
        flt = dict(spec.filter)
        exports = (spec.export_keys or spec.export_facts or spec.count_children
                   or any(isinstance(r, ReferenceRule) and r.to == spec.collection for r in spec.rules))
        if spec.changed_since and not exports:
            wm_field, wm_value = spec.changed_since
            flt[wm_field] = {"$gt": wm_value}
        cursor = db[spec.collection].find(flt, batch_size=spec.batch_size)
        return _consume(spec, _prefetched(cursor, spec.batch_size), progress)
    finally:
        client.close()


def _consume(spec: PassSpec, batches, progress: Progress | None) -> "_Scanner":
    scanner = _Scanner(spec)
    for batch in batches:
        scanner.batch(batch)
        if progress:
            progress(spec.collection, len(batch))
    return scanner


def _prefetched(cursor, size: int):
    """Batches of documents, read by a thread one batch ahead: the server prepares the next
    batch while this one is evaluated, so a pass costs max(server, rules), not their sum."""
    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()

    def read():
        try:
            batch = []
            for doc in cursor:
                batch.append(doc)
                if len(batch) >= size:
                    q.put(batch)
                    batch = []
            if batch:
                q.put(batch)
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    reader = threading.Thread(target=read, daemon=True, name="fluxa-scan-reader")
    reader.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cursor.close()  # also stops a reader blocked on a consumer that gave up


class _Scanner:
    def __init__(self, spec: PassSpec):
        self.spec = spec
        coll = spec.collection
        self.findings = Findings(coll, spec.max_samples, spec.keep_ids)
        self.docs = 0
        self.doc_checks = [(r, c) for r in spec.rules if (c := compile_document_rule(r, coll)) is not None]
        self.refs = [r for r in spec.rules if isinstance(r, ReferenceRule)]
        self.uniques = {r.id: (r, {}) for r in spec.rules if isinstance(r, UniqueRule)}
        parent_rules = [r for r in spec.rules if isinstance(r, (TimestampOrderRule, CopiedFieldRule))]
        self.parent_rules = [r for r in parent_rules if r.parent_collection != coll]
        # a parent in the same collection (a reply and the message it answers): decided at the end
        own = [r for r in parent_rules if r.parent_collection == coll and isinstance(r, TimestampOrderRule)]
        self.self_order = SelfOrder(own) if own else None
        self.soft_deletes = [r for r in spec.rules if isinstance(r, DeletionsRule) and r.soft_delete_field]
        self.syncs = [r for r in spec.rules if isinstance(r, SyncRule)]
        self.keys = {f: KeySet() for f in spec.export_keys}
        self.facts = Facts(spec.export_facts) if spec.export_facts else None
        self.child_counts: dict[str, Counter] = {f: Counter() for f in spec.count_children}
        self.pending: list[_Pending] = []
        self.watermark: datetime | None = None
        # a reference to this same collection checks against the ids seen so far, then again at the end
        for r in self.refs:
            if r.to == coll and r.to_field not in self.keys:
                self.keys[r.to_field] = KeySet()

    # -- helpers ------------------------------------------------------------------------------
    def _user(self, doc: dict) -> int | None:
        uf = self.spec.user_field
        if not uf:
            return None
        v = get_path(doc, uf)
        return None if v is MISSING or v is None else key_hash(v)

    def _add(self, rule, variant: str, message: str, doc: dict, value, extra: dict | None = None) -> None:
        self.findings.get(rule, variant, message).add(doc.get("_id"), value, self._user(doc), doc_time(doc), extra)

    # -- one batch ------------------------------------------------------------------------------
    def batch(self, docs: list[dict]) -> None:
        if self.spec.watermark_field:
            dates = [v for d in docs if isinstance(v := get_path(d, self.spec.watermark_field), datetime)]
            if dates and (self.watermark is None or max(dates) > self.watermark):
                self.watermark = max(dates)
        for key_field, ks in self.keys.items():
            ks.add_many(key_hash(v) for d in docs if (v := get_path(d, key_field)) is not MISSING)
        if self.facts is not None:
            for d in docs:
                self.facts.add(d)
        for f, counter in self.child_counts.items():
            counter.update(key_hash(v) for d in docs if (v := get_path(d, f)) is not MISSING and v is not None)
        if self.spec.changed_since:
            wm_field, wm_value = self.spec.changed_since
            docs = [d for d in docs if isinstance(v := get_path(d, wm_field), datetime) and v > wm_value]
        self.docs += len(docs)
        for rule, check in self.doc_checks:
            for d in docs:
                for variant, value, message in check(d):
                    self._add(rule, variant, message, d, value)
        for rule in self.refs:
            self._references(rule, docs)
        for rule, seen in self.uniques.values():
            self._unique(rule, seen, docs)
        for rule in self.parent_rules:
            self._parent_rule(rule, docs)
        if self.self_order is not None:
            self.self_order.add_batch(docs, self._user, doc_time)
        for rule in self.soft_deletes:
            since = self.spec.since
            for d in docs:
                v = get_path(d, rule.soft_delete_field)
                if isinstance(v, datetime) and (since is None or v > since):
                    self._add(rule, "soft_deleted", f"{self.spec.collection} soft-deleted since {since:%Y-%m-%d %H:%M}Z"
                              if since else f"{self.spec.collection} soft-deleted", d, v)
        for rule in self.syncs:
            self._sync(rule, docs)

    def _references(self, rule: ReferenceRule, docs: list[dict]) -> None:
        coll = self.spec.collection
        where = dangling_message(rule, coll)
        hashes, owners = [], []
        for d in docs:
            bad, items = reference_items(rule, coll, d)
            for variant, value, message in bad:
                self._add(rule, variant, message, d, value)
            for item in items:
                hashes.append(key_hash(item))
                owners.append((d, item))
        if not hashes:
            return
        self_ref = rule.to == coll
        target = self.keys[rule.to_field] if self_ref else self.spec.imports.get(("keys", rule.to, rule.to_field))
        if target is None:
            raise RuntimeError(f"no key set for {rule.to}.{rule.to_field}")  # a planning bug, not user input
        arr = np.fromiter(hashes, dtype=np.int64, count=len(hashes))
        found = target.contains(arr)
        for i in np.flatnonzero(~found):
            d, item = owners[i]
            if self_ref:  # maybe defined later in the same collection: decide at the end
                self.pending.append(_Pending(rule, int(arr[i]), d.get("_id"), item, self._user(d), doc_time(d)))
            else:
                self.findings.get(rule, "dangling", where).add(
                    d.get("_id"), item, self._user(d), doc_time(d))

    def _unique(self, rule: UniqueRule, seen: dict, docs: list[dict]) -> None:
        for d in docs:
            vals = [get_path(d, f) for f in rule.fields]
            if rule.ignore_missing and all(v is MISSING for v in vals):
                continue
            key = key_hash(tuple(None if v is MISSING else normalise_key(v, rule.case_insensitive) for v in vals)) \
                if len(vals) > 1 else key_hash(None if vals[0] is MISSING else normalise_key(vals[0], rule.case_insensitive))
            first = seen.get(key)
            value = vals[0] if len(vals) == 1 else vals
            if first is None:
                seen[key] = (d.get("_id"), value, self._user(d), doc_time(d), False)
                continue
            acc = self.findings.get(rule, "duplicate",
                                    f"{self.spec.collection}.{'+'.join(rule.fields)} is not unique"
                                    + (" (case-insensitive)" if rule.case_insensitive else ""))
            _id, fvalue, fuser, ftime, reported = first
            if not reported:  # the first holder of the value is part of the duplicate group too
                acc.add(_id, fvalue, fuser, ftime, {"group": str(key)})
                seen[key] = (_id, fvalue, fuser, ftime, True)
            acc.add(d.get("_id"), value, self._user(d), doc_time(d), {"group": str(key)})

    def _parent_rule(self, rule, docs: list[dict]) -> None:
        facts: Facts | None = self.spec.imports.get(("facts", rule.parent_collection))
        if facts is None:
            return
        coll = self.spec.collection
        children, hashes = [], []
        for d in docs:
            ref = get_path(d, rule.parent_ref)
            if ref is not MISSING and ref is not None:
                children.append(d)
                hashes.append(key_hash(ref))
        if not children:
            return
        rows = facts.rows(np.fromiter(hashes, dtype=np.int64, count=len(hashes)))
        is_order = isinstance(rule, TimestampOrderRule)
        column = facts.ms(rule.parent_field) if is_order else facts.value_hash(rule.parent_field)
        for d, row in zip(children, rows):
            if row < 0 or column[row] == NONE:
                continue  # a missing parent is the reference rule's finding
            v = get_path(d, rule.field)
            if is_order:
                if not isinstance(v, datetime):
                    continue  # a missing or mistyped date is the type rule's finding
                ms = to_ms(v)
                if rule.relation == "not_before" and ms < column[row]:
                    self._add(rule, "before_parent",
                              f"{coll}.{rule.field} is before {rule.parent_collection}.{rule.parent_field}", d, v,
                              {"parent": facts.ids[row], "parent_value": from_ms(column[row])})
                elif rule.relation == "not_after" and ms > column[row]:
                    self._add(rule, "after_parent",
                              f"{coll}.{rule.field} is after {rule.parent_collection}.{rule.parent_field}", d, v,
                              {"parent": facts.ids[row], "parent_value": from_ms(column[row])})
            elif v is not MISSING and (v is None or key_hash(v) != column[row]):
                self._add(rule, "mismatch",
                          f"{coll}.{rule.field} differs from {rule.parent_collection}.{rule.parent_field}", d, v,
                          {"parent": facts.ids[row]})

    def _sync(self, rule: SyncRule, docs: list[dict]) -> None:
        coll = self.spec.collection
        cutoff = self.spec.sync_cutoffs.get(rule.id)
        secondary = self.spec.imports.get(("keys", "secondary:" + rule.id, "_id"))
        if secondary is not None:
            arr = np.fromiter((key_hash(d["_id"]) for d in docs), dtype=np.int64, count=len(docs))
            for i in np.flatnonzero(~secondary.contains(arr)):
                self._add(rule, "missing_in_secondary", f"{coll} documents missing from the secondary system",
                          docs[i], docs[i]["_id"])
        if cutoff is not None:
            for d in docs:
                v = get_path(d, rule.timestamp_field)
                if isinstance(v, datetime) and v > cutoff:
                    self._add(rule, "changed_after_sync",
                              f"{coll}.{rule.timestamp_field} is later than the last synchronisation", d, v,
                              {"lastSyncAt": cutoff})

    def finish(self, seconds: float) -> PassResult:
        for p in self.pending:
            if not self.keys[p.rule.to_field].contains(np.array([p.h], dtype=np.int64))[0]:
                self.findings.get(p.rule, "dangling",
                                  dangling_message(p.rule, self.spec.collection)).add(p._id, p.value, p.user, p.when)
        if self.self_order is not None:
            self.self_order.finish(self.spec.collection, self.findings)
        keys = {f: ks.freeze() for f, ks in self.keys.items() if f in self.spec.export_keys}
        if self.facts is not None:
            self.facts.freeze()
        return PassResult(self.spec.collection, self.docs, seconds, self.findings.results(), keys,
                          self.facts, self.child_counts, self.watermark)
