"""Reads, updates and deletes by a list of ``_id``s, shaped for the server that answers them.

FerretDB 1.24 (SQLite) pushes down one filter only, ``{_id: <string or ObjectId>}``: it answers
that from its index in milliseconds, and scans the whole collection for anything else, including
``{_id: {$in: [...]}}`` (200 ids: 3 s on 20k documents, 17 s on 200k). There, a short list of such
ids goes one id at a time (reads up to 1000, writes up to 16: its writes by ``_id`` cost a
twentieth of a scan, not a millisecond); a real MongoDB, a longer list or other id types take one
``$in``.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from bson import ObjectId
from pymongo.collection import Collection

from .unsupported import is_ferretdb

# where one id at a time beats one $in (measured on 30k documents: a scan 1.5-3 s, find_one by
# _id 0.8 ms, but update_one and delete_one by _id 130 ms - FerretDB does not answer writes from
# the index - and they grow with the collection as scans do, so writes pay off only for a few)
PER_ID_READS = 1000
PER_ID_WRITES = 16

def one_at_a_time(coll: Collection, ids: list, most: int = PER_ID_READS) -> bool:
    """True where each id is its own lookup and ``most`` of them are cheaper than one ``$in``."""
    return (len(ids) <= most and is_ferretdb(coll.database.client)
            and all(isinstance(i, (str, ObjectId)) for i in ids))


def find_by_ids(coll: Collection, ids: Iterable, projection: dict | None = None, most: int = PER_ID_READS) -> Iterator:
    """The documents among ``ids`` that exist (order not promised). ``most``: the longest list
    read one id at a time on FerretDB."""
    ids = list(ids)
    if not ids:
        return iter(())
    if one_at_a_time(coll, ids, most):
        found = (coll.find_one({"_id": i}, projection) for i in ids)
        return (d for d in found if d is not None)
    return iter(coll.find({"_id": {"$in": ids}}, projection))


def update_by_ids(coll: Collection, ids: Iterable, update: dict) -> int:
    """Apply ``update`` to each of ``ids``; the number matched."""
    ids = list(ids)
    if not ids:
        return 0
    if one_at_a_time(coll, ids, PER_ID_WRITES):
        return sum(coll.update_one({"_id": i}, update).matched_count for i in ids)
    return coll.update_many({"_id": {"$in": ids}}, update).matched_count


def delete_by_ids(coll: Collection, ids: Iterable) -> int:
    """Delete each of ``ids``; the number deleted."""
    ids = list(ids)
    if not ids:
        return 0
    if one_at_a_time(coll, ids, PER_ID_WRITES):
        return sum(coll.delete_one({"_id": i}).deleted_count for i in ids)
    return coll.delete_many({"_id": {"$in": ids}}).deleted_count
