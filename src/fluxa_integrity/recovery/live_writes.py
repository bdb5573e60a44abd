"""Which documents were written in live after a point in time, from the oplog: the archived
slices and incremental backups chained with the live oplog (backup/oplog_sources.py, the chain
point-in-time restore and document_history read).

``written_since(store, client, db_name, collections, since)`` -> ``(written, notes)``:
``written`` maps each collection to ``{bson key of _id: wall time of its newest write}`` for
every insert, update, replace or delete (also inside an ``applyOps``) stamped after ``since``;
``notes`` says what could not be read. Memory: one key per written document; entries are
streamed, only their ``ns``/``op``/``_id`` read.

Failure behaviour, tolerant: a window the chain cannot cover (a gap, a damaged slice, no state
store) is read from the live oplog alone and a note says from when; no oplog at all is a note.
The caller treats the result as a lower bound (what it proves was written), never as proof that
nothing else was.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

import bson
from bson.timestamp import Timestamp
from pymongo.errors import PyMongoError

from ..backup.retention import aware
from .document_history import entries_between

UTC = timezone.utc
CLOCK_SLACK = timedelta(seconds=2)  # read from a little before: a Timestamp's seconds are not its wall time


def _ops(entry) -> Iterator[tuple[str, str, object]]:
    """(ns, op, _id) of each document write in an entry (applyOps unpacked)."""
    op = entry.get("op")
    if op in ("i", "u", "d"):
        o = entry.get("o2") if op == "u" else entry.get("o")
        if o is not None and "_id" in o:
            yield entry["ns"], op, o["_id"]
    elif op == "c":
        inner = (entry.get("o") or {}).get("applyOps")
        for sub in inner or []:
            yield from _ops(sub)


def written_since(store, client, db_name: str, collections: Iterable[str],
                  since: datetime) -> tuple[dict[str, dict[bytes, datetime]], list[str]]:
    since = aware(since)
    wanted = {f"{db_name}.{c}": c for c in collections}
    out: dict[str, dict[bytes, datetime]] = {c: {} for c in wanted.values()}
    notes: list[str] = []
    start = Timestamp(int((since - CLOCK_SLACK).timestamp()), 0)
    bound = Timestamp(int(datetime.now(UTC).timestamp()) + 3600, 0)  # everything up to now
    try:
        for entry in entries_between(store, client, db_name, start, bound, notes):
            wall = entry.get("wall")
            when = aware(wall) if isinstance(wall, datetime) else entry["ts"].as_datetime()
            if when <= since:
                continue
            for ns, _op, _id in _ops(entry):
                coll = wanted.get(ns)
                if coll is not None:
                    out[coll][bson.encode({"_id": _id})] = when
    except PyMongoError as err:
        notes.append(f"the oplog could not be read to the end: {err}")
    return out, notes
