"""Reading the live documents a plan's changes name, and deciding each change's state.

A change's state against the live document (content hashes, model.content_hash):

- ``done``: live already is ``after`` (for a delete: the document is absent) - nothing to write;
- ``todo``: live is still ``before`` (for an insert: absent) - the change applies;
- ``conflict``: anything else - the document changed after the plan's source point (or an
  insert's _id is taken by a different document); never overwritten silently. A change the
  recipe holds (``held_keys``: written in live after the source point, before the plan read it)
  is a conflict while it would still be written.

Reads are batched per collection (``find({_id: {$in: ...}})``, or one ``find_one`` per _id on
FerretDB, which does not use its _id index for ``$in``), as raw BSON, so the hash is of the
server's bytes. A change's collection "<db>.<coll>" targets another database on the same client
(a sync target); a plain name targets the plan's database.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.database import Database

from ..mongo.by_id import find_by_ids

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True,
                   datetime_conversion=DatetimeConversion.DATETIME_AUTO)
DONE, TODO, CONFLICT = "done", "todo", "conflict"


def id_key(_id) -> bytes:
    """Any _id (documents included) as a dict key: the BSON of ``{_id: value}``."""
    return bson.encode({"_id": _id})


def collection(db: Database, name: str) -> Collection:
    if "." in name:
        other, coll = name.split(".", 1)
        return db.client[other].get_collection(coll, codec_options=RAW)
    return db.get_collection(name, codec_options=RAW)


def raw_hash(doc: RawBSONDocument | None) -> str | None:
    return None if doc is None else hashlib.sha256(doc.raw).hexdigest()


def read_live(db: Database, name: str, ids: Iterable) -> dict[bytes, RawBSONDocument]:
    ids = list(ids)
    if not ids:
        return {}
    return {id_key(d["_id"]): d for d in find_by_ids(collection(db, name), ids)}


def state(live_hash: str | None, before_hash: str | None, after_hash: str | None) -> str:
    if live_hash == after_hash:
        return DONE
    if live_hash == before_hash:
        return TODO
    return CONFLICT


def held_keys(plan) -> dict[tuple[str, bytes], str]:
    """The changes a recipe holds (``plan.params["held"]``: ``{collection, id, why}``, e.g. a
    restored copy's replace of a document live wrote after the copy's point): ``(collection,
    id_key) -> why``. A held change whose live document is still its before-image is a conflict
    all the same - reported, written only when forced by id (or in supersede mode, set aside)."""
    out = {}
    for h in (getattr(plan, "params", None) or {}).get("held") or []:
        if isinstance(h, dict) and "collection" in h and "id" in h:
            out[(h["collection"], id_key(h["id"]))] = str(h.get("why") or "held by the recipe")
    return out
