"""Readable values for restore's human output: dates as ISO text, ObjectIds as their hex,
nested documents and arrays inline, strings quoted with control characters escaped.

``readable(value)`` never raises and never returns an empty string for a value that exists;
long renderings are cut with an ellipsis (``limit`` characters). The result is plain text:
print it with ``markup=False`` (Rich would otherwise read ``[2026-...]`` as a style tag and
print nothing - the empty dates of the promote dry run).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from bson import Binary, ObjectId
from bson.decimal128 import Decimal128
from bson.timestamp import Timestamp


def _one(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        v = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
        text = v.isoformat(timespec="milliseconds" if v.microsecond else "seconds")
        return text.replace("+00:00", "Z")
    if isinstance(v, ObjectId):
        return f"ObjectId({v})"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (bytes, Binary)):
        return f"<{len(v)} bytes>"
    if isinstance(v, (uuid.UUID, Decimal128)):
        return str(v)
    if isinstance(v, Timestamp):
        return f"Timestamp({v.time}:{v.inc})"
    if isinstance(v, dict) or hasattr(v, "items"):
        return "{" + ", ".join(f"{k}: {_one(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_one(x) for x in v) + "]"
    return str(v)


def readable(value, limit: int = 160) -> str:
    text = _one(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_changes(fields: dict) -> list[str]:
    """``{field: [live, restored]}`` as lines ``field: live -> restored``."""
    return [f"{k}: {readable(old)} -> {readable(new)}" for k, (old, new) in fields.items()]
