"""One batch of decoded documents seen as columns: each field path the rules read is pulled out
of the documents once, and what rules derive from it (its set of value types, its key hashes,
its dates in epoch ms) is computed once per batch, whichever rules share it.

Shape: ``docs`` (the batch's dicts, in read order) plus caches keyed by field path - a list of
values (MISSING where absent), a frozenset of their Python types, an int64 numpy array of hashes
(``key_hash`` of the value, NONE where absent) and of epoch ms (NONE where not a date). A batch
lives for one call of ``_Scanner.batch``; nothing is kept across batches.

Failure behaviour: none of its own. A column never decides a finding: rules use a column's types
to prove that no document of the batch can violate them, and hand every document they cannot
clear that way to their per-document definition (document_rules.py), so the vectorised path can
only be faster, never different.
"""

from __future__ import annotations

from datetime import datetime
from itertools import compress, repeat
from operator import is_not, itemgetter

import numpy as np
from bson import ObjectId

from .values import (MISSING, NONE, MissingType, _oid_bytes, date_hashes, dates_ms, get_path, key_hash, key_hashes,
                     oid_hashes)

NULL_HASH = key_hash(None)


class Batch:
    __slots__ = ("docs", "n", "_values", "_types", "_hashes", "_ms", "_when", "_oids")

    def __init__(self, docs: list[dict]):
        self.docs = docs
        self.n = len(docs)
        self._values: dict[str, list] = {}
        self._types: dict[str, frozenset] = {}
        self._hashes: dict[str, np.ndarray] = {}
        self._ms: dict[str, np.ndarray] = {}
        self._when: np.ndarray | None = None
        self._oids: dict[str, bytes] = {}

    def values(self, path: str) -> list:
        col = self._values.get(path)
        if col is None:
            if "." in path:
                col = [get_path(d, path) for d in self.docs]
            else:  # documents are dicts: the same as get_path, without the split
                try:  # a field every document has: one C call per document
                    col = list(map(itemgetter(path), self.docs))
                except KeyError:
                    col = list(map(dict.get, self.docs, repeat(path), repeat(MISSING)))
            self._values[path] = col
        return col

    def types(self, path: str) -> frozenset:
        t = self._types.get(path)
        if t is None:
            t = self._types[path] = frozenset(map(type, self.values(path)))
        return t

    def oid_bytes(self, path: str) -> bytes | None:
        """The 12 bytes of each value back to back, when every value is an ObjectId."""
        raw = self._oids.get(path)
        if raw is None and self.types(path) == {ObjectId}:
            raw = self._oids[path] = b"".join(map(_oid_bytes, self.values(path)))
        return raw

    def values_at(self, path: str, rows: np.ndarray | None = None):
        """The values of ``rows`` (None: all): their 12 bytes back to back when all are
        ObjectIds, else a list."""
        raw = self.oid_bytes(path)
        if raw is not None:
            return raw if rows is None else np.frombuffer(raw, dtype=np.uint8).reshape(-1, 12)[rows].tobytes()
        col = self.values(path)
        return col if rows is None else [col[i] for i in rows.tolist()]

    def hashes(self, path: str) -> np.ndarray:
        """key_hash of each value (null included: NULL_HASH), NONE where the field is absent."""
        h = self._hashes.get(path)
        if h is None:
            col = self.values(path)
            types = self.types(path)
            if types == {ObjectId}:
                h = oid_hashes(self.oid_bytes(path))
            elif types == {datetime}:  # from the date column the rules compute anyway
                h = date_hashes(self.ms(path))
            elif MissingType not in types:
                h = key_hashes(col)
            else:
                h = np.full(self.n, NONE, dtype=np.int64)
                mask = list(map(is_not, col, repeat(MISSING)))  # at C speed, not a loop per value
                if any(mask):
                    h[np.flatnonzero(mask)] = key_hashes(list(compress(col, mask)))
            self._hashes[path] = h
        return h

    def ref_hashes(self, path: str) -> np.ndarray:
        """Hashes of the values a reference holds: NONE where absent or null."""
        h = self.hashes(path)
        if type(None) in self.types(path):
            h = np.where(h == NULL_HASH, NONE, h)
        return h

    def ms(self, path: str) -> np.ndarray:
        """Epoch ms of each value that is a date, NONE for any other value or none."""
        m = self._ms.get(path)
        if m is None:
            m = self._ms[path] = dates_ms(self.values(path))
        return m

    def when(self) -> np.ndarray:
        """``values.doc_time`` of each document in epoch ms (NONE where it has none)."""
        if self._when is None:
            w = np.full(self.n, NONE, dtype=np.int64)
            todo = np.ones(self.n, dtype=bool)
            for f in ("timestamp", "createdAt", "lastUpdated"):
                m = self.ms(f)
                fill = todo & (m != NONE)
                w[fill] = m[fill]
                todo &= ~fill
                if not todo.any():
                    break
            else:
                ids = self.values("_id")
                for i in np.flatnonzero(todo).tolist():
                    if isinstance(ids[i], ObjectId):
                        w[i] = dates_ms([ids[i].generation_time])[0]
            self._when = w
        return self._when

    def subset(self, keep: list[int]) -> "Batch":
        return Batch([self.docs[i] for i in keep])


def is_date_column(types: frozenset) -> bool:
    return types == {datetime}
