"""Changing one value inside a document copy, and the lossless type conversions the correcting
recipes (correct-by-policy S27, migrate S30) allow themselves.

- ``set_path`` / ``unset_path`` edit a document in place at a dotted path: an existing key keeps
  its position (so a corrected document differs from the original only in that value, byte for
  byte elsewhere); a new key is appended, or put in front of ``before`` when that key exists.
- ``coerce(value, types)`` -> the converted value or ``NO_VALUE``: numeric strings to int/long/
  double, ISO-8601 date strings to dates (UTC when no offset; BSON keeps milliseconds, so finer
  digits are dropped), and, for ``convert`` steps only, the reverse directions that cannot lose
  information (number -> string, a whole double -> int, 24-hex string -> ObjectId, "true"/"false"
  -> bool). Anything else is ``NO_VALUE``: a guess is never a correction.
  "Lossless" is checked, not assumed: an integer must fit BSON's int64 (a bigger one cannot be
  stored at all), and a string becomes a double only when the double is finite and reads back as
  the same decimal number (``"1e400"`` would be infinity, ``"12345678901234567890123"`` a double
  that lost digits: both stay ``NO_VALUE``, so the caller falls back to history, default or
  unresolved).
Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from bson import Int64, ObjectId

from ..checks.values import MISSING, bson_type, type_matches

UTC = timezone.utc
NO_VALUE = object()  # no lossless conversion exists
_INT = re.compile(r"[+-]?\d{1,19}")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")


def set_path(doc: dict, path: str, value, before: str | None = None) -> None:
    parts = path.split(".")
    node = doc
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    last = parts[-1]
    if last in node or before is None or before not in node:
        node[last] = value
        return
    items = list(node.items())
    node.clear()
    for k, v in items:
        if k == before:
            node[last] = value
        node[k] = v


def unset_path(doc: dict, path: str) -> None:
    parts = path.split(".")
    node = doc
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def put(doc: dict, path: str, value) -> None:
    """``set_path`` for a value, ``unset_path`` for MISSING."""
    if value is MISSING:
        unset_path(doc, path)
    else:
        set_path(doc, path, value)


def _ms(d: datetime) -> datetime:
    d = d if d.tzinfo else d.replace(tzinfo=UTC)
    return d.astimezone(UTC).replace(microsecond=d.microsecond // 1000 * 1000)


def _int_for(n: int, types: list[str]):
    small = -(2**31) <= n < 2**31
    if ("int" in types or "number" in types) and small:
        return n
    if ("long" in types or "number" in types) and -(2**63) <= n < 2**63:  # BSON has no wider integer
        return Int64(n)
    return NO_VALUE


def _float_of(s: str):
    """``float(s)`` when it is finite and denotes the same decimal number as ``s``, else NO_VALUE."""
    f = float(s)
    if not math.isfinite(f):
        return NO_VALUE
    try:
        same = Decimal(repr(f)) == Decimal(s)
    except InvalidOperation:
        return NO_VALUE
    return f if same else NO_VALUE


def coerce(value, types: list[str] | None, *, widen: bool = False):
    """``value`` converted, without loss, to one of ``types`` (see the module doc)."""
    if not types or type_matches(value, types) or value is None or value is MISSING:
        return NO_VALUE
    if isinstance(value, str):
        s = value.strip()
        if _INT.fullmatch(s):
            out = _int_for(int(s), types)
            if out is not NO_VALUE:
                return out
            if "double" in types and abs(int(s)) < 2**53:
                return float(int(s))
        if _FLOAT.fullmatch(s) and ("double" in types or "number" in types):
            out = _float_of(s)
            if out is not NO_VALUE:
                return out
        if "date" in types and _DATE.fullmatch(s):
            try:
                return _ms(datetime.fromisoformat(s.replace("Z", "+00:00")))
            except ValueError:
                return NO_VALUE
        if widen and "bool" in types and s in ("true", "false"):
            return s == "true"
        if widen and "objectId" in types and re.fullmatch(r"[0-9a-fA-F]{24}", s):
            return ObjectId(s)
        return NO_VALUE
    if not widen:
        return NO_VALUE
    t = bson_type(value)
    if t in ("int", "long", "double") and "string" in types:
        return repr(value) if isinstance(value, float) else str(int(value))
    if t == "double" and value.is_integer():
        return _int_for(int(value), types)
    if t in ("int", "long") and "double" in types and abs(int(value)) < 2**53:
        return float(value)
    if t == "int" and "long" in types:
        return Int64(value)
    if t == "objectId" and "string" in types:
        return str(value)
    return NO_VALUE
