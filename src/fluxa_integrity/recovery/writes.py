"""Writing one batch of a plan (or of its undo) with as few server round trips as is safe.

Shape: ``write_batch(coll, inserts, replaces, deletes)`` where ``inserts`` and ``replaces`` are
``[(_id, raw document)]`` and ``deletes`` ``[_id]``; it returns the _ids it could not write
because the live document changed under it (an insert's _id taken meanwhile: duplicate key; a
replace whose document vanished). Inserts go as one ``insert_many(ordered=False)``, deletes as one
``delete_many({_id: {$in}})``, replaces one ``replace_one`` by _id each.

Why batch: FerretDB 1.24 pushes neither ``$in`` nor the filter of an update or delete down to
SQLite, so each ``replace_one``/``delete_one`` scans the collection (measured on 200k documents:
an upsert of a new _id 17 s, a delete 3 s, a replace 0.9 s) while ``insert_many`` of 200 takes
15 ms and one ``delete_many`` scans once for the whole batch. Replaces stay one by one: the only
batched form (delete then insert) would leave documents absent between the two.

Failure behaviour: a value the server refuses is named (mongo.unsupported.refused_values); any
other server error propagates - the caller marks the run failed and a rerun resumes it, reading
each document again (an insert already made reads back as done).
"""

from __future__ import annotations

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from ..mongo.unsupported import refused_values

DUPLICATE_KEY = 11000


def write_batch(coll: Collection, inserts: list, replaces: list, deletes: list, written: list | None = None) -> list:
    """``written`` (optional) collects the _ids written so far, as they are: when a server error
    interrupts the batch, the caller still knows what it wrote."""
    missed, written = [], written if written is not None else []
    if inserts:
        docs = [raw for _, raw in inserts]
        try:
            with refused_values(coll, docs):
                coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            missed += [inserts[e["index"]][0] for e in errors]  # the _id appeared since the batch read
        written += [_id for _id, _ in inserts if _id not in missed]
    for _id, raw in replaces:
        with refused_values(coll, [raw]):
            res = coll.replace_one({"_id": _id}, raw, upsert=False)
        if res.matched_count == 0:
            missed.append(_id)  # deleted since the batch read
        else:
            written.append(_id)
    if deletes:
        coll.delete_many({"_id": {"$in": list(deletes)}})
        written += list(deletes)
    return missed
