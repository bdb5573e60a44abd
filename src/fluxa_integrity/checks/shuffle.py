"""Key sets held by key hash, and reference lookups joined against them: the distributed hash
join that lets a Dask run check references whose key set outgrows one machine (issue 13, item 4;
checks/dask_pool.py runs it, docs/scale.md says what it buys).

Shape: a partition's key set is cut into ``buckets`` pieces by ``hash mod buckets``; bucket
``b`` of the collection's key set is the union of every partition's piece ``b`` (``union``),
held by one worker and never sent to the client. A pass that reads a collection whose
reference target is held that way does not look its references up: it writes one row per
reference into ``RefRows`` (the hash, the document's ``_id``, the value, the user's hash and
the document's time - the evidence a finding needs - about 50 bytes a row), cut into the same
buckets. ``join`` looks bucket ``b``'s rows up in bucket ``b``'s key set and returns only the
rows that dangle. References to the same collection (a reply to its parent message) are first
looked up inside the partition, as a single pass does; only those not found there (the
partition's pending references) go to the join. The rows keep their read order (``seq``), so
the client adds the dangling ones partition by partition in read order and the findings,
samples included, are those of a single pass.

Failure behaviour: none of its own; the executor reruns a lost task from its inputs.
"""

from __future__ import annotations

from array import array

import numpy as np
from bson import ObjectId

from ..policy.rules import ReferenceRule, SyncRule, TimestampOrderRule
from .facts import NONE, from_ms, to_ms
from .findings import Findings
from .document_rules import dangling_message
from .keyset import KeySet
from .self_order import add_rows
from .values import MISSING

_ZERO_ID = bytes(12)


class ObjectColumn:
    """Values in read order: 12 raw bytes each when an ObjectId (nearly every ``_id`` and
    reference), in a dict by row otherwise - a tenth of the memory of a list of objects."""

    __slots__ = ("raw", "others", "n")

    def __init__(self) -> None:
        self.raw = bytearray()
        self.others: dict[int, object] = {}
        self.n = 0

    def extend_oids(self, raw: bytes) -> None:
        self.raw += raw
        self.n += len(raw) // 12

    def extend(self, values) -> None:
        for v in values:
            if type(v) is ObjectId:
                self.raw += v.binary
            else:
                self.others[self.n] = None if v is MISSING else v
                self.raw += _ZERO_ID
            self.n += 1

    def get(self, row: int):
        if row in self.others:
            return self.others[row]
        return ObjectId(bytes(self.raw[12 * row:12 * row + 12]))

    def take(self, rows: np.ndarray) -> "ObjectColumn":
        """The values of ``rows`` (ascending), in that order."""
        out = ObjectColumn()
        out.raw = bytearray(np.frombuffer(bytes(self.raw), dtype=np.uint8).reshape(-1, 12)[rows].tobytes()) \
            if len(rows) else bytearray()
        out.n = len(rows)
        if self.others:
            at = np.searchsorted(rows, list(self.others))
            for (row, v), k in zip(self.others.items(), at.tolist()):
                if k < len(rows) and rows[k] == row:
                    out.others[k] = v
        return out


class RefRows:
    """References to look up in a key set held elsewhere, one row each, in read order."""

    __slots__ = ("h", "seq", "users", "when", "ids", "values")

    def __init__(self) -> None:
        self.h, self.seq, self.users, self.when = array("q"), array("q"), array("q"), array("q")
        self.ids, self.values = ObjectColumn(), ObjectColumn()

    def __len__(self) -> int:
        return len(self.h)

    def add(self, hashes: np.ndarray, ids, values, users: np.ndarray, when: np.ndarray) -> None:
        """``ids``/``values``: 12 bytes per row when all ObjectIds, else a list of objects."""
        start = len(self.h)
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
        out = RefRows()
        for name in ("h", "seq", "users", "when"):
            getattr(out, name).frombytes(np.frombuffer(getattr(self, name), dtype=np.int64)[rows].tobytes())
        out.ids, out.values = self.ids.take(rows), self.values.take(rows)
        return out

    def split(self, buckets: int) -> list["RefRows"]:
        """The rows cut by ``hash mod buckets``, each piece in read order."""
        of = np.remainder(np.frombuffer(self.h, dtype=np.int64), buckets)
        return [self._take(np.flatnonzero(of == b)) for b in range(buckets)]

    def rows(self, which: np.ndarray) -> list[tuple]:
        """``(seq, _id, value, user hash or None, time or None)`` of the rows ``which``."""
        out = []
        for r in which.tolist():
            user, when = self.users[r], self.when[r]
            out.append((self.seq[r], self.ids.get(r), self.values.get(r), None if user == NONE else user,
                        None if when == NONE else from_ms(when)))
        return out


def split_keys(ks: KeySet, buckets: int) -> list[np.ndarray]:
    """A key set's sorted keys cut by ``hash mod buckets`` (each piece still sorted, unique)."""
    ks.freeze()
    keys = ks._chunks[0] if ks._chunks else np.empty(0, dtype=np.int64)
    of = np.remainder(keys, buckets)
    return [keys[of == b] for b in range(buckets)]


def union(pieces) -> KeySet:
    """One bucket of a collection's key set, from every partition's piece of it."""
    ks = KeySet()
    for p in pieces:
        ks.add_many(p)
    return ks.freeze()


def join(keys: KeySet, pieces) -> list[list[tuple]]:
    """Per piece (a partition's rows of this bucket), the rows whose key ``keys`` lacks."""
    return [p.rows(np.flatnonzero(~keys.contains(np.frombuffer(p.h, dtype=np.int64)))) if len(p) else []
            for p in pieces]


# -- what a pass sends and keeps ---------------------------------------------------------------
def bucketed_fields(spec) -> list[str]:
    """The key sets of a pass held by bucket: what it exports, and the targets of its
    references to itself. None when the collection has a sync rule: the run compares its
    whole key set with the secondary system on the client (runner.sync_extra_findings)."""
    if any(isinstance(r, SyncRule) for r in spec.rules):
        return []
    own = {r.to_field for r in spec.rules if isinstance(r, ReferenceRule) and r.to == spec.collection}
    return sorted(set(spec.export_keys) | own)


def joined_rules(spec, fields: list[str]) -> list[ReferenceRule]:
    """The reference rules of a pass decided by the join: those whose target is held by bucket."""
    return [r for r in spec.rules if isinstance(r, ReferenceRule) and (
        (r.to == spec.collection and r.to_field in fields) or ("keys", r.to, r.to_field) in spec.shuffled)]


def order_rules(spec) -> list[str]:
    """Ids of the pass's date-order rules whose parent is in the same collection (self_order.py)."""
    return [r.id for r in spec.rules if isinstance(r, TimestampOrderRule) and r.parent_collection == spec.collection]


def take_out(partial, spec, buckets: int) -> dict:
    """A finished partition's key sets, references and date-order rows, cut into buckets and
    taken out of the partial (which then holds only what the client merges): ``{"keys": {field:
    [keys per bucket]}, "refs": {rule id: [RefRows per bucket]}, "parents": [rows per bucket by
    id hash] or None, "children": {rule id: [rows per bucket by parent-reference hash]}}``."""
    fields = bucketed_fields(spec)
    keys = {f: split_keys(partial.keys.pop(f), buckets) for f in fields}
    refs = {}
    for r in joined_rules(spec, fields):
        rows = partial.outbox.pop(r.id, None) or RefRows()
        if r.to == spec.collection:
            rows.add_pending([p for p in partial.pending if p.rule.id == r.id])
        refs[r.id] = rows.split(buckets)
    partial.pending = [p for p in partial.pending if p.rule.id not in refs]
    parents, children, so = None, {}, partial.self_order
    if so is not None:
        partial.self_order = None
        parents = [so.take(rows) for rows in _by_bucket(np.frombuffer(so.h, dtype=np.int64), buckets)]
        for r in so.rules:
            ref = np.frombuffer(so.cols[r.id][0], dtype=np.int64)
            child = np.frombuffer(so.cols[r.id][1], dtype=np.int64)
            of = np.where((ref != NONE) & (child != NONE), np.remainder(ref, buckets), -1)
            children[r.id] = [so.take(np.flatnonzero(of == b)) for b in range(buckets)]
    return {"keys": keys, "refs": refs, "parents": parents, "children": children}


def _by_bucket(h: np.ndarray, buckets: int) -> list[np.ndarray]:
    of = np.remainder(h, buckets)
    return [np.flatnonzero(of == b) for b in range(buckets)]


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
    """What the join found for one rule, partition by partition in read order: dangling
    references (``join``'s rows) or dates out of order (``order_join``'s)."""
    for rows in per_part:
        rows = sorted(rows, key=lambda r: r[0])
        if isinstance(rule, ReferenceRule):
            if rows:
                acc = findings.get(rule, "dangling", dangling_message(rule, collection))
                for _seq, _id, value, user, when in rows:
                    acc.add(_id, value, user, when)
        else:
            add_rows(findings, rule, rows)
