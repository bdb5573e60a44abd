"""Date order between documents of one collection: a ``timestamp_order`` rule whose parent is
its own collection (a reply is not older than the message it answers).

Shape: one row per document in read order, in flat int64 arrays - the ``_id``'s 63-bit hash,
the user's hash and the document's time, and per rule the parent reference's hash, the child
date and the document's own parent-side date (epoch ms) - plus the ``_id`` itself as 12 raw bytes
when it is an ObjectId (a dict entry otherwise: object_column.py). About 40 + 24 per rule bytes
per document, where a dict of Python objects would cost ~200. A parent may be read after its child, so the rule is
decided at the end of the pass: one argsort of the id hashes and one searchsorted per rule.
Rows are appended a batch's columns at a time (columns.py), with the key sets' stable id hash.

Failure behaviour: a child whose parent is unknown (the reference rule's finding) or whose date,
or its parent's, is missing or not a date (the type rule's finding) is skipped, never guessed.
"""

from __future__ import annotations

from array import array

import numpy as np

from ..policy.rules import TimestampOrderRule
from .columns import Batch
from .facts import NONE, from_ms
from .findings import Findings
from .keyset import sorted_queries
from .object_column import ObjectColumn, take_int64


class SelfOrder:
    def __init__(self, rules: list[TimestampOrderRule]):
        self.rules = rules
        self.h, self.users, self.when = array("q"), array("q"), array("q")
        self.ids = ObjectColumn()
        self.cols = {r.id: (array("q"), array("q"), array("q")) for r in rules}  # ref hash, child ms, own ms
        self.seq: np.ndarray | None = None  # a piece's rows' places in their partition (None: in order)

    def add_batch(self, batch: Batch, users: np.ndarray) -> None:
        """Append one row per document of the batch, a column at a time; ``users`` holds each
        document's user hash (NONE for none). Ids hash with ``key_hash`` (the batch's column)."""
        raw = batch.oid_bytes("_id")
        if raw is not None:
            self.ids.extend_oids(raw)
        else:
            self.ids.extend(batch.values("_id"))
        self.h.frombytes(batch.hashes("_id").tobytes())
        self.users.frombytes(np.ascontiguousarray(users, dtype=np.int64).tobytes())
        self.when.frombytes(batch.when().tobytes())
        for r in self.rules:
            refs, child, own = self.cols[r.id]
            refs.frombytes(batch.ref_hashes(r.parent_ref).tobytes())
            child.frombytes(batch.ms(r.field).tobytes())
            own.frombytes(batch.ms(r.parent_field).tobytes())

    def _id(self, row: int):
        return self.ids.get(row)

    # -- pieces (a Dask run joins them by key hash: checks/shuffle.py) -------------------------
    def take(self, rows: np.ndarray) -> "SelfOrder":
        """The rows ``rows`` (ascending) as a table of their own; ``seq`` keeps their read order."""
        out = SelfOrder(self.rules)
        for name in ("h", "users", "when"):
            setattr(out, name, take_int64(getattr(self, name), rows))
        out.ids = self.ids.take(rows)
        out.cols = {rid: tuple(take_int64(c, rows) for c in cols) for rid, cols in self.cols.items()}
        out.seq = self.row_seq()[rows]
        return out

    def row_seq(self) -> np.ndarray:
        return self.seq if self.seq is not None else np.arange(len(self.h), dtype=np.int64)

    def extend(self, other: "SelfOrder") -> None:
        """Append another table's rows (a later partition's, or a bucket's piece)."""
        self.h.extend(other.h)
        self.users.extend(other.users)
        self.when.extend(other.when)
        self.ids.extend_column(other.ids)
        for rid, cols in self.cols.items():
            for dst, part in zip(cols, other.cols[rid]):
                dst.extend(part)

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """This table as parents: the rows in id-hash order, and the sorted hashes."""
        h = np.frombuffer(self.h, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        return order, h[order]

    def violations(self, rule: TimestampOrderRule, parents: "SelfOrder", index) -> tuple[np.ndarray, np.ndarray]:
        """This table's rows (as children, ascending) whose date breaks ``rule`` against their
        parent in ``parents`` (``index``: its ``index()``), and those parents' rows."""
        order, sorted_h = index
        refs, child, _ = (np.frombuffer(c, dtype=np.int64) for c in self.cols[rule.id])
        own = np.frombuffer(parents.cols[rule.id][2], dtype=np.int64)
        rows = np.flatnonzero((refs != NONE) & (child != NONE))
        if not len(rows) or not len(sorted_h):
            return rows[:0], rows[:0]
        perm, queries = sorted_queries(refs[rows])
        idx = np.minimum(np.searchsorted(sorted_h, queries), len(sorted_h) - 1)
        if perm is not None:  # back to the rows' order
            idx[perm] = idx.copy()
        known = sorted_h[idx] == refs[rows]
        found = order[idx]
        parent_ms = np.where(known, own[found], NONE)
        ok = parent_ms != NONE
        bad = ok & ((child[rows] < parent_ms) if rule.relation == "not_before" else (child[rows] > parent_ms))
        return rows[bad], found[bad]

    def evidence(self, rule: TimestampOrderRule, collection: str, parents: "SelfOrder", rows, found) -> list[tuple]:
        """``(seq, variant, message, _id, value, user, time, extra)`` of each violation."""
        variant, word = ("before_parent", "before") if rule.relation == "not_before" else ("after_parent", "after")
        message = (f"{collection}.{rule.field} is {word} its parent's {rule.parent_field} "
                   f"({collection}.{rule.parent_ref} -> {collection})")
        child = np.frombuffer(self.cols[rule.id][1], dtype=np.int64)
        own = np.frombuffer(parents.cols[rule.id][2], dtype=np.int64)
        seq = self.row_seq()
        out = []
        for row, parent in zip(rows.tolist(), found.tolist()):
            user, when = self.users[row], self.when[row]
            out.append((int(seq[row]), variant, message, self._id(row), from_ms(child[row]),
                        None if user == NONE else int(user), None if when == NONE else from_ms(when),
                        {"parent": parents._id(parent), "parent_value": from_ms(own[parent])}))
        return out

    def finish(self, collection: str, out: Findings) -> None:
        if not len(self.h):
            return
        index = self.index()
        for r in self.rules:
            rows, found = self.violations(r, self, index)
            add_rows(out, r, self.evidence(r, collection, self, rows, found))


def add_rows(out: Findings, rule, rows: list[tuple]) -> None:
    """Violations as ``evidence`` gives them, in the order given."""
    for _seq, variant, message, _id, value, user, when, extra in rows:
        out.get(rule, variant, message).add(_id, value, user, when, extra)
