"""Date order between documents of one collection: a ``timestamp_order`` rule whose parent is
its own collection (a reply is not older than the message it answers).

Shape: one row per document in read order, in flat int64 arrays - the ``_id``'s 63-bit hash,
the user's hash and the document's time, and per rule the parent reference's hash, the child
date and the document's own parent-side date (epoch ms) - plus the ``_id`` itself as 12 raw bytes
when it is an ObjectId (a dict entry otherwise). About 40 + 24 per rule bytes per document, where
a dict of Python objects would cost ~200. A parent may be read after its child, so the rule is
decided at the end of the pass: one argsort of the id hashes and one searchsorted per rule.

Failure behaviour: a child whose parent is unknown (the reference rule's finding) or whose date,
or its parent's, is missing or not a date (the type rule's finding) is skipped, never guessed.
"""

from __future__ import annotations

import math
from array import array
from datetime import datetime, timezone

import numpy as np
from bson import ObjectId

from ..policy.rules import TimestampOrderRule
from .facts import NONE, from_ms
from .findings import Findings
from .values import MISSING, get_path, key_hash


def _hash(value) -> int:
    """An id's hash, only ever compared within this pass (so Python's salted hash() will do for
    ObjectIds, ~20x cheaper than key_hash's BLAKE2b); key_hash for every other type, which keeps
    MongoDB's equalities (3 == 3.0). A collision could hide one finding: the same ~2**-63 odds
    as the key sets'."""
    if type(value) is ObjectId:
        v = hash(value)
        return v if v != NONE else NONE + 1
    return key_hash(value)


def _ms(value) -> int:
    """Epoch ms of a date, NONE otherwise. Not facts.to_ms: this one is on the hot path, and
    its values are only compared with each other."""
    if not isinstance(value, datetime):
        return NONE
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return math.floor(value.timestamp() * 1000)


class SelfOrder:
    def __init__(self, rules: list[TimestampOrderRule]):
        self.rules = rules
        self.h, self.users, self.when = array("q"), array("q"), array("q")
        self.raw = bytearray()  # 12 bytes per row: the ObjectId, zeros for other _id types
        self.other_ids: dict[int, object] = {}
        self.cols = {r.id: (array("q"), array("q"), array("q")) for r in rules}  # ref hash, child ms, own ms

    def add_batch(self, docs: list[dict], user_of, time_of) -> None:
        """Append one row per document; ``user_of(doc)`` is the user's hash or None,
        ``time_of(doc)`` the document's time or None. The hot loop of the pass: locals only."""
        h, users, when, raw, other = self.h, self.users, self.when, self.raw, self.other_ids
        cols = [(r, *self.cols[r.id], r.field == r.parent_field) for r in self.rules]
        for doc in docs:
            _id = doc.get("_id")
            if type(_id) is ObjectId:
                raw += _id.binary
            else:
                other[len(h)] = _id
                raw += bytes(12)
            h.append(_hash(_id))
            u = user_of(doc)
            users.append(NONE if u is None else u)
            last, last_ms = None, NONE
            for r, refs, child, own, same in cols:
                ref = get_path(doc, r.parent_ref)
                refs.append(NONE if ref is MISSING or ref is None else _hash(ref))
                last = get_path(doc, r.field)
                last_ms = _ms(last)
                child.append(last_ms)
                own.append(last_ms if same else _ms(get_path(doc, r.parent_field)))
            t = time_of(doc)
            when.append(last_ms if t is last and t is not None else (NONE if t is None else _ms(t)))

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
            idx = np.minimum(np.searchsorted(sorted_h, refs[rows]), len(sorted_h) - 1)
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
