"""The drill's pre-fault copy and the final comparison against it: the drill's verdict.

Shape (in memory): ``Copy.docs[place] = {_id: sha256 hex}`` for every document of each
compared place (``"<coll>"`` in the drill database, ``"<db>.<coll>"`` in another one such as the
secondary system), hashed with recovery/model.content_hash over the server's raw BSON bytes
(field order and types count, exactly as the engine compares), and ``Copy.indexes[place] =
{name: key}``. Taken once before the faults; compared once at the end. ``expect`` lets a
scenario declare documents whose expected final state is not the pre-fault one (a write the
application made on purpose during the drill, such as a user changed after the last sync).

Memory: one dict entry per compared document (about 150 bytes), so a million messages take
about 150 MB; the drill compares only the collections its scenario can touch.
Failure: a server error propagates (the runner records the phase as failed); a missing
collection compares as empty, so a dropped collection shows up as every document missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from ..recovery.model import content_hash
from ..recovery.provenance import content_hash_without

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
SHOWN = 20  # differing ids kept per place and kind in the report


def place_collection(db: Database, place: str):
    """``coll`` in the drill database, or ``other_db.coll`` on the same client."""
    if "." in place:
        other, coll = place.split(".", 1)
        return db.client[other].get_collection(coll, codec_options=RAW)
    return db.get_collection(place, codec_options=RAW)


def hashes_of(db: Database, place: str, tick: Callable[[int], None] | None = None,
              strip: str | None = None) -> dict[Any, str]:
    """``strip``: the policy's provenance field, left out of the hash (a rebuilt document equals
    its lost original without the mark saying where it was rebuilt from: recovery/provenance.py)."""
    out: dict[Any, str] = {}
    for i, doc in enumerate(place_collection(db, place).find({}, batch_size=2000), 1):
        out[doc["_id"]] = content_hash_without(doc, strip) if strip and strip in doc else content_hash(doc)
        if tick is not None and i % 5000 == 0:
            tick(i)
    return out


def indexes_of(db: Database, place: str) -> dict[str, list]:
    return {ix["name"]: [list(kv) for kv in ix["key"].items()]
            for ix in place_collection(db, place).list_indexes()}


@dataclass
class Copy:
    docs: dict[str, dict[Any, str]] = field(default_factory=dict)
    indexes: dict[str, dict[str, list]] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return sum(len(v) for v in self.docs.values())


def take(db: Database, places: list[str], tick: Callable[[int], None] | None = None) -> Copy:
    copy = Copy()
    done = 0
    for place in places:
        copy.docs[place] = hashes_of(db, place, None if tick is None else (lambda n, d=done: tick(d + n)))
        copy.indexes[place] = indexes_of(db, place)
        done += len(copy.docs[place])
    return copy


@dataclass
class Comparison:
    compared: int
    equal: int
    missing: dict[str, list] = field(default_factory=dict)  # in the copy, gone from live
    changed: dict[str, list] = field(default_factory=dict)  # present, different content hash
    extra: dict[str, list] = field(default_factory=dict)  # in live, not in the copy
    missing_indexes: dict[str, list] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per place: missing/changed/extra

    @property
    def lost(self) -> int:
        """Documents of the pre-fault copy that are not back: gone, or back with other content."""
        return sum(c["missing"] + c["changed"] for c in self.counts.values())

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not any(c["extra"] for c in self.counts.values()) and not self.missing_indexes

    def as_dict(self) -> dict:
        return {"compared": self.compared, "equal": self.equal, "lost": self.lost, "ok": self.ok,
                "counts": self.counts, "missing": self.missing, "changed": self.changed, "extra": self.extra,
                "missing_indexes": self.missing_indexes}


def compare(db: Database, copy: Copy, expect: dict[str, dict[Any, str | None]] | None = None,
            tick: Callable[[int], None] | None = None, strip: dict[str, str] | None = None) -> Comparison:
    """Live against the copy, place by place. ``expect[place][_id]`` overrides the expected hash
    of one document (None: it must be absent); ``strip[place]`` is its provenance field."""
    expect = expect or {}
    res = Comparison(compared=0, equal=0)
    for place, before in copy.docs.items():
        wanted = dict(before)
        for _id, h in expect.get(place, {}).items():
            if h is None:
                wanted.pop(_id, None)
            else:
                wanted[_id] = h
        live = hashes_of(db, place, tick, (strip or {}).get(place))
        missing = [i for i in wanted if i not in live]
        changed = [i for i, h in wanted.items() if i in live and live[i] != h]
        extra = [i for i in live if i not in wanted]
        res.compared += len(wanted)
        res.equal += len(wanted) - len(missing) - len(changed)
        res.counts[place] = {"missing": len(missing), "changed": len(changed), "extra": len(extra)}
        for name, ids in (("missing", missing), ("changed", changed), ("extra", extra)):
            if ids:
                getattr(res, name)[place] = sorted(ids, key=str)[:SHOWN]
        keys = list(indexes_of(db, place).values())  # by key: a rebuilt index may be named otherwise
        gone = [n for n, k in copy.indexes.get(place, {}).items() if k not in keys]
        if gone:
            res.missing_indexes[place] = gone
    return res
