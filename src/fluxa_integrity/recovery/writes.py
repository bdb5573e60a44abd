"""Writing one batch of a plan (or of its undo) with as few server round trips as is safe.

Shape: ``write_batch(coll, inserts, replaces, deletes, written, raced)`` where ``inserts`` and
``replaces`` are ``[(_id, raw document)]`` and ``deletes`` ``[(_id, sha256 of the live bytes the
caller read and journaled)]``; it returns the _ids it could not write because the live document
changed under it (an insert's _id taken meanwhile: duplicate key; a replace whose document
vanished). Inserts go as one ``insert_many(ordered=False)``, replaces one ``replace_one`` by _id
each. Deletes depend on the server:

- where ``find_one_and_delete`` is cheap (a real MongoDB: an index lookup), one per document: the
  server returns the bytes it deleted, and bytes other than the journaled ones (a write that
  landed between the batch's read and the delete) go to ``raced`` as ``(_id, raw)`` - the caller
  keeps them (superseded journal) and reports a conflict, so the concurrent write is not lost;
- on FerretDB (each ``find_one_and_delete`` scans the collection) one ``delete_many`` by ``$in``:
  a write that lands in the instant between the batch's read and the delete is lost with it
  (the residual race, documented in docs/recovery.md).

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

import hashlib

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from ..mongo.by_id import delete_by_ids
from ..mongo.unsupported import is_ferretdb, refused_values

DUPLICATE_KEY = 11000
def per_document_deletes(client) -> bool:
    """True where deletes go one ``find_one_and_delete`` at a time (not FerretDB)."""
    return not is_ferretdb(client)


def write_batch(coll: Collection, inserts: list, replaces: list, deletes: list, written: list | None = None,
                raced: list | None = None) -> list:
    """``written`` (optional) collects the _ids written so far, as they are: when a server error
    interrupts the batch, the caller still knows what it wrote. ``raced`` collects ``(_id, raw)``
    of deletes that removed bytes other than the expected ones (they count as written too: the
    document is gone; the caller keeps the bytes)."""
    missed, written = [], written if written is not None else []
    raced = raced if raced is not None else []
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
    if deletes and per_document_deletes(coll.database.client):
        for _id, expected in deletes:
            gone = coll.find_one_and_delete({"_id": _id})
            if gone is not None and hashlib.sha256(gone.raw).hexdigest() != expected:
                raced.append((_id, gone))  # a write landed after the batch read: the caller keeps it
            written.append(_id)
    elif deletes:
        delete_by_ids(coll, [_id for _id, _ in deletes])
        written += [_id for _id, _ in deletes]
    return missed
