"""Per-document fingerprints of a collection: {_id key: (_id, sha256 of the raw BSON)}.

The key is the BSON encoding of ``{_id: value}`` so any _id type (documents included) works.
Memory is one small entry per document: fine to millions; beyond that, partition by _id
(FerretDB 1.24 would scan once per partition, see docs/checks.md).
"""

from __future__ import annotations

import hashlib
from typing import Callable

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)


def id_key(_id) -> bytes:
    return bson.encode({"_id": _id})


def fingerprints(db: Database, name: str, extra: Callable[[RawBSONDocument], object] | None = None,
                 query: dict | None = None) -> dict[bytes, tuple]:
    out = {}
    for doc in db.get_collection(name, codec_options=RAW).find(query or {}, batch_size=5000):
        _id = doc["_id"]
        digest = hashlib.sha256(doc.raw).digest()
        out[id_key(_id)] = (_id, digest, extra(doc) if extra else None)
    return out


def field_diff(old: dict | None, new: dict | None) -> dict:
    """Top-level fields that differ: {field: [old, new]} (missing shown as None)."""
    old, new = old or {}, new or {}
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
