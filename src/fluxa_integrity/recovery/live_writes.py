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
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.errors import PyMongoError

from ..backup.oplog_sources import plan_chain, read_chain
from ..errors import FluxaError

UTC = timezone.utc
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
CLOCK_SLACK = timedelta(seconds=2)  # read from a little before: a Timestamp's seconds are not its wall time


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _entries(store, client, db_name: str, start: Timestamp, notes: list[str]) -> Iterator[RawBSONDocument]:
    bound = Timestamp(int(datetime.now(UTC).timestamp()) + 3600, 0)  # everything up to now
    try:
        if store is None:
            raise FluxaError("no state store: the oplog archive was not consulted")
        chain = plan_chain(store, client, db_name, start, bound)
    except FluxaError as exc:
        notes.append(f"oplog archive not used ({exc.message}): only the live oplog was read")
        oplog = client.local.get_collection("oplog.rs", codec_options=RAW)
        try:
            first = next(iter(oplog.find({}, {"ts": 1}).sort("$natural", 1).limit(1)), None)
        except PyMongoError as err:
            notes.append(f"no oplog could be read: {err}")
            return
        if first is None:
            notes.append("the live oplog is empty")
            return
        if first["ts"] > start:
            notes.append(f"the live oplog starts at {first['ts'].as_datetime():%Y-%m-%dT%H:%M:%SZ}: writes before "
                         "that are not seen")
        yield from oplog.find({"ts": {"$gt": start}}).sort("$natural", 1)
        return
    yield from read_chain(chain, start, bound, [])


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
    since = _aware(since)
    wanted = {f"{db_name}.{c}": c for c in collections}
    out: dict[str, dict[bytes, datetime]] = {c: {} for c in wanted.values()}
    notes: list[str] = []
    start = Timestamp(int((since - CLOCK_SLACK).timestamp()), 0)
    for entry in _entries(store, client, db_name, start, notes):
        wall = entry.get("wall")
        when = _aware(wall) if isinstance(wall, datetime) else entry["ts"].as_datetime()
        if when <= since:
            continue
        for ns, _op, _id in _ops(entry):
            coll = wanted.get(ns)
            if coll is not None:
                out[coll][bson.encode({"_id": _id})] = when
    return out, notes
