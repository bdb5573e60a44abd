"""mongo/by_id.py: the same documents whichever way the ids are looked up (one at a time or one
$in), and the way chosen by the server, the list's length and the ids' types."""

from __future__ import annotations

from bson import ObjectId

from fluxa_integrity.mongo import by_id


def _seed(db, ids):
    db.t.insert_many([{"_id": i, "n": k} for k, i in enumerate(ids)])


def test_short_and_long_lists_give_the_same_documents(db, server_is_ferretdb):
    oids = [ObjectId() for _ in range(40)]
    _seed(db, oids + list(range(10)))
    wanted = oids[:20] + [ObjectId()]  # one id that does not exist
    assert by_id.one_at_a_time(db.t, wanted) is server_is_ferretdb
    one_by_one = sorted(d["n"] for d in by_id.find_by_ids(db.t, wanted))
    batch = sorted(d["n"] for d in db.t.find({"_id": {"$in": wanted}}))
    assert one_by_one == batch == list(range(20))
    # ints are never looked up one at a time (FerretDB scans for them either way)
    assert by_id.one_at_a_time(db.t, [1, 2]) is False
    assert sorted(d["n"] for d in by_id.find_by_ids(db.t, [1, 2, 99], {"n": 1})) == [41, 42]
    # writes: a few ids one at a time, more in one $in; both count what they touched
    assert by_id.one_at_a_time(db.t, oids[:by_id.PER_ID_WRITES + 1], by_id.PER_ID_WRITES) is False
    assert by_id.update_by_ids(db.t, oids[:3], {"$set": {"x": 1}}) == 3
    assert by_id.update_by_ids(db.t, oids[3:30], {"$set": {"x": 2}}) == 27
    assert sorted(d["n"] for d in db.t.find({"x": 1})) == [0, 1, 2]
    assert db.t.count_documents({"x": 2}) == 27
    assert by_id.delete_by_ids(db.t, oids[:3] + [ObjectId()]) == 3
    assert by_id.delete_by_ids(db.t, oids[3:30]) == 27
    assert db.t.count_documents({}) == 20
    assert by_id.find_by_ids(db.t, []) is not None and list(by_id.find_by_ids(db.t, [])) == []
    assert by_id.update_by_ids(db.t, [], {"$set": {"x": 3}}) == 0 and by_id.delete_by_ids(db.t, []) == 0
