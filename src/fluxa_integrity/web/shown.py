"""What a route hands back: JSON-ready (datetimes as ISO 8601 UTC, BSON values as relaxed
Extended JSON, model rows as their columns), then masked for the caller (masking.py): emails for
viewers, secrets for everyone."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Any

from bson import json_util

from ..access.tokens import Principal
from .masking import mask


def jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, datetime):
        return (v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    return json.loads(json_util.dumps(v, json_options=json_util.RELAXED_JSON_OPTIONS))


def columns(row) -> dict:
    """A store row as {column: value} (every column of its table)."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def shown(who: Principal, data: Any) -> Any:
    return mask(jsonable(data), emails=not who.may("responder"))
