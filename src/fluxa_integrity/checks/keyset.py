"""Compact sets of keys: 8 bytes per key in sorted numpy arrays, checked a batch at a time.

A million ObjectIds as Python objects take ~100 MB; as 63-bit hashes here, 8 MB. Keys are added
in chunks and merged log-structured, so membership of a batch is a few vectorised
``searchsorted`` calls. Beyond memory (10^9 keys = 8 GB) the scan would need an external sort;
docs/checks.md says so.
"""

from __future__ import annotations

import numpy as np

MERGE_AT = 8  # chunks kept apart before they are merged into one sorted array


class KeySet:
    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._buffer: list[int] = []

    def add(self, h: int) -> None:
        self._buffer.append(h)
        if len(self._buffer) >= 65536:
            self._flush()

    def add_many(self, hashes) -> None:
        self._buffer.extend(hashes)
        if len(self._buffer) >= 65536:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._chunks.append(np.unique(np.fromiter(self._buffer, dtype=np.int64, count=len(self._buffer))))
            self._buffer = []
        if len(self._chunks) > MERGE_AT:
            self._chunks = [np.unique(np.concatenate(self._chunks))]

    def freeze(self) -> "KeySet":
        self._flush()
        if len(self._chunks) > 1:
            self._chunks = [np.unique(np.concatenate(self._chunks))]
        return self

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean membership for an int64 array of hashes."""
        self._flush()
        found = np.zeros(len(hashes), dtype=bool)
        if self._buffer:
            found |= np.isin(hashes, np.array(self._buffer, dtype=np.int64))
        for chunk in self._chunks:
            if len(chunk) == 0:
                continue
            idx = np.searchsorted(chunk, hashes)
            idx[idx == len(chunk)] = 0
            found |= chunk[idx] == hashes
        return found

    def __len__(self) -> int:
        self.freeze()
        return int(sum(len(c) for c in self._chunks))

    @property
    def nbytes(self) -> int:
        return int(sum(c.nbytes for c in self._chunks)) + 8 * len(self._buffer)
