"""oplog_apply: pure replay semantics for FerretDB's and MongoDB's oplog entry formats.

The $v:2 diffs are those MongoDB 5+ writes for the named update (hand-built from its format);
the FerretDB entries are as recorded from FerretDB 1.24's local.oplog.rs.
"""

from __future__ import annotations

import pytest
from bson.timestamp import Timestamp

from fluxa_integrity.backup.oplog_apply import (Command, Delete, Insert, Modify, Skip, Upsert, apply_array_diff, apply_diff,
                                                apply_modifiers, apply_update, entry_touches, plan_entry)
from fluxa_integrity.errors import FluxaError

TS = Timestamp(1795643032, 4)


def e(op, ns, o, o2=None):
    d = {"op": op, "ns": ns, "ts": TS, "o": o}
    if o2 is not None:
        d["o2"] = o2
    return d


def test_ferretdb_recorded_entries():
    ins = e("i", "app.u", {"_id": 1, "a": 1, "b": {"c": 2}})
    assert plan_entry(ins, "app") == [Insert("u", {"_id": 1, "a": 1, "b": {"c": 2}})]
    # FerretDB logs {$unset: {a: 1}, $set: {b.c: 3}} as the whole new document: `a` is gone
    upd = e("u", "app.u", {"$v": 1, "$set": {"_id": 1, "b": {"c": 3}}}, {"_id": 1})
    assert plan_entry(upd, "app") == [Upsert("u", {"_id": 1, "b": {"c": 3}})]
    assert apply_update({"_id": 1, "a": 1, "b": {"c": 2}}, upd["o"]) == {"_id": 1, "b": {"c": 3}}
    assert plan_entry(e("d", "app.u", {"_id": 1}), "app") == [Delete("u", 1)]


def test_namespace_and_collection_filters():
    ins = e("i", "other.u", {"_id": 1})
    assert plan_entry(ins, "app") == []
    assert plan_entry(e("i", "app.u", {"_id": 1}), "app", {"v"}) == []
    assert plan_entry(e("i", "app.system.views", {"_id": 1}), "app") == []
    assert plan_entry({"op": "n", "ns": "", "o": {"msg": "periodic noop"}}, "app") == []
    assert entry_touches(e("i", "app.u", {}), "app") and not entry_touches(e("i", "appx.u", {}), "app")


def test_v1_replacement_and_modifiers():
    replacement = e("u", "app.u", {"_id": 1, "x": 5}, {"_id": 1})  # MongoDB full-document update
    assert plan_entry(replacement, "app") == [Upsert("u", {"_id": 1, "x": 5})]
    doc = {"_id": 1, "a": {"b": 1, "c": 2}, "arr": [1, 2], "z": 0}
    o = {"$v": 1, "$set": {"a.b": 9, "arr.3": 7, "n.m": 1}, "$unset": {"a.c": True, "z": True, "arr.0": True}}
    assert apply_modifiers(doc, o) == {"_id": 1, "a": {"b": 9}, "arr": [None, 2, None, 7], "n": {"m": 1}}
    assert doc["a"] == {"b": 1, "c": 2}  # the input is left alone
    (op,) = plan_entry(e("u", "app.u", o, {"_id": 1}), "app")
    assert isinstance(op, Modify) and op.change(doc)["a"] == {"b": 9}
    with pytest.raises(FluxaError, match=r"\$inc"):
        apply_modifiers(doc, {"$inc": {"z": 1}})


def test_v2_set_nested_field():
    # db.u.updateOne({_id: 1}, {$set: {"profile.name": "Ann"}}) on an existing profile.name
    doc = {"_id": 1, "profile": {"name": "A", "age": 3}, "k": 1}
    o = {"$v": 2, "diff": {"sprofile": {"u": {"name": "Ann"}}}}
    assert list(apply_update(doc, o)["profile"].items()) == [("name", "Ann"), ("age", 3)]  # in place
    # a new nested field is inserted at the end of the sub-document
    o = {"$v": 2, "diff": {"sprofile": {"i": {"city": "X"}}}}
    assert list(apply_update(doc, o)["profile"]) == ["name", "age", "city"]


def test_v2_unset_update_insert_order():
    doc = {"_id": 1, "a": 1, "b": 2, "c": 3}
    # $unset: {b: ""}, $set: {a: 10, new: 1}
    out = apply_diff(doc, {"d": {"b": False}, "u": {"a": 10}, "i": {"new": 1}})
    assert list(out.items()) == [("_id", 1), ("a", 10), ("c", 3), ("new", 1)]
    # an inserted field that already exists moves to the end (MongoDB's applier does the same)
    assert list(apply_diff(doc, {"i": {"a": 5}})) == ["_id", "b", "c", "a"]
    # an updated field missing from the document (idempotent replay) is appended
    assert apply_diff({"_id": 1}, {"u": {"x": 1}}) == {"_id": 1, "x": 1}


def test_v2_array_append_truncate_element_update():
    doc = {"_id": 1, "tags": ["a", "b", "c"], "items": [{"q": 1}, {"q": 2}]}
    # $push: {tags: "d"}
    assert apply_diff(doc, {"stags": {"a": True, "u3": "d"}})["tags"] == ["a", "b", "c", "d"]
    # $pop: {tags: 1}  (truncate)
    assert apply_diff(doc, {"stags": {"a": True, "l": 2}})["tags"] == ["a", "b"]
    # $set: {"tags.1": "B"}
    assert apply_diff(doc, {"stags": {"a": True, "u1": "B"}})["tags"] == ["a", "B", "c"]
    # $set: {"items.1.q": 5}: nested diff of an element
    assert apply_diff(doc, {"sitems": {"a": True, "s1": {"u": {"q": 5}}}})["items"] == [{"q": 1}, {"q": 5}]
    # truncate then set past the end pads with null; resize larger pads too
    assert apply_array_diff([1, 2, 3], {"a": True, "l": 1, "u2": 9}) == [1, None, 9]
    assert apply_array_diff([1], {"a": True, "l": 3}) == [1, None, None]
    # nested arrays inside sub-documents
    nested = {"_id": 1, "p": {"xs": [1, 2]}}
    assert apply_diff(nested, {"sp": {"sxs": {"a": True, "u2": 3}}}) == {"_id": 1, "p": {"xs": [1, 2, 3]}}
    assert doc["tags"] == ["a", "b", "c"]


def test_v2_diff_is_idempotent_for_replay():
    doc = {"_id": 1, "a": {"b": 1}, "t": [1, 2, 3]}
    diff = {"u": {"x": 1}, "d": {"gone": False}, "sa": {"u": {"b": 2}}, "st": {"a": True, "l": 2, "u1": 7}}
    once = apply_diff(doc, diff)
    assert apply_diff(once, diff) == once == {"_id": 1, "a": {"b": 2}, "t": [1, 7], "x": 1}


def test_v2_subdiff_on_changed_type_is_ignored():
    assert apply_diff({"_id": 1, "a": 5}, {"sa": {"u": {"b": 1}}}) == {"_id": 1, "a": 5}
    assert apply_diff({"_id": 1, "a": {"k": 1}}, {"sa": {"a": True, "u0": 1}}) == {"_id": 1, "a": {"k": 1}}


def test_update_entry_plans():
    v2 = e("u", "app.u", {"$v": 2, "diff": {"u": {"n": 1}}}, {"_id": 7})
    (op,) = plan_entry(v2, "app")
    assert isinstance(op, Modify) and op._id == 7 and op.change({"_id": 7, "n": 0}) == {"_id": 7, "n": 1}
    with pytest.raises(FluxaError, match="o2"):
        plan_entry(e("u", "app.u", {"$v": 2, "diff": {}}), "app")
    with pytest.raises(FluxaError, match=r"\$v:3"):
        apply_update({}, {"$v": 3, "diff": {}})


def test_commands():
    c = lambda o: plan_entry(e("c", "app.$cmd", o), "app")  # noqa: E731
    assert c({"create": "v", "capped": True, "size": 4096, "idIndex": {}}) == [Command("create", "v", {"capped": True, "size": 4096})]
    assert c({"drop": "v"}) == [Command("drop", "v")]
    assert c({"dropDatabase": 1}) == [Command("drop_all", None)]
    assert c({"renameCollection": "app.a", "to": "app.b", "dropTarget": False}) == [
        Command("rename", "a", {"to": "b", "dropTarget": False})]
    assert c({"createIndexes": "u", "v": 2, "key": {"k": 1}, "name": "k_1"}) == [
        Command("create_indexes", "u", {"indexes": [{"key": {"k": 1}, "name": "k_1"}]})]
    assert c({"commitIndexBuild": "u", "indexBuildUUID": 1, "indexes": [{"v": 2, "key": {"k": 1}, "name": "k_1"}]}) == [
        Command("create_indexes", "u", {"indexes": [{"key": {"k": 1}, "name": "k_1"}]})]
    assert c({"dropIndexes": "u", "index": "k_1"}) == [Command("drop_indexes", "u", {"index": "k_1"})]
    assert isinstance(c({"startIndexBuild": "u"})[0], Skip) and isinstance(c({"collMod": "u"})[0], Skip)
    assert plan_entry(e("c", "other.$cmd", {"drop": "v"}), "app") == []
    assert plan_entry(e("c", "app.$cmd", {"drop": "v"}), "app", {"u"}) == []
    with pytest.raises(FluxaError, match="crosses databases"):
        c({"renameCollection": "app.a", "to": "other.b"})
    with pytest.raises(FluxaError, match="convertToCapped"):
        c({"convertToCapped": "u", "size": 1})


def test_apply_ops_recursive():
    inner = [e("i", "app.u", {"_id": 1}), e("u", "app.u", {"$v": 2, "diff": {"u": {"a": 1}}}, {"_id": 1}),
             e("i", "other.u", {"_id": 2}),
             {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [e("d", "app.u", {"_id": 3})]}}]
    entry = {"op": "c", "ns": "admin.$cmd", "ts": TS, "o": {"applyOps": inner}}
    ops = plan_entry(entry, "app")
    assert [type(x) for x in ops] == [Insert, Modify, Delete] and ops[2] == Delete("u", 3)
    assert entry_touches(entry, "app") and not entry_touches(entry, "zzz")


def test_bounded_updates_keeps_order_and_caps_non_inserts():
    from pymongo import DeleteOne, InsertOne, ReplaceOne

    from fluxa_integrity.restore.replay import bounded_updates
    models = [InsertOne({"_id": i}) if i % 3 == 0 else ReplaceOne({"_id": i}, {"_id": i}) if i % 3 == 1
              else DeleteOne({"_id": i}) for i in range(301)]
    parts = bounded_updates(models, 50)
    assert [m for p in parts for m in p] == models
    assert all(sum(not isinstance(m, InsertOne) for m in p) <= 50 for p in parts)
    assert bounded_updates([], 50) == [] and bounded_updates(models[:1], 50) == [models[:1]]


def test_replay_of_many_updates_in_one_flush_completes(mongo_uri, tmp_path):
    """FerretDB 1.24 hangs an update command of 100 statements (each holds one of the database's
    100 SQLite connections until the command ends); the replayer must split them. A socket
    timeout turns the hang into a failure."""
    import pymongo

    from fluxa_integrity.restore.replay import Replayer
    client = pymongo.MongoClient(mongo_uri, socketTimeoutMS=30_000)
    try:
        target = client["replay_many_t"]
        client.drop_database(target.name)
        target.c.insert_many([{"_id": i, "v": 0} for i in range(400)])
        r = Replayer(target, "replay_many_s", None)
        for i in range(400):  # FerretDB's u entries: the whole new document under $set
            r.apply(e("u", "replay_many_s.c", {"$v": 1, "$set": {"_id": i, "v": i + 1}}, {"_id": i}))
        r.flush()
        assert sorted(d["v"] for d in target.c.find()) == list(range(1, 401))
    finally:
        client.drop_database("replay_many_t")
        client.close()


def test_multi_entry_transactions_apply_whole_at_commit_or_not_at_all(db):
    """MongoDB writes a large transaction as applyOps entries marked partialTxn, then a commit
    entry: replay applies it whole at the commit, and nothing of it when the point in time comes
    before the commit (as the database was then) - also when the commit's own ops are elsewhere."""
    from fluxa_integrity.backup.oplog_apply import entry_touches
    from fluxa_integrity.restore.replay import Replayer, is_txn_entry

    def txn(n, ops, partial):
        o = {"applyOps": [{"op": "i", "ns": ns, "o": {"_id": _id}} for ns, _id in ops]}
        if partial:
            o["partialTxn"] = True
        return {"op": "c", "ns": "admin.$cmd", "ts": TS, "o": o, "lsid": {"id": f"s{n}"}, "txnNumber": n}

    r = Replayer(db, "src", None)
    r.apply(txn(1, [("src.c", "a1")], True))
    r.apply(txn(1, [("src.c", "a2")], True))
    r.flush()
    assert db.c.count_documents({}) == 0  # not committed yet: nothing visible
    r.apply(txn(1, [("src.c", "a3")], False))  # the commit
    commit_elsewhere = txn(2, [("other.c", "x")], False)
    r.apply(txn(2, [("src.c", "b1")], True))
    assert is_txn_entry(commit_elsewhere) and not entry_touches(commit_elsewhere, "src")  # pitr passes it on
    r.apply(commit_elsewhere)
    r.apply(txn(3, [("src.c", "never")], True))  # the point in time comes before its commit
    r.flush()
    assert sorted(d["_id"] for d in db.c.find()) == ["a1", "a2", "a3", "b1"]
