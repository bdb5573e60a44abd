"""Values FerretDB 1.24 cannot store (src/fluxa_integrity/mongo/unsupported.py, docs/local-server.md).

BSON-level: the finder names the first such value, its type and path, in raw BSON and in write
models. On FerretDB: each value really is refused (the connection drops, or a write error), and a
write wrapped in ``refused_values`` fails with a FluxaError naming type, collection, _id and path,
writing nothing; a server that dies mid-write is not blamed on a value. On a real MongoDB
(FLUXA_TEST_MONGODB_URI) the same documents insert, back up and restore byte-identical; those
tests are skipped, not failed, on FerretDB.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone

import bson
import pymongo
import pytest
from bson import DBRef, Decimal128, Int64, ObjectId, Regex, Timestamp
from bson.binary import Binary
from bson.code import Code
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError, PyMongoError

from backup_helpers import hashes
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.mongo.devserver import free_port
from fluxa_integrity.mongo.unsupported import explain_refusal, first_unsupported, is_ferretdb, refused_values

# value, the type name the tool reports, where it sits under {"deep": {"list": [0, {"v": value}]}},
# and whether FerretDB closes the connection on it (else it answers a write error)
CASES = [
    (Decimal128("1.10"), "Decimal128", "deep.list.1.v", True),
    (MinKey(), "MinKey", "deep.list.1.v", True),
    (MaxKey(), "MaxKey", "deep.list.1.v", True),
    (Code("return 1"), "JavaScript code", "deep.list.1.v", True),
    (Code("return x", {"x": 1}), "JavaScript code with scope", "deep.list.1.v", True),
    (float("nan"), "NaN", "deep.list.1.v", True),
    (float("inf"), "Infinity", "deep.list.1.v", False),
    (float("-inf"), "-Infinity", "deep.list.1.v", False),
    ([1, [2, 3]], "nested array", "deep.list.1.v.1", False),
    (DBRef("users", ObjectId("0123456789ab0123456789ab")), "DBRef", "deep.list.1.v", False),
    ({"a.b": 1}, "key containing '.'", "deep.list.1.v.a.b", False),
    ({"$set": 1}, "key starting with '$'", "deep.list.1.v.$set", False),
]
IDS = [c[1] for c in CASES]
SUPPORTED = [-0.0, "nul \x00 inside", Regex("^a", "i"), Timestamp(5, 1), Binary(b"\x00\x01", 4), Int64(2**40),
             datetime(2024, 1, 2, tzinfo=timezone.utc), ObjectId(), None, True, 1.5, {"ok": [1, {"x": 2}]}]


def _doc(_id, value) -> dict:
    return {"_id": _id, "top": 1, "deep": {"list": [0, {"v": value}]}}


def _raw(doc: dict) -> RawBSONDocument:
    return RawBSONDocument(bson.encode(doc))


# -- BSON level ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,type_name,path,drops", CASES, ids=IDS)
def test_finder_names_type_and_path_in_raw_bson(value, type_name, path, drops):
    for form in (_doc(1, value), _raw(_doc(1, value)), bson.encode(_doc(1, value)), InsertOne(_raw(_doc(1, value)))):
        found = first_unsupported(form)
        assert (found.type_name, found.path, found.drops_connection) == (type_name, path, drops), form


@pytest.mark.parametrize("value", SUPPORTED, ids=[type(v).__name__ for v in SUPPORTED])
def test_finder_passes_what_ferretdb_stores(value):
    assert first_unsupported(_raw(_doc(1, value))) is None


def test_finder_takes_the_first_in_document_order_or_the_first_that_drops_the_connection():
    doc = _raw({"_id": 1, "a": float("inf"), "b": {"c": Decimal128("1")}, "d": MinKey()})
    assert first_unsupported(doc).path == "a"
    assert first_unsupported(doc, dropping_only=True).path == "b.c"


def test_finder_reads_write_models():
    assert first_unsupported(ReplaceOne({"_id": 3}, {"x": {"y": MaxKey()}})).path == "x.y"
    # an update's field names are paths: "a.b" is not a key with a dot, its value is what counts
    assert first_unsupported(UpdateOne({"_id": 3}, {"$set": {"a.b": 1, "n": 2}})) is None
    found = first_unsupported(UpdateOne({"_id": 3}, {"$set": {"a.b": float("nan")}}))
    assert (found.type_name, found.path) == ("NaN", "a.b")
    assert first_unsupported(UpdateOne({"_id": 3}, [{"$set": {"c": Decimal128("2")}}])).type_name == "Decimal128"


def test_an_unreachable_server_is_never_blamed_on_a_value():
    """Ground truth: the documents do hold a refused value, but the server does not answer after
    the failure, so the failure may be an outage: no explanation, the original error stands."""
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=200)
    try:
        coll = client.app.c
        assert explain_refusal(coll, [_raw(_doc(1, Decimal128("1")))], AutoReconnect("connection closed")) is None
    finally:
        client.close()


def test_other_write_errors_are_not_explained(client, db):
    dup = BulkWriteError({"writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"}]})
    assert explain_refusal(db.c, [_raw(_doc(1, Decimal128("1")))], dup) is None
    # a connection drop with nothing refusable in the batch is not a value's fault either
    assert explain_refusal(db.c, [_raw(_doc(1, float("inf")))], AutoReconnect("connection closed")) is None


# -- on FerretDB: refused, and the tool says which value ---------------------------------------------
@pytest.fixture()
def ferretdb_only(server_is_ferretdb):
    if not server_is_ferretdb:
        pytest.skip("FerretDB behaviour; a real MongoDB stores these values")


@pytest.mark.parametrize("value,type_name,path,drops", CASES, ids=IDS)
def test_ferretdb_refuses_the_value_and_the_tool_names_it(ferretdb_only, db, value, type_name, path, drops):
    docs = [_raw(_doc(i, 1)) for i in range(3)] + [_raw(_doc("bad-one", value))] + [_raw(_doc(9, 1))]
    # ground truth first: the server itself refuses the document, in one of its two ways
    with pytest.raises(AutoReconnect if drops else BulkWriteError):
        db.plain.insert_many([_raw(_doc("bad-one", value))])
    with pytest.raises(FluxaError) as err:
        with refused_values(db.c, docs):
            db.c.insert_many(docs)
    msg = err.value.message
    assert type_name in msg and db.c.full_name in msg and "'bad-one'" in msg and repr(path) in msg, msg
    assert "FerretDB" in msg and "docs/local-server.md" in err.value.hint
    if drops:  # a dropped connection writes nothing of the command
        assert db.c.count_documents({}) == 0
    assert db.command("ping")["ok"] == 1  # the server is fine: only the value was refused


def test_a_single_replace_is_explained_too(ferretdb_only, db):
    db.c.insert_one({"_id": 1, "v": 1})
    for bad, name in ((float("inf"), "Infinity"), (Decimal128("3"), "Decimal128")):
        with pytest.raises(FluxaError, match=name):
            with refused_values(db.c, [ReplaceOne({"_id": 1}, {"v": {"w": bad}})]):
                db.c.replace_one({"_id": 1}, {"v": {"w": bad}})
    assert db.c.find_one({"_id": 1}) == {"_id": 1, "v": 1}


def test_ferretdb_flattens_negative_zero_and_keeps_nul(ferretdb_only, db):
    """What docs/local-server.md says it stores differently (not refused, so not an error)."""
    db.c.insert_one({"_id": 1, "z": -0.0, "s": "a\x00b"})
    got = db.c.find_one({"_id": 1})
    assert got["z"] == 0.0 and math.copysign(1, got["z"]) == 1.0  # the sign is lost
    assert got["s"] == "a\x00b"


@pytest.mark.skipif(bool(os.environ.get("FLUXA_TEST_MONGODB_URI")), reason="kills the server")
def test_a_server_killed_mid_write_is_an_outage_not_a_value(private_server):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=300)
    coll = client.app.c
    coll.insert_one({"_id": 0})  # connected
    private_server.kill()
    docs = [_raw(_doc(1, Decimal128("1")))]  # would be refused, had the server answered
    with pytest.raises(PyMongoError) as err:
        with refused_values(coll, docs):
            coll.insert_many(docs)
    assert not isinstance(err.value, FluxaError)
    client.close()


def test_probe_tells_the_servers_apart(client, server_is_ferretdb):
    assert is_ferretdb(client) is server_is_ferretdb
    if not os.environ.get("FLUXA_TEST_MONGODB_URI"):
        assert server_is_ferretdb is True  # the session's own server is the project's FerretDB


# -- on a real MongoDB: the same values round-trip through backup and restore ---------------------------
def test_real_mongodb_backs_up_and_restores_every_such_value(real_mongodb_only, mongo_uri, client, db):
    from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
    from fluxa_integrity.restore.executor import restore_snapshot
    from fluxa_integrity.store import open_store

    docs = [_doc(i, value) for i, (value, *_rest) in enumerate(CASES)] + [_doc("negzero", -0.0)]
    db.odd.insert_many(docs)
    store = open_store()
    backup = run_backup(mongo_uri, db.name, store, BackupOptions(oplog_probe="clock"))
    target = f"{db.name}_r"
    try:
        restore_snapshot(mongo_uri, store, backup.id, target)
        assert hashes(client[target]) == hashes(db)
        assert math.copysign(1, client[target].odd.find_one({"_id": "negzero"})["deep"]["list"][1]["v"]) == -1.0
    finally:
        client.drop_database(target)


# -- on FerretDB: a restore of such a backup names the value ---------------------------------------------
def _dump_dir(tmp_path, docs: list[dict]):
    """A mongodump-format directory (what the real mongodump writes), made by hand because
    FerretDB cannot hold the documents to dump them."""
    d = tmp_path / "dump" / "odd"
    d.mkdir(parents=True)
    (d / "c.bson").write_bytes(b"".join(bson.encode(doc) for doc in docs))
    (d / "c.metadata.json").write_text(json.dumps({
        "options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
        "uuid": "0123456789abcdef0123456789abcdef", "collectionName": "c", "type": "collection"}))
    return tmp_path / "dump"


def test_restore_on_ferretdb_names_the_refused_value(ferretdb_only, mongo_uri, client, tmp_path):
    from fluxa_integrity.backup.importer import import_dump
    from fluxa_integrity.restore.executor import restore_snapshot
    from fluxa_integrity.store import open_store

    store = open_store()
    backup = import_dump(store, _dump_dir(tmp_path, [{"_id": 1, "ok": 1}, {"_id": 2, "price": Decimal128("9.99")}]),
                         repo=tmp_path / "repo")
    target = f"odd_{ObjectId()}"
    try:
        with pytest.raises(FluxaError) as err:
            restore_snapshot(mongo_uri, store, backup.id, target)
        assert "Decimal128" in err.value.message and "'price'" in err.value.message and "_id 2" in err.value.message
    finally:
        client.drop_database(target)
