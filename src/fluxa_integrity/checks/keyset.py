"""Compact sets of keys: 8 bytes per key in sorted numpy arrays, checked a batch at a time.

A million ObjectIds as Python objects take ~100 MB; as 63-bit hashes here, 8 MB. Keys are added
in chunks and merged size-tiered (log-structured), so membership of a batch is a few vectorised
``searchsorted`` calls. Beyond memory (10^9 keys = 8 GB) the scan would need an external sort;
docs/checks.md says so.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

BUFFER = 65536  # keys gathered before they are sorted into a chunk


def _sorted_unique(arrays: list[np.ndarray]) -> np.ndarray:
    """Sort and deduplicate in place. np.unique's hash-based path (numpy 2) builds a table
    several times the input's size: at a million keys that was the scan's peak memory."""
    a = np.concatenate(arrays) if len(arrays) > 1 else arrays[0].copy()
    a.sort()
    if len(a) > 1:
        keep = np.empty(len(a), dtype=bool)
        keep[0] = True
        np.not_equal(a[1:], a[:-1], out=keep[1:])
        a = a[keep]
    return a


def sorted_queries(hashes: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """A batch's lookups in ascending order, and the permutation that put them there (None when
    they already were). Binary searches for sorted keys walk neighbouring paths of the big sorted
    array, so they hit the CPU's caches: measured 2.7x faster per batch against a million keys."""
    if len(hashes) < 2 or bool((hashes[1:] >= hashes[:-1]).all()):
        return None, hashes
    order = np.argsort(hashes)  # not stable, 3x faster: equal queries get equal answers anyway
    return order, hashes[order]


class KeySet:
    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []  # sorted, unique
        self._pending: list[np.ndarray] = []  # unsorted arrays of recent batches
        self._pending_n = 0

    def add_many(self, hashes) -> None:
        # straight into numpy: long-lived Python ints would pin the allocator's arenas and
        # make RSS grow with the collection even though the set itself is small
        arr = hashes if isinstance(hashes, np.ndarray) else np.fromiter(hashes, dtype=np.int64)
        if len(arr):
            self._pending.append(arr)
            self._pending_n += len(arr)
            if self._pending_n >= BUFFER:
                self._flush()

    def add(self, h: int) -> None:
        self.add_many(np.array([h], dtype=np.int64))

    def _flush(self) -> None:
        if self._pending:
            self._chunks.append(_sorted_unique(self._pending))
            self._pending, self._pending_n = [], 0
        # size-tiered merging: a chunk merges with the previous one once it is as large, so
        # there are O(log n) chunks and each key is re-sorted O(log n) times; merging
        # everything each time re-allocated ever larger arrays, which glibc keeps in the heap
        while len(self._chunks) > 1 and len(self._chunks[-1]) * 2 >= len(self._chunks[-2]):
            last = self._chunks.pop()
            self._chunks[-1] = _sorted_unique([self._chunks[-1], last])

    def freeze(self) -> "KeySet":
        self._flush()
        if len(self._chunks) > 1:
            self._chunks = [_sorted_unique(self._chunks)]
        return self

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean membership for an int64 array of hashes."""
        self._flush()
        found = np.zeros(len(hashes), dtype=bool)
        order, queries = sorted_queries(hashes)
        for chunk in self._chunks:
            if len(chunk) == 0:
                continue
            idx = np.searchsorted(chunk, queries)
            idx[idx == len(chunk)] = 0
            found |= chunk[idx] == queries
        if order is not None:
            found[order] = found.copy()
        return found

    def __len__(self) -> int:
        self.freeze()
        return int(sum(len(c) for c in self._chunks))

    @property
    def nbytes(self) -> int:
        return int(sum(c.nbytes for c in self._chunks)) + 8 * self._pending_n


class HashCounter:
    """How many times each hash was added (children per parent, for counter rules): sorted
    unique hashes with their counts, batches compacted into them as they come, so memory
    follows the number of distinct hashes, not of additions."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add_many(self, hashes: np.ndarray) -> None:
        if len(hashes):
            self._pending.append(hashes)
            self._pending_n += len(hashes)
            if self._pending_n >= BUFFER:
                self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        new = np.concatenate(self._pending)
        self._pending, self._pending_n = [], 0
        keys = np.concatenate([self._keys, new])
        counts = np.concatenate([self._counts, np.ones(len(new), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        self._keys, self._counts = keys[starts], np.add.reduceat(counts, starts)

    def counter(self) -> Counter:
        """The counts as {hash: n}, the shape counter rules read."""
        self._compact()
        return Counter(dict(zip(self._keys.tolist(), self._counts.tolist())))
