"""Date order between documents of one collection: a ``timestamp_order`` rule whose parent is
its own collection (a reply is not older than the message it answers).

Shape: one row per document in read order, in flat int64 arrays - the ``_id``'s 63-bit hash,
the user's hash and the document's time, and per rule the parent reference's hash, the child
date and the document's own parent-side date (epoch ms) - plus the ``_id`` itself as 12 raw bytes
when it is an ObjectId (a dict entry otherwise). About 40 + 24 per rule bytes per document, where
a dict of Python objects would cost ~200. A parent may be read after its child, so the rule is
decided at the end of the pass: one argsort of the id hashes and one searchsorted per rule.
Rows are appended a batch's columns at a time (columns.py), with the key sets' stable id hash.

Failure behaviour: a child whose parent is unknown (the reference rule's finding) or whose date,
or its parent's, is missing or not a date (the type rule's finding) is skipped, never guessed.
"""

from __future__ import annotations

from array import array

import numpy as np
from bson import ObjectId

from ..policy.rules import TimestampOrderRule
from .columns import Batch
from .facts import NONE, from_ms
from .findings import Findings
from .keyset import sorted_queries
from .values import MISSING


class SelfOrder:
    def __init__(self, rules: list[TimestampOrderRule]):
        self.rules = rules
        self.h, self.users, self.when = array("q"), array("q"), array("q")
        self.raw = bytearray()  # 12 bytes per row: the ObjectId, zeros for other _id types
        self.other_ids: dict[int, object] = {}
        self.cols = {r.id: (array("q"), array("q"), array("q")) for r in rules}  # ref hash, child ms, own ms

    def add_batch(self, batch: Batch, users: np.ndarray) -> None:
        """Append one row per document of the batch, a column at a time; ``users`` holds each
        document's user hash (NONE for none). Ids hash with ``key_hash`` (the batch's column)."""
        ids = batch.values("_id")
        base = len(self.h)
        if batch.types("_id") == {ObjectId}:
            self.raw += batch.oid_bytes("_id")
        else:
            for k, _id in enumerate(ids):
                if type(_id) is ObjectId:
                    self.raw += _id.binary
                else:
                    self.other_ids[base + k] = None if _id is MISSING else _id
                    self.raw += bytes(12)
        self.h.frombytes(batch.hashes("_id").tobytes())
        self.users.frombytes(np.ascontiguousarray(users, dtype=np.int64).tobytes())
        self.when.frombytes(batch.when().tobytes())
        for r in self.rules:
            refs, child, own = self.cols[r.id]
            refs.frombytes(batch.ref_hashes(r.parent_ref).tobytes())
            child.frombytes(batch.ms(r.field).tobytes())
            own.frombytes(batch.ms(r.parent_field).tobytes())

    def _id(self, row: int):
        if row in self.other_ids:
            return self.other_ids[row]
        return ObjectId(bytes(self.raw[12 * row:12 * row + 12]))

    def finish(self, collection: str, out: Findings) -> None:
        if not len(self.h):
            return
        h = np.frombuffer(self.h, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        sorted_h = h[order]
        users, when = np.frombuffer(self.users, dtype=np.int64), np.frombuffer(self.when, dtype=np.int64)
        for r in self.rules:
            refs, child, own = (np.frombuffer(c, dtype=np.int64) for c in self.cols[r.id])
            rows = np.flatnonzero((refs != NONE) & (child != NONE))
            if not len(rows):
                continue
            perm, queries = sorted_queries(refs[rows])
            idx = np.minimum(np.searchsorted(sorted_h, queries), len(sorted_h) - 1)
            if perm is not None:  # back to the rows' order
                idx[perm] = idx.copy()
            known = sorted_h[idx] == refs[rows]
            parents = order[idx]
            parent_ms = np.where(known, own[parents], NONE)
            ok = parent_ms != NONE
            if r.relation == "not_before":
                bad = ok & (child[rows] < parent_ms)
                variant, word = "before_parent", "before"
            else:
                bad = ok & (child[rows] > parent_ms)
                variant, word = "after_parent", "after"
            if not bad.any():
                continue
            acc = out.get(r, variant, f"{collection}.{r.field} is {word} its parent's {r.parent_field} "
                                      f"({collection}.{r.parent_ref} -> {collection})")
            for row, parent in zip(rows[bad].tolist(), parents[bad].tolist()):
                acc.add(self._id(row), from_ms(child[row]), None if users[row] == NONE else int(users[row]),
                        None if when[row] == NONE else from_ms(when[row]),
                        {"parent": self._id(parent), "parent_value": from_ms(own[parent])})
