"""Provenance on a rebuilt document, and comparing a rebuilt document with its lost original.

The mark: a recipe that rebuilds a document from another source (reconstruct-from-logs, S26)
puts a small sub-document in the policy's ``provenance_field`` (Fluxa: ``_recovered``):
``{"from": "logs", "logId": <the log entry's _id>}`` for an entry of the log collection,
``{"from": "file", "source": "<file>:<line>"}`` (plus ``logId`` when the line has an ``_id``) for
a JSON-lines file. Keys are plain words, never ``$``-prefixed or dotted, so every server stores
it; the values are the entry's own id or place, so the same entry gives the same mark.

Ground truth: a rebuilt document equals its pre-fault copy **with the provenance field removed**
(field order and types count, as ``model.content_hash``): ``content_hash_without(doc, field)``.
``provenance_field(policy, collection)`` is the field to strip for a collection (None: none).
Pure functions, no I/O; a document without the field hashes as ``content_hash`` does.
"""

from __future__ import annotations

from typing import Any

import bson
from bson.codec_options import CodecOptions

from .model import content_hash

_DECODE = CodecOptions(tz_aware=True)


def mark(from_logs: bool, source: str, log_id: Any) -> dict:
    """The provenance sub-document of a document rebuilt from one log entry."""
    if from_logs:
        return {"from": "logs", "logId": log_id}
    out: dict = {"from": "file", "source": source}
    if log_id is not None:
        out["logId"] = log_id
    return out


def without(doc: dict | None, field: str | None) -> dict | None:
    """A copy of ``doc`` (a dict or a RawBSONDocument) without the top-level ``field``, order kept."""
    if doc is None:
        return None
    plain = bson.decode(doc.raw, _DECODE) if hasattr(doc, "raw") else doc
    if not field or field not in plain:
        return doc
    return {k: v for k, v in plain.items() if k != field}


def content_hash_without(doc: dict | None, field: str | None) -> str | None:
    """``content_hash`` of ``doc`` with its provenance ``field`` removed (None for absence)."""
    return content_hash(without(doc, field))


def provenance_field(policy, collection: str) -> str | None:
    """The field a recipe marks rebuilt documents of ``collection`` with, per the policy."""
    spec = getattr(policy.collections.get(collection), "reconstruct", None)
    return getattr(spec, "provenance_field", None) if spec is not None else None
