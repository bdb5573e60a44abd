"""A tiny recovery recipe for the engine's tests, registered when imported (recipes proper are
other modules' job): every third document of a collection gets a label and a nested change,
every ``drop_every``-th (offset 1) is deleted, ``insert`` new documents appear. It only reads.

The CLI tests run the real command line with this module imported first
(``python -c "import recovery_recipe; ..."`` with tests/ on the path), so `recover plan` has a
subcommand for it, built from its Params like any recipe's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from fluxa_integrity.recovery.model import Change, Param, Plan, RecipeContext, RecipeSpec, _RECIPES, register

EPOCH = datetime(2026, 5, 1, tzinfo=timezone.utc)
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
RECIPE = "test-engine-fix"


def build(ctx: RecipeContext, collection: str, label: str = "fixed", drop_every: int = 10,
          insert: int = 4, since: datetime | None = None, ids: list | None = None) -> Plan:
    """Every third document gets ``label`` and a nested change, every ``drop_every``-th (offset 1)
    is deleted, ``insert`` new documents appear. Reads only."""
    changes = []
    for doc in ctx.db[collection].find({}, sort=[("_id", 1)]):
        n = int(doc["n"])
        if n % 3 == 0:
            after = {**doc, "label": label, "nested": {**doc["nested"], "a": -n}}
            changes.append(Change(collection, "update", doc["_id"], doc, after, f"n={n} divisible by 3",
                                  fields=["label", "nested.a"]))
        elif n % drop_every == 1:
            changes.append(Change(collection, "delete", doc["_id"], doc, None, f"n={n} is a leftover"))
    for k in range(insert):
        _id = 1000 + k
        changes.append(Change(collection, "insert", _id, None,
                              {"_id": _id, "n": Int64(_id), "nested": {"a": k}, "at": EPOCH, "oid": ObjectId()},
                              "missing row"))
    return Plan(RECIPE, ctx.db.name, {"collection": collection, "label": label}, ctx.now, changes)


if RECIPE not in _RECIPES:
    register(RecipeSpec(RECIPE, "S99", "test recipe: label every third document", [
        Param("collection", "Collection to fix.", required=True),
        Param("label", "Label to set.", default="fixed"),
        Param("drop-every", "Delete every n-th document.", type=int, default=10),
        Param("insert", "How many documents to insert.", type=int, default=4),
        Param("since", "Ignored.", type=datetime),
        Param("ids", "Ignored.", multiple=True),
    ], build))


def seed(db, n: int = 60) -> None:
    db.items.insert_many([{"_id": i, "n": Int64(i), "name": f"item {i}", "nested": {"a": i, "b": [i, "x"]},
                           "at": EPOCH + timedelta(minutes=i), "ratio": i / 7}
                          for i in range(n)])


def hashes(db, name: str = "items") -> dict:
    return {d["_id"]: hashlib.sha256(d.raw).hexdigest()
            for d in db.get_collection(name, codec_options=RAW).find()}



def after_hashes(plan) -> dict:
    """_id -> sha256 of the after-image, for every change that leaves a document."""
    import bson

    return {c.id: hashlib.sha256(bson.encode(c.after)).hexdigest() for c in plan.changes if c.after is not None}
