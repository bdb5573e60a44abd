"""Per-document facts of a parent collection, in columns: what child rules look up.

For each parent document: its ``_id`` and, per field, the value's 63-bit hash (equality), its
epoch milliseconds when it is a date (ordering) and its integer value (counters). Numpy columns
cost ~8 bytes per field and document; the dict of tuples they replace cost ~200. Lookups are
vectorised: a batch of child references becomes row indexes with one ``searchsorted``.
"""

from __future__ import annotations

from array import array
from datetime import datetime, timedelta, timezone

import numpy as np

from .columns import Batch
from .keyset import sorted_queries
from .object_column import take_int64
from .values import MISSING, MissingType, get_path, key_hash

NONE = np.iinfo(np.int64).min  # "no value of this kind" in a column
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_ms(value) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(ms))


class Facts:
    def __init__(self, fields: list[str]):
        self.fields = list(fields)
        self.ids: list = []
        # array('q'), not lists: no Python int object per value stays alive while the pass runs
        self._h = array("q")
        self._cols = {f: (array("q"), array("q"), array("q")) for f in self.fields}
        self.frozen = False

    def add(self, doc: dict) -> None:
        self.ids.append(doc["_id"])
        self._h.append(key_hash(doc["_id"]))
        for f, (hs, ms, nums) in self._cols.items():
            v = get_path(doc, f)
            if v is MISSING or v is None:
                hs.append(NONE)
                ms.append(NONE)
                nums.append(NONE)
                continue
            hs.append(key_hash(v))
            ms.append(to_ms(v) if isinstance(v, datetime) else NONE)
            nums.append(int(v) if isinstance(v, int) and not isinstance(v, bool) else NONE)

    def add_batch(self, batch: Batch) -> None:
        """``add`` for every document of a batch, a column at a time (the scan's way)."""
        ids = batch.values("_id")
        if MissingType in batch.types("_id"):
            for d in batch.docs:  # a document without _id: add() says so
                self.add(d)
            return
        self.ids.extend(ids)
        self._h.frombytes(batch.hashes("_id").tobytes())
        for f, (hs, ms, nums) in self._cols.items():
            hs.frombytes(batch.ref_hashes(f).tobytes())
            ms.frombytes(batch.ms(f).tobytes())
            col = batch.values(f)
            nums.extend([int(v) if isinstance(v, int) and not isinstance(v, bool) else NONE for v in col])

    def extend(self, other: "Facts") -> None:
        """Append another unfrozen table's rows (a later partition's, or a bucket's piece)."""
        self.ids.extend(other.ids)
        self._h.extend(other._h)
        for f, cols in self._cols.items():
            for dst, src in zip(cols, other._cols[f]):
                dst.extend(src)

    def take(self, rows: np.ndarray) -> "Facts":
        """The unfrozen rows ``rows`` (ascending) as a table of their own, in read order."""
        out = Facts(self.fields)
        out.ids = [self.ids[i] for i in rows.tolist()]
        out._h = take_int64(self._h, rows)
        out._cols = {f: tuple(take_int64(c, rows) for c in cols) for f, cols in self._cols.items()}
        return out

    def freeze(self) -> "Facts":
        if self.frozen:
            return self
        h = np.frombuffer(self._h, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        self.hashes = h[order]
        self.ids = [self.ids[i] for i in order]
        self.cols = {f: tuple(np.frombuffer(c, dtype=np.int64)[order] for c in cols) for f, cols in self._cols.items()}
        self._h, self._cols, self.frozen = array("q"), {}, True
        return self

    def rows(self, hashes: np.ndarray) -> np.ndarray:
        """Row index of each id hash, -1 where the parent is unknown."""
        self.freeze()
        if len(self.hashes) == 0:
            return np.full(len(hashes), -1, dtype=np.int64)
        order, queries = sorted_queries(hashes)  # cache-friendly: see keyset.sorted_queries
        idx = np.searchsorted(self.hashes, queries)
        idx[idx >= len(self.hashes)] = 0
        rows = np.where(self.hashes[idx] == queries, idx, -1)
        if order is not None:
            rows[order] = rows.copy()
        return rows

    def value_hash(self, field: str) -> np.ndarray:
        return self.cols[field][0]

    def ms(self, field: str) -> np.ndarray:
        return self.cols[field][1]

    def number(self, field: str) -> np.ndarray:
        return self.cols[field][2]

    def __len__(self) -> int:
        self.freeze()
        return len(self.hashes)
