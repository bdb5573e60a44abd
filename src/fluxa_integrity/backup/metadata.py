"""``<coll>.metadata.json`` as mongodump writes it, and the collection options restore needs.

Canonical Extended JSON v2: ``{"options", "indexes", "uuid", "collectionName", "type"}``.
``indexes`` is never null and includes the ``_id_`` index as listIndexes returns it. ``uuid``
is the server's collection UUID as 32 hex digits (mongodump's form); when the server gives none
it is omitted (a made-up UUID would claim an identity the source never had).
"""

from __future__ import annotations

from bson import json_util
from bson.binary import Binary
from bson.son import SON
from pymongo.database import Database

CANONICAL = json_util.CANONICAL_JSON_OPTIONS


def collection_infos(db: Database, names: list[str] | None = None) -> dict[str, dict]:
    """listCollections entries of ``names`` (all collections and views when None), by name."""
    infos = {i["name"]: i for i in db.list_collections() if not i["name"].startswith("system.")}
    if names is not None:
        infos = {n: infos[n] for n in names if n in infos}
    return infos


def indexes_of(db: Database, name: str) -> list[SON]:
    out = []
    for spec in db[name].list_indexes():
        spec = SON(spec)
        spec.pop("ns", None)  # old servers add it; mongorestore ignores it, newer dumps omit it
        out.append(spec)
    return out


def metadata_document(info: dict, indexes: list[SON]) -> SON:
    doc = SON()
    doc["options"] = SON(info.get("options") or {})
    doc["indexes"] = list(indexes)
    uuid = (info.get("info") or {}).get("uuid")
    if isinstance(uuid, Binary):
        doc["uuid"] = uuid.hex()
    doc["collectionName"] = info["name"]
    doc["type"] = info.get("type", "collection")
    return doc


def dumps_canonical(doc) -> str:
    return json_util.dumps(doc, json_options=CANONICAL)


def loads(text: str):
    return json_util.loads(text)
