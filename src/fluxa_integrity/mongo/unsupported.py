"""Values the local dev server (FerretDB 1.24) cannot store, and a clear error when a write meets one.

FerretDB 1.24 closes the connection on a Decimal128, MinKey, MaxKey, JavaScript code (with or
without scope) or NaN anywhere in a command: the driver only says "connection closed"
(AutoReconnect) and nothing of the command is written. It refuses Infinity, nested arrays, DBRefs
and keys containing '.' or starting with '$' with a write error (code 2). It stores -0.0 as 0.0
and keeps NUL bytes in strings (measured; docs/local-server.md). MongoDB stores all of these.

Shape:
- ``is_ferretdb(client)``: the capability probe (``buildInfo`` carries ``ferretdbVersion``).
- ``first_unsupported(doc)``: the first such value in document order - a dict, a
  ``RawBSONDocument``, BSON bytes or a pymongo write model - as ``Unsupported(type_name, path)``.
- ``refused_values(collection, docs)``: wraps one write command of ``docs`` (in command order).
  A failure that one of them explains, on a server that is FerretDB and still answers, becomes a
  FluxaError naming the type, the collection, the document's ``_id`` and the field path.
  Anything else propagates unchanged: a server that died mid-write is never blamed on a value.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import bson
from bson import DBRef, Decimal128
from bson.code import Code
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError, WriteError

from ..errors import FluxaError

#: FerretDB's code for a value it refuses to store (its own validation, not a dropped connection)
BAD_VALUE = 2
HINT = ("FerretDB 1.24 cannot store Decimal128, MinKey/MaxKey, JavaScript code, NaN, Infinity, nested arrays, "
        "DBRefs or keys with '.' or a leading '$' (docs/local-server.md): use a real MongoDB for this data "
        "(--uri mongodb://...), or change the value")


@dataclass(frozen=True)
class Unsupported:
    type_name: str  # as a person names it: "Decimal128", "NaN", "nested array", ...
    path: str  # dotted field path, array positions as numbers ("a.b.2.c")
    drops_connection: bool  # FerretDB closes the connection (True) or answers a write error (False)


_FERRETDB: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # client -> answer


def is_ferretdb(client) -> bool:
    """True when the server is FerretDB, asked once per client (hot paths ask it per batch).
    Raises PyMongoError when it does not answer."""
    if client not in _FERRETDB:
        _FERRETDB[client] = "ferretdbVersion" in client.admin.command("buildInfo")
    return _FERRETDB[client]


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _value(value: Any, path: str) -> Iterator[Unsupported]:
    """Every value under ``value`` FerretDB cannot store, in document order."""
    if isinstance(value, bool):
        return
    if isinstance(value, Decimal128):
        yield Unsupported("Decimal128", path, True)
    elif isinstance(value, MinKey):
        yield Unsupported("MinKey", path, True)
    elif isinstance(value, MaxKey):
        yield Unsupported("MaxKey", path, True)
    elif isinstance(value, Code):  # a str subclass: tested before anything string-like
        yield Unsupported("JavaScript code with scope" if value.scope is not None else "JavaScript code", path, True)
    elif isinstance(value, float):
        if math.isnan(value):
            yield Unsupported("NaN", path, True)
        elif math.isinf(value):
            yield Unsupported("Infinity" if value > 0 else "-Infinity", path, False)
    elif isinstance(value, DBRef):
        yield Unsupported("DBRef", path, False)
    elif isinstance(value, RawBSONDocument):
        yield from _document(bson.decode(value.raw), path)
    elif isinstance(value, Mapping):
        yield from _document(value, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, (list, tuple)):
                yield Unsupported("nested array", _join(path, i), False)
            yield from _value(item, _join(path, i))


def _document(doc: Mapping, path: str) -> Iterator[Unsupported]:
    dbref = "$ref" in doc and "$id" in doc  # a DBRef spelled as a document: named once, as a DBRef
    if dbref:
        yield Unsupported("DBRef", path, False)
    for key, value in doc.items():
        key = str(key)
        if "." in key:
            yield Unsupported("key containing '.'", _join(path, key), False)
        elif key.startswith("$") and not (dbref and key in ("$ref", "$id", "$db")):
            yield Unsupported("key starting with '$'", _join(path, key), False)
        yield from _value(value, _join(path, key))


def _update_spec(spec: Mapping) -> Iterator[Unsupported]:
    """An update's operators: their field names are paths ('a.b' is fine), their values are checked."""
    for fields in spec.values():
        if isinstance(fields, Mapping):
            for field, value in fields.items():
                yield from _value(value, str(field))


def _payload(item: Any) -> tuple[Any, Any]:
    """(what is written, its _id) for a document or a write model."""
    if isinstance(item, (bytes, bytearray)):
        item = RawBSONDocument(bytes(item))
    doc = getattr(item, "_doc", item)  # InsertOne/ReplaceOne/UpdateOne keep what they send in _doc
    flt = getattr(item, "_filter", None) or {}
    if isinstance(doc, RawBSONDocument):
        doc = bson.decode(doc.raw)
    _id = doc.get("_id", flt.get("_id")) if isinstance(doc, Mapping) else flt.get("_id")
    return doc, _id


def all_unsupported(item: Any) -> Iterator[Unsupported]:
    """Every value FerretDB cannot store in a document or write model, in document order."""
    doc, _ = _payload(item)
    if isinstance(doc, Mapping) and doc and all(str(k).startswith("$") for k in doc):
        yield from _update_spec(doc)
    elif isinstance(doc, list):  # an update pipeline: its stages' values
        for stage in doc:
            if isinstance(stage, Mapping):
                yield from _update_spec(stage)
    elif isinstance(doc, Mapping):
        yield from _value(doc, "")


def first_unsupported(item: Any, *, dropping_only: bool = False) -> Unsupported | None:
    """The first value FerretDB cannot store (only those that close the connection, if asked)."""
    return next((u for u in all_unsupported(item) if u.drops_connection or not dropping_only), None)


def explain_refusal(collection, docs: Sequence, exc: PyMongoError) -> FluxaError | None:
    """The FluxaError for a write of ``docs`` that failed with ``exc``, when a value explains it."""
    if isinstance(exc, ConnectionFailure):
        candidates = [(d, True) for d in docs]
    elif isinstance(exc, BulkWriteError):
        errs = [e for e in exc.details.get("writeErrors", []) if e.get("code") == BAD_VALUE]
        candidates = [(docs[e["index"]], False) for e in errs if 0 <= e.get("index", -1) < len(docs)]
    elif isinstance(exc, WriteError) and exc.code == BAD_VALUE:
        candidates = [(d, False) for d in docs]
    else:
        return None
    culprit = None
    for item, dropped in candidates:
        found = first_unsupported(item, dropping_only=dropped)
        if found:
            culprit = (item, found)
            break
    if culprit is None:
        return None
    try:  # a server that answers after the drop is alive: the value, not an outage, closed the connection
        if not is_ferretdb(collection.database.client):
            return None
    except PyMongoError:
        return None
    item, found = culprit
    _, _id = _payload(item)
    return FluxaError(f"{collection.full_name}: the server refused the document with _id {_id!r}: field "
                      f"{found.path!r} holds a {found.type_name} value, which FerretDB (the local dev server) "
                      "cannot store", HINT)


@contextmanager
def refused_values(collection, docs: Sequence) -> Iterator[None]:
    """``with refused_values(coll, docs): coll.insert_many(docs)`` - see the module docstring."""
    try:
        yield
    except (ConnectionFailure, BulkWriteError, WriteError) as exc:
        err = explain_refusal(collection, docs, exc)
        if err is None:
            raise
        raise err from exc
