"""Client-side evaluation of restore ``--filter`` documents.

The documents are in backup files, not in a server, so there is no query engine to hand the
filter to; a small, exact subset is evaluated here and anything else is refused (better a clear
error than a filter that silently matches the wrong documents): equality, ``$eq``, ``$ne``,
``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists`` on top-level or dotted fields,
with implicit AND between fields. Comparisons follow MongoDB's type bracketing in the simple
way: values of different kinds (number vs string vs date) never match a range.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Callable

from bson import json_util
from bson.objectid import ObjectId
from bson.regex import Regex

from ..errors import FluxaError

SUPPORTED = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
_MISSING = object()
HINT = ("supported: {field: value}, {field: {$eq|$ne|$in|$nin|$gt|$gte|$lt|$lte|$exists: ...}} on top-level or "
        "dotted fields, in Extended JSON (e.g. {\"_id\": {\"$oid\": \"...\"}}, {\"timestamp\": {\"$gte\": "
        "{\"$date\": \"2026-03-01T00:00:00Z\"}}})")


def parse_filter(text: str) -> dict:
    try:
        spec = json_util.loads(text)
    except (ValueError, TypeError) as exc:
        raise FluxaError(f"--filter is not valid (Extended) JSON: {exc}", HINT) from exc
    if not isinstance(spec, dict):
        raise FluxaError("--filter must be a JSON object", HINT)
    compile_filter(spec)  # validate now, before any work
    return spec


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)) or type(v).__name__ in ("Int64", "Decimal128"):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dt.datetime):
        return "date"
    if isinstance(v, ObjectId):
        return "objectid"
    return type(v).__name__


def _norm(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.timezone.utc)
    if type(v).__name__ == "Decimal128":
        return v.to_decimal()
    return v


def _get(doc: Any, path: str) -> Any:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) or hasattr(cur, "keys"):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, list) and not isinstance(b, list):  # an array field matches if an element does
        return any(_eq(x, b) for x in a)
    return _kind(a) == _kind(b) and _norm(a) == _norm(b)


def _cmp(op: str) -> Callable[[Any, Any], bool]:
    import operator

    fn = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}[op]

    def test(a, b):
        if isinstance(a, list):
            return any(test(x, b) for x in a)
        return a is not _MISSING and _kind(a) == _kind(b) and fn(_norm(a), _norm(b))

    return test


def _field_test(path: str, cond: Any) -> Callable[[Any], bool]:
    if isinstance(cond, (Regex, re.Pattern)):  # {"$regex": ...} parses as a regular expression
        raise FluxaError(f"--filter: $regex (on {path!r}) is not supported by restore filters", HINT)
    if not (isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond)):
        return lambda doc: _eq(_get(doc, path), cond)
    tests = []
    for op, arg in cond.items():
        if op not in SUPPORTED:
            raise FluxaError(f"--filter: operator {op} (on {path!r}) is not supported by restore filters", HINT)
        if op == "$eq":
            tests.append(lambda d, a=arg: _eq(_get(d, path), a))
        elif op == "$ne":
            tests.append(lambda d, a=arg: not _eq(_get(d, path), a))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise FluxaError(f"--filter: {op} on {path!r} needs an array", HINT)
            hit = (lambda d, a=arg: any(_eq(_get(d, path), x) for x in a))
            tests.append(hit if op == "$in" else (lambda d, h=hit: not h(d)))
        elif op == "$exists":
            tests.append(lambda d, a=bool(arg): (_get(d, path) is not _MISSING) == a)
        else:
            c = _cmp(op)
            tests.append(lambda d, a=arg, c=c: c(_get(d, path), a))
    return lambda doc: all(t(doc) for t in tests)


def compile_filter(spec: dict) -> Callable[[Any], bool]:
    """A predicate over decoded (or RawBSONDocument) documents."""
    tests = []
    for key, cond in spec.items():
        if str(key).startswith("$"):
            raise FluxaError(f"--filter: top-level operator {key} is not supported by restore filters", HINT)
        tests.append(_field_test(key, cond))
    return lambda doc: all(t(doc) for t in tests)
