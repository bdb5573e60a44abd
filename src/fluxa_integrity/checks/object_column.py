"""Compact columns of a table's rows: values that are nearly always ObjectIds (ids, references)
as 12 raw bytes each, and int64 columns in ``array('q')``; what the date-order rows
(self_order.py) and the Dask join's rows (shuffle.py) are made of.

Shape: ``ObjectColumn`` keeps 12 bytes per row (zeros for a value of another type, which goes
into a dict by row) - a tenth of the memory of a list of ObjectId objects. ``take_int64`` and
``ObjectColumn.take`` copy chosen rows, in order, into a new column.
"""

from __future__ import annotations

from array import array

import numpy as np
from bson import ObjectId

from .values import MISSING, _oid_bytes

_ZERO_ID = bytes(12)


def take_int64(col: array, rows: np.ndarray) -> array:
    """The rows ``rows`` of an ``array('q')``, as a new one."""
    out = array("q")
    out.frombytes(np.frombuffer(col, dtype=np.int64)[rows].tobytes())
    return out


class ObjectColumn:
    """Values in read order: 12 raw bytes each when an ObjectId, in a dict by row otherwise."""

    __slots__ = ("raw", "others", "n")

    def __init__(self) -> None:
        self.raw = bytearray()
        self.others: dict[int, object] = {}
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def extend_oids(self, raw: bytes) -> None:
        self.raw += raw
        self.n += len(raw) // 12

    def extend(self, values) -> None:
        """Append values of any type (an absent one, MISSING, is kept as None)."""
        if values and set(map(type, values)) == {ObjectId}:  # the common case: at C speed
            self.extend_oids(b"".join(map(_oid_bytes, values)))
            return
        for v in values:
            if type(v) is ObjectId:
                self.raw += v.binary
            else:
                self.others[self.n] = None if v is MISSING else v
                self.raw += _ZERO_ID
            self.n += 1

    def extend_column(self, other: "ObjectColumn") -> None:
        self.others.update({self.n + k: v for k, v in other.others.items()})
        self.extend_oids(other.raw)

    def get(self, row: int):
        if row in self.others:
            return self.others[row]
        return ObjectId(bytes(self.raw[12 * row:12 * row + 12]))

    def take(self, rows: np.ndarray) -> "ObjectColumn":
        """The values of ``rows`` (ascending), in that order."""
        out = ObjectColumn()
        out.raw = bytearray(np.frombuffer(self.raw, dtype=np.uint8).reshape(-1, 12)[rows].tobytes()) \
            if len(rows) else bytearray()
        out.n = len(rows)
        if self.others:
            at = np.searchsorted(rows, list(self.others))
            for (row, v), k in zip(self.others.items(), at.tolist()):
                if k < len(rows) and rows[k] == row:
                    out.others[k] = v
        return out
