"""Reading values out of documents: dotted paths, BSON type names, hashes for compact key sets."""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal

from bson import Decimal128, Int64, ObjectId, Timestamp
from bson.binary import Binary
from bson.regex import Regex

MISSING = object()  # a field that is absent, as distinct from a field holding null


def get_path(doc: dict, path: str):
    """Value at a dotted path, or MISSING. Arrays are not traversed (a path names one value)."""
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def bson_type(value) -> str:
    """The $type alias of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, (Decimal128, Decimal)):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, (bytes, Binary)):
        return "binData"
    if isinstance(value, Regex):
        return "regex"
    return type(value).__name__


NUMBER_TYPES = {"int", "long", "double", "decimal"}


def type_matches(value, allowed: list[str]) -> bool:
    t = bson_type(value)
    return t in allowed or ("number" in allowed and t in NUMBER_TYPES)


def key_hash(value) -> int:
    """A 63-bit hash of a BSON value, stable across processes (Python's hash() is salted).

    Equal values hash equal; distinct values collide with probability ~2**-63 per pair, which
    could hide one dangling reference in a set of billions - accepted for an 8-byte key.
    """
    if isinstance(value, ObjectId):
        raw = b"o" + value.binary
    elif isinstance(value, str):
        raw = b"s" + value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bool):
        raw = b"b1" if value else b"b0"
    elif isinstance(value, int):
        raw = b"i" + str(value).encode()
    elif isinstance(value, float) and value.is_integer():
        raw = b"i" + str(int(value)).encode()  # 3.0 matches 3 as MongoDB compares them
    else:
        raw = b"x" + type(value).__name__.encode() + repr(value).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") >> 1


def normalise_key(value, case_insensitive: bool):
    if case_insensitive and isinstance(value, str):
        return value.casefold()
    return value


def doc_time(doc: dict, fields: tuple[str, ...] = ("timestamp", "createdAt", "lastUpdated")) -> datetime | None:
    """The time a document is about: its first date field, else its ObjectId's creation time."""
    for f in fields:
        v = doc.get(f)
        if isinstance(v, datetime):
            return v
    _id = doc.get("_id")
    if isinstance(_id, ObjectId):
        return _id.generation_time
    return None


def short_repr(value, limit: int = 120):
    """A JSON-friendly, bounded rendering of an offending value for samples."""
    if value is MISSING:
        return {"$missing": True}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, str) or len(value) <= limit else value[:limit] + "..."
    if isinstance(value, (datetime, ObjectId)):
        return value
    if isinstance(value, dict) and len(value) <= 10:
        return {str(k): short_repr(v, limit) for k, v in value.items()}
    if isinstance(value, list) and len(value) <= 10:
        return [short_repr(v, limit) for v in value]
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
