"""What a Dask run exports held by key hash, and the rules that read it joined there: the
distributed hash join that lets a check's key sets, facts and counts outgrow one machine
(issue 13, item 4; checks/dask_pool.py runs it, docs/checks.md "What stays on the cluster").

Shape: a finished partition (``take_out``) cuts into ``buckets`` pieces by ``hash mod buckets``
its key sets (``split_keys``), its per-id facts (``split_facts``), its children counted per
parent (``split_counts``), its same-collection date-order rows (by id hash as parents, by
reference hash as children) and the rows it wrote for rules it could not decide alone
(``RefRows``): one per reference or unique key, with the evidence a finding needs (the hash,
the document's ``_id``, the value, the user's hash, the document's time, a parent rule's child
value), about 50-60 bytes a row. Bucket ``b`` of each is put together from every partition
(``union``, ``union_facts``, ``union_counts``) and held by one worker. The joins - ``join``
(references against key sets), ``parent_join`` (parent rules against facts), ``order_join``,
``unique_join`` and ``counter_join`` - run bucket by bucket and return only violations, each
with its place in its partition, so the client adds them partition by partition in read order
(``add_joined``) and the findings, samples included, are a single pass's. References to the
same collection are first looked up inside the partition, as a single pass does; only those
not found there go to the join.

Failure behaviour: none of its own; the executor reruns a lost task from its inputs.
"""

from __future__ import annotations

from array import array

import numpy as np
from bson.tz_util import utc as bson_utc

from ..policy.rules import CopiedFieldRule, ReferenceRule, SyncRule, TimestampOrderRule, UniqueRule
from .collection_rules import counter_violations
from .document_rules import dangling_message, unique_message
from .facts import NONE, Facts, from_ms, to_ms
from .findings import Findings
from .keyset import KeySet
from .object_column import ObjectColumn, take_int64
from .parent_rules import extra as parent_extra, verdict
from .self_order import add_rows

def _by_bucket(h: np.ndarray, buckets: int) -> list[np.ndarray]:
    """The rows of each bucket (``hash mod buckets``), ascending."""
    of = np.remainder(h, buckets)
    return [np.flatnonzero(of == b) for b in range(buckets)]


class RefRows:
    """References to look up in a key set held elsewhere, one row each, in read order."""

    __slots__ = ("h", "seq", "users", "when", "cmp", "ids", "values", "dated")

    def __init__(self, dated: bool = False) -> None:
        self.h, self.seq, self.users, self.when = array("q"), array("q"), array("q"), array("q")
        self.cmp = array("q")  # a parent rule's child side (parent_rules.child_column), NONE otherwise
        self.ids, self.values = ObjectColumn(), ObjectColumn()
        # the values are dates, kept as their ms in ``cmp`` (a date-order rule's child date)
        self.dated = dated

    def __len__(self) -> int:
        return len(self.h)

    def add(self, hashes: np.ndarray, ids, values, users: np.ndarray, when: np.ndarray,
            cmp: np.ndarray | None = None) -> None:
        """``ids``/``values``: 12 bytes per row when all ObjectIds, else a list of objects
        (``values`` None when ``dated``: they are ``cmp``)."""
        start = len(self.h)
        if values is None:
            values = bytes(12 * len(hashes))  # placeholders: the dates are in cmp
        self.cmp.frombytes((np.full(len(hashes), NONE, dtype=np.int64) if cmp is None
                            else np.ascontiguousarray(cmp, dtype=np.int64)).tobytes())
        self.h.frombytes(np.ascontiguousarray(hashes, dtype=np.int64).tobytes())
        self.seq.frombytes(np.arange(start, start + len(hashes), dtype=np.int64).tobytes())
        self.users.frombytes(np.ascontiguousarray(users, dtype=np.int64).tobytes())
        self.when.frombytes(np.ascontiguousarray(when, dtype=np.int64).tobytes())
        for col, got in ((self.ids, ids), (self.values, values)):
            if isinstance(got, (bytes, bytearray)):
                col.extend_oids(got)
            else:
                col.extend(got)

    def add_pending(self, pending: list) -> None:
        """A pass's unresolved self-references (scan._Pending), in their read order."""
        if not pending:
            return
        dates = [p.when for p in pending]
        self.add(np.array([p.h for p in pending], dtype=np.int64), [p._id for p in pending],
                 [p.value for p in pending], np.array([NONE if p.user is None else p.user for p in pending],
                                                      dtype=np.int64),
                 np.array([NONE if d is None else to_ms(d) for d in dates], dtype=np.int64))

    def _take(self, rows: np.ndarray) -> "RefRows":
        out = RefRows(self.dated)
        for name in ("h", "seq", "users", "when", "cmp"):
            setattr(out, name, take_int64(getattr(self, name), rows))
        out.ids, out.values = self.ids.take(rows), self.values.take(rows)
        return out

    def split(self, buckets: int) -> list["RefRows"]:
        """The rows cut by ``hash mod buckets``, each piece in read order."""
        return [self._take(rows) for rows in _by_bucket(np.frombuffer(self.h, dtype=np.int64), buckets)]

    def rows(self, which: np.ndarray, variant: str, message: str, extra=None) -> list[tuple]:
        """Evidence of the rows ``which``, as ``self_order.add_rows`` takes it: ``(seq, variant,
        message, _id, value, user hash or None, time or None, extra(row) or None)``."""
        out = []
        for r in which.tolist():
            user, when = self.users[r], self.when[r]
            value = from_ms(self.cmp[r]).replace(tzinfo=bson_utc) if self.dated else self.values.get(r)
            out.append((self.seq[r], variant, message, self.ids.get(r), value, None if user == NONE else user,
                        None if when == NONE else from_ms(when), extra(r) if extra is not None else None))
        return out


def split_keys(ks: KeySet, buckets: int) -> list[np.ndarray]:
    """A key set's sorted keys cut by ``hash mod buckets`` (each piece still sorted, unique)."""
    ks.freeze()
    keys = ks._chunks[0] if ks._chunks else np.empty(0, dtype=np.int64)
    return [keys[rows] for rows in _by_bucket(keys, buckets)]


def union(pieces) -> KeySet:
    """One bucket of a collection's key set, from every partition's piece of it."""
    ks = KeySet()
    for p in pieces:
        ks.add_many(p)
    return ks.freeze()


def join(rule: ReferenceRule, collection: str, keys: KeySet, pieces) -> list[list[tuple]]:
    """Per piece (a partition's rows of this bucket), the evidence of the references ``keys``
    lacks: the rule's dangling finding."""
    message = dangling_message(rule, collection)
    return [p.rows(np.flatnonzero(~keys.contains(np.frombuffer(p.h, dtype=np.int64))), "dangling", message)
            if len(p) else [] for p in pieces]


def parent_join(rule, collection: str, facts: Facts, pieces) -> list[list[tuple]]:
    """Per piece, the evidence of the children that break a parent rule against this bucket of
    the parent's facts (parent_rules.verdict, as a single pass decides it)."""
    out = []
    for p in pieces:
        if not len(p):
            out.append([])
            continue
        rows = facts.rows(np.frombuffer(p.h, dtype=np.int64))
        got = verdict(rule, collection, facts, rows, np.frombuffer(p.cmp, dtype=np.int64))
        if got is None or not got[0].any():
            out.append([])
            continue
        bad, variant, message = got
        out.append(p.rows(np.flatnonzero(bad), variant, message, lambda r: parent_extra(rule, facts, int(rows[r]))))
    return out


def unique_join(rule: UniqueRule, collection: str, pieces) -> list[list[tuple]]:
    """One bucket of a unique rule: every partition's keys of the bucket (``pieces``, in
    partition order), grouped; the members of each group seen more than once, filed under the
    partition and place where a single pass reports them - the first holder when the second
    arrives, just before it, every later member at its own place - so ``add_joined`` adds them
    in the single pass's order."""
    out: list[list[tuple]] = [[] for _ in pieces]
    live = [(k, p) for k, p in enumerate(pieces) if len(p)]
    if not live:
        return out
    h = np.concatenate([np.frombuffer(p.h, dtype=np.int64) for _, p in live])
    part = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in live])
    row = np.concatenate([np.arange(len(p), dtype=np.int64) for _, p in live])
    order = np.lexsort((row, part, h))  # by key, then read order (partition, place in it)
    h, part, row = h[order], part[order], row[order]
    starts = np.flatnonzero(np.concatenate([[True], h[1:] != h[:-1]]))
    sizes = np.diff(np.append(starts, len(h)))
    message = unique_message(rule, collection)
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        group = {"group": str(int(h[start]))}
        second = (int(part[start + 1]), int(row[start + 1]))
        for m in range(start, start + size):
            k, r = int(part[m]), int(row[m])
            p = pieces[k]
            where, when_k = ((p.seq[r], 1), k) if m > start else ((pieces[second[0]].seq[second[1]], 0), second[0])
            user, when = p.users[r], p.when[r]
            out[when_k].append((where, "duplicate", message, p.ids.get(r), p.values.get(r),
                                None if user == NONE else user, None if when == NONE else from_ms(when), group))
    return out


def split_facts(facts: Facts, buckets: int) -> list[Facts]:
    """A partition's facts (unfrozen, in read order) cut by id hash."""
    return [facts.take(rows) for rows in _by_bucket(np.frombuffer(facts._h, dtype=np.int64), buckets)]


def union_facts(pieces) -> Facts:
    """One bucket of a collection's facts, from every partition's piece, in partition order."""
    pieces = list(pieces)
    out = Facts(pieces[0].fields) if pieces else Facts([])
    for p in pieces:
        out.extend(p)
    return out.freeze()


def split_counts(counts, buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A partition's children per parent ({id hash: n}) cut by id hash, as (hashes, counts)."""
    keys = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    n = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    return [(keys[rows], n[rows]) for rows in _by_bucket(keys, buckets)]


def union_counts(pieces) -> tuple[np.ndarray, np.ndarray]:
    """One bucket of the children counted per parent, summed over every partition."""
    pieces = list(pieces)
    if not pieces:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    keys = np.concatenate([k for k, _ in pieces])
    n = np.concatenate([c for _, c in pieces])
    uniq, at = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(at, weights=n, minlength=len(uniq)).astype(np.int64)


def counter_join(rule, facts: Facts, counts: tuple[np.ndarray, np.ndarray]) -> list[tuple]:
    """One bucket of a counter rule: collection_rules.counter_violations on it."""
    keys, n = counts
    return counter_violations(rule, facts, dict(zip(keys.tolist(), n.tolist())))


# -- what a pass sends and keeps ---------------------------------------------------------------
def bucketed_fields(spec) -> list[str]:
    """The key sets of a pass held by bucket: what it exports, and the targets of its
    references to itself. None when the collection has a sync rule: the run compares its
    whole key set with the secondary system on the client (runner.sync_extra_findings)."""
    if any(isinstance(r, SyncRule) for r in spec.rules):
        return []
    own = {r.to_field for r in spec.rules if isinstance(r, ReferenceRule) and r.to == spec.collection}
    return sorted(set(spec.export_keys) | own)


def joined_rules(spec, fields: list[str]) -> list:
    """The rules of a pass decided by the join: references whose target key set is held by
    bucket, parent rules whose parent's facts are, and unique rules when the pass sends its keys."""
    coll = spec.collection
    return [r for r in spec.rules if (isinstance(r, ReferenceRule) and (
        (r.to == coll and r.to_field in fields) or ("keys", r.to, r.to_field) in spec.shuffled)) or (
        isinstance(r, (TimestampOrderRule, CopiedFieldRule)) and r.parent_collection != coll
        and ("facts", r.parent_collection) in spec.shuffled) or (isinstance(r, UniqueRule) and spec.join_uniques)]


def order_rules(spec) -> list[str]:
    """Ids of the pass's date-order rules whose parent is in the same collection (self_order.py)."""
    return [r.id for r in spec.rules if isinstance(r, TimestampOrderRule) and r.parent_collection == spec.collection]


def take_out(partial, spec, buckets: int) -> dict:
    """A finished partition's key sets, references and date-order rows, cut into buckets and
    taken out of the partial (which then holds only what the client merges): ``{"keys": {field:
    [keys per bucket]}, "refs": {rule id: [RefRows per bucket]}, "parents": [rows per bucket by
    id hash] or None, "children": {rule id: [rows per bucket by parent-reference hash]}, "facts":
    [facts per bucket] or None, "counts": {field: [(hashes, counts) per bucket]}}``."""
    fields = bucketed_fields(spec)
    keys = {f: split_keys(partial.keys.pop(f), buckets) for f in fields}
    refs = {}
    for r in joined_rules(spec, fields):
        rows = partial.outbox.pop(r.id, None) or RefRows()
        if isinstance(r, ReferenceRule) and r.to == spec.collection:
            rows.add_pending([p for p in partial.pending if p.rule.id == r.id])
        refs[r.id] = rows.split(buckets)
    partial.pending = [p for p in partial.pending if p.rule.id not in refs]
    facts = None
    if partial.facts is not None:
        facts, partial.facts = split_facts(partial.facts, buckets), None
    counts = {f: split_counts(partial.child_counts.pop(f), buckets) for f in list(partial.child_counts)}
    parents, children, so = None, {}, partial.self_order
    if so is not None:
        partial.self_order = None
        parents = [so.take(rows) for rows in _by_bucket(np.frombuffer(so.h, dtype=np.int64), buckets)]
        for r in so.rules:
            ref = np.frombuffer(so.cols[r.id][0], dtype=np.int64)
            child = np.frombuffer(so.cols[r.id][1], dtype=np.int64)
            of = np.where((ref != NONE) & (child != NONE), np.remainder(ref, buckets), -1)
            children[r.id] = [so.take(np.flatnonzero(of == b)) for b in range(buckets)]
    return {"keys": keys, "refs": refs, "parents": parents, "children": children, "facts": facts, "counts": counts}


def order_join(collection: str, parents: list, children: dict) -> dict:
    """One bucket of a same-collection date-order rule: every partition's rows whose id hash
    falls in it (``parents``) against every partition's rows whose parent reference does
    (``children[rule id]``, one piece per partition): rule id -> the violations per partition."""
    table = None
    for p in parents:
        if table is None:
            table = p.take(np.arange(len(p.h)))  # a copy: the pieces stay as Dask holds them
        else:
            table.extend(p)
    out = {}
    index = table.index()
    for rid, pieces in children.items():
        rule = next(r for r in table.rules if r.id == rid)
        got = []
        for piece in pieces:
            rows, found = piece.violations(rule, table, index)
            got.append(piece.evidence(rule, collection, table, rows, found))
        out[rid] = got
    return out


def add_joined(findings: Findings, rule, collection: str, per_part: list[list[tuple]]) -> None:
    """What the join found for one rule (dangling references, dates out of order, fields that
    differ from the parent's), partition by partition in read order."""
    for rows in per_part:
        add_rows(findings, rule, sorted(rows, key=lambda r: r[0]))
