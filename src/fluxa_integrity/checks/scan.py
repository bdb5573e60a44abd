"""One streaming pass over one collection: every rule of the collection in a single read.

A pass may run in a worker process, so its input (PassSpec) and output (PassResult) are plain
picklable data. Cross-collection facts come in as ``imports`` (key sets and per-id facts built
by earlier passes) and go out as ``keys``, ``facts`` and ``child_counts`` for later ones.
Documents are read in batches; reference lookups are vectorised per batch.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import numpy as np
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import connect
from ..policy.rules import (CopiedFieldRule, DeletionsRule, ReferenceRule, SyncRule, TimestampOrderRule,
                            UniqueRule)
from .columns import NULL_HASH, Batch
from .deps import Deps
from .document_rules import (compile_document_rule, compile_screen, dangling_message, reference_items, unique_keys,
                             unique_message)
from .facts import NONE, Facts
from .findings import DEFAULT_SAMPLES, Findings, FindingResult
from .keyset import HashCounter, KeySet
from .parent_rules import child_column, extra, verdict
from .self_order import SelfOrder
from .shuffle import RefRows
from .values import MISSING, MissingType, doc_time, get_path, key_hash, key_hashes

NoneType = type(None)

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
    # record what the pass looked up in other collections (checks/deps.py decides from it
    # whether a stored partition result still holds after those collections changed)
    record_deps: bool = False
    # import keys ("keys", collection, field) held on a Dask cluster by key hash (checks/shuffle.py):
    # the pass does not look these references up, it writes them out (``outbox``) for the join
    shuffled: frozenset = frozenset()
    # unique rules' keys written out for the cluster's join too, instead of a dict in this pass
    join_uniques: bool = False


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
    try:
        client = connect(spec.uri)
    except FluxaError as exc:
        # the run connected before planning: a pass that cannot connect now lost the server mid-run,
        # the same failure as a getMore's (the CLI records the run failed), not bad input
        if isinstance(exc.__cause__, PyMongoError):
            raise exc.__cause__ from None
        raise
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
    with relaxed_gc():
        for batch in batches:
            scanner.batch(batch)
            if progress:
                progress(spec.collection, len(batch))
    return scanner


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple | None = None
GC_THRESHOLD = 200_000  # allocations between young collections during a pass (CPython's default: 700)


@contextmanager
def relaxed_gc():
    """Collect reference cycles less often while a pass runs. Decoding a batch allocates tens of
    thousands of containers, so CPython's collector runs every few documents, and each full
    collection walks every long-lived object (facts' ids, earlier passes' results): measured at
    1M messages, 40% of the engine's CPU went to it. Documents and the scan make no cycles, so
    collection is kept, only spaced out; the old thresholds come back when the last pass of the
    process ends (passes may run in threads)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


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


class _Items:
    """The j-th value a batch's reference rule looks up, built only for the few that dangle."""

    __slots__ = ("col", "extra", "owners", "which")

    def __init__(self, col: list, extra: list, owners: np.ndarray, which: np.ndarray):
        self.col, self.extra, self.owners, self.which = col, extra, owners, which

    def __getitem__(self, j: int):
        w = int(self.which[j])
        return self.col[int(self.owners[j])] if w < 0 else self.extra[w]

    def all(self) -> list:
        col, extra = self.col, self.extra
        return [col[o] if w < 0 else extra[w] for o, w in zip(self.owners.tolist(), self.which.tolist())]


class _Scanner:
    """Evaluates one collection's rules batch by batch, a column at a time (columns.py): per
    field path the values are read out of the documents once, hashed once and turned into dates
    once, whichever rules read them; per-document definitions run only on the documents the
    columns cannot clear (document_rules.py's screens). docs/checks.md, "Where the time goes"."""

    def __init__(self, spec: PassSpec):
        self.spec = spec
        coll = spec.collection
        self.findings = Findings(coll, spec.max_samples, spec.keep_ids)
        self.docs = 0
        self.doc_checks = [(r, c, compile_screen(r)) for r in spec.rules
                           if (c := compile_document_rule(r, coll)) is not None]
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
        self.child_counts: dict[str, HashCounter] = {f: HashCounter() for f in spec.count_children}
        self.pending: list[_Pending] = []
        self.outbox: dict = {}  # rule id -> shuffle.RefRows: references for the cluster's join
        self.watermark: datetime | None = None
        self.deps = Deps() if spec.record_deps else None
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
        b = Batch(docs)
        if self.spec.watermark_field:
            self._watermark(b)
        for key_field, ks in self.keys.items():
            h = b.hashes(key_field)
            ks.add_many(h[h != NONE] if MissingType in b.types(key_field) else h)
        if self.facts is not None:
            self.facts.add_batch(b)
        for f, counter in self.child_counts.items():
            h = b.ref_hashes(f)
            counter.add_many(h[h != NONE])
        if self.spec.changed_since:
            wm_field, wm_value = self.spec.changed_since
            b = b.subset([i for i, v in enumerate(b.values(wm_field)) if isinstance(v, datetime) and v > wm_value])
            docs = b.docs
        self.docs += b.n
        if not b.n:
            return
        for rule, check, screen in self.doc_checks:
            for i in screen(b):
                d = docs[i]
                for variant, value, message in check(d):
                    self._add(rule, variant, message, d, value)
        for rule in self.refs:
            self._references(rule, b)
        for rule, seen in self.uniques.values():
            self._unique(rule, seen, b)
        rows: dict = {}  # (parent collection, reference field) -> facts rows, shared by the rules
        for rule in self.parent_rules:
            self._parent_rule(rule, b, rows)
        if self.self_order is not None:
            uf = self.spec.user_field
            users = b.ref_hashes(uf) if uf else np.full(b.n, NONE, dtype=np.int64)
            self.self_order.add_batch(b, users)
        for rule in self.soft_deletes:
            since = self.spec.since
            col = b.values(rule.soft_delete_field)
            for i in [i for i, v in enumerate(col) if isinstance(v, datetime)]:
                v = col[i]
                if since is None or v > since:
                    self._add(rule, "soft_deleted", f"{self.spec.collection} soft-deleted since {since:%Y-%m-%d %H:%M}Z"
                              if since else f"{self.spec.collection} soft-deleted", docs[i], v)
        for rule in self.syncs:
            self._sync(rule, b)

    def _watermark(self, b: Batch) -> None:
        col = b.values(self.spec.watermark_field)
        if b.types(self.spec.watermark_field) == {datetime}:
            # the ms column other rules read anyway (when(), date rules): no Python max over dates
            top = col[int(np.argmax(b.ms(self.spec.watermark_field)))]
        else:
            dates = [v for v in col if isinstance(v, datetime)]
            if not dates:
                return
            top = max(dates)
        if self.watermark is None or top > self.watermark:
            self.watermark = top

    def _references(self, rule: ReferenceRule, b: Batch) -> None:
        coll = self.spec.collection
        where = dangling_message(rule, coll)
        col, types = b.values(rule.field), b.types(rule.field)
        special = {t for t in types if t is MissingType or t is NoneType or (rule.array and issubclass(t, list))}
        if not special:  # one plain value per document: no violation of its own, look each up
            owners, items, hashes = None, col, b.hashes(rule.field)
        else:  # absent, null or array values: the rule's per-document half decides them
            if special <= {MissingType, NoneType}:  # from the hash column: absent NONE, null NULL_HASH
                h = b.hashes(rule.field)
                plain = (h != NONE) & (h != NULL_HASH)
                odd = np.flatnonzero(~plain).tolist()
            else:
                odd = [i for i, v in enumerate(col) if type(v) in special]
                plain = np.ones(b.n, dtype=bool)
                plain[odd] = False
            extra_owners, extra_items = [], []
            for i in odd:
                bad, its = reference_items(rule, coll, b.docs[i])
                for variant, value, message in bad:
                    self._add(rule, variant, message, b.docs[i], value)
                extra_owners.extend([i] * len(its))
                extra_items.extend(its)
            # plain values and the odd documents' items, back in document order
            owners = np.concatenate([np.flatnonzero(plain), np.array(extra_owners, dtype=np.int64)])
            hashes = np.concatenate([b.hashes(rule.field)[plain], key_hashes(extra_items)])
            which = np.concatenate([np.full(int(plain.sum()), -1, dtype=np.int64),
                                    np.arange(len(extra_items), dtype=np.int64)])
            order = np.argsort(owners, kind="stable")
            owners, hashes, which = owners[order], hashes[order], which[order]
            items = _Items(col, extra_items, owners, which)
            if not len(hashes):
                return
        self_ref = rule.to == coll
        target = self.keys[rule.to_field] if self_ref else self.spec.imports.get(("keys", rule.to, rule.to_field))
        if target is None and ("keys", rule.to, rule.to_field) in self.spec.shuffled:
            self._send(rule, b, hashes, owners, items)
            return
        if target is None:
            raise RuntimeError(f"no key set for {rule.to}.{rule.to_field}")  # a planning bug, not user input
        if self.deps is not None and not self_ref:
            self.deps.looked_up(("keys", rule.to, rule.to_field), hashes)
        for j in np.flatnonzero(~target.contains(hashes)).tolist():
            d, item = b.docs[j if owners is None else int(owners[j])], items[j]
            if self_ref:  # maybe defined later in the same collection: decide at the end
                self.pending.append(_Pending(rule, int(hashes[j]), d.get("_id"), item, self._user(d), doc_time(d)))
            else:
                self.findings.get(rule, "dangling", where).add(
                    d.get("_id"), item, self._user(d), doc_time(d))

    def _out(self, rule, b: Batch, at, hashes: np.ndarray, values, cmp=None, dated: bool = False) -> None:
        """Rows ``at`` of the batch (None: every document) into the rule's outbox with their
        evidence, for a join on the cluster (checks/shuffle.py)."""
        rows = self.outbox.get(rule.id)
        if rows is None:
            rows = self.outbox[rule.id] = RefRows(dated)
        uf = self.spec.user_field
        users = b.ref_hashes(uf) if uf else np.full(b.n, NONE, dtype=np.int64)
        when = b.when()
        if at is not None:
            users, when = users[at], when[at]
        rows.add(hashes, b.values_at("_id", at), values, users, when, cmp)

    def _send(self, rule: ReferenceRule, b: Batch, hashes: np.ndarray, owners, items) -> None:
        """Every reference of the batch, with its evidence, for a key set held elsewhere."""
        if owners is None:  # one plain value per document
            self._out(rule, b, None, hashes, b.values_at(rule.field))
        else:
            self._out(rule, b, owners, hashes, items.all())

    def _send_children(self, rule, b: Batch) -> None:
        """Every child of the batch that names a parent and has a value to compare, with its
        evidence, for the parent's facts held elsewhere."""
        refs, child = b.ref_hashes(rule.parent_ref), child_column(rule, b)
        keep = np.flatnonzero((refs != NONE) & (child != NONE))
        if len(keep):
            dated = isinstance(rule, TimestampOrderRule)  # the value is the date, kept as its ms
            self._out(rule, b, keep, refs[keep], None if dated else b.values_at(rule.field, keep), child[keep], dated)

    def _unique(self, rule: UniqueRule, seen: dict, b: Batch) -> None:
        if self.spec.join_uniques:  # decided on the cluster by key hash (shuffle.unique_join)
            self._send_keys(rule, b)
            return
        for i, key, value in unique_keys(rule, b.docs):
            d = b.docs[i]
            first = seen.get(key)
            if first is None:
                seen[key] = (d.get("_id"), value, self._user(d), doc_time(d), False)
                continue
            acc = self.findings.get(rule, "duplicate", unique_message(rule, self.spec.collection))
            _id, fvalue, fuser, ftime, reported = first
            if not reported:  # the first holder of the value is part of the duplicate group too
                acc.add(_id, fvalue, fuser, ftime, {"group": str(key)})
                seen[key] = (_id, fvalue, fuser, ftime, True)
            acc.add(d.get("_id"), value, self._user(d), doc_time(d), {"group": str(key)})

    def _send_keys(self, rule: UniqueRule, b: Batch) -> None:
        """Every document's unique key, with its evidence, for the cluster's join."""
        got = list(unique_keys(rule, b.docs))
        if got:
            self._out(rule, b, np.array([i for i, _, _ in got], dtype=np.int64),
                      np.array([k for _, k, _ in got], dtype=np.int64), [v for _, _, v in got])

    def _parent_rule(self, rule, b: Batch, rows_cache: dict) -> None:
        facts: Facts | None = self.spec.imports.get(("facts", rule.parent_collection))
        if facts is None and ("facts", rule.parent_collection) in self.spec.shuffled:
            self._send_children(rule, b)
            return
        if facts is None:
            return
        key = (rule.parent_collection, rule.parent_ref)
        rows = rows_cache.get(key)
        if rows is None:
            refs = b.ref_hashes(rule.parent_ref)
            rows = np.full(b.n, -1, dtype=np.int64)
            present = refs != NONE
            if present.any():
                rows[present] = facts.rows(refs[present])
            rows = rows_cache[key] = rows
        if self.deps is not None:  # every child that names a parent, found or not: a parent may come or go
            child_value = child_column(rule, b)
            refs = b.ref_hashes(rule.parent_ref)
            keep = (refs != NONE) & (child_value != NONE)  # a child without a value never violates
            self.deps.parents(rule, refs[keep], child_value[keep])
        if not (rows >= 0).any():  # a missing parent is the reference rule's finding
            return
        got = verdict(rule, self.spec.collection, facts, rows, child_column(rule, b))
        if got is not None and got[0].any():
            bad, variant, message = got
            values = b.values(rule.field)
            for i in np.flatnonzero(bad).tolist():
                self._add(rule, variant, message, b.docs[i], values[i], extra(rule, facts, int(rows[i])))

    def _sync(self, rule: SyncRule, b: Batch) -> None:
        coll = self.spec.collection
        docs = b.docs
        cutoff = self.spec.sync_cutoffs.get(rule.id)
        secondary = self.spec.imports.get(("keys", "secondary:" + rule.id, "_id"))
        if secondary is not None:
            for i in np.flatnonzero(~secondary.contains(b.hashes("_id"))).tolist():
                self._add(rule, "missing_in_secondary", f"{coll} documents missing from the secondary system",
                          docs[i], docs[i]["_id"])
        if cutoff is not None:
            col = b.values(rule.timestamp_field)
            for i in [i for i, v in enumerate(col) if isinstance(v, datetime) and v > cutoff]:
                self._add(rule, "changed_after_sync",
                          f"{coll}.{rule.timestamp_field} is later than the last synchronisation", docs[i], col[i],
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
        counts = {f: c.counter() for f, c in self.child_counts.items()}
        return PassResult(self.spec.collection, self.docs, seconds, self.findings.results(), keys,
                          self.facts, counts, self.watermark)
