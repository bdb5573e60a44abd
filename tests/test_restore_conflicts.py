"""Newer app writes are never lost by a promotion or an undo: a live document that is neither what
the step expects nor what it writes is kept, byte for byte, in <coll>.superseded.bson first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluxa_integrity.backup.files import file_sha256, iter_raw_documents
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.restore.authority import Authority
from fluxa_integrity.restore.compare import RAW
from fluxa_integrity.restore.promote import apply_promotion, plan_promotion, undo_promotion
from fluxa_integrity.store import open_store


@pytest.fixture()
def source(client, db):
    name = f"{db.name}_src"
    yield client[name]
    client.drop_database(name)


def _raw(coll, _id) -> bytes | None:
    doc = coll.with_options(codec_options=RAW).find_one({"_id": _id})
    return None if doc is None else doc.raw


def _kept(undo: Path) -> list[bytes]:
    manifest = json.loads((undo / "manifest.json").read_text())
    entry = manifest["collections"]["users"]["superseded"]
    assert file_sha256(undo / entry["path"]) == entry["sha256"]
    docs = list(iter_raw_documents(undo / entry["path"], "none"))
    assert entry["count"] == len(docs)
    return docs


def test_app_writes_between_failed_promotion_rerun_and_undo_are_kept(mongo_uri, client, db, source, cli):
    source.users.insert_many([{"_id": i, "name": f"user {i}"} for i in range(8)])
    db.users.insert_many([{"_id": i, "name": "tampered"} for i in range(7)])  # 7 is the insert
    originals = {i: _raw(db.users, i) for i in range(7)}
    store, live = open_store(), db
    plan = plan_promotion(live, source, ["users"], None)
    order = [plan["users"]["ids"][k] for k in plan["users"]["overwrite"]]
    assert len(order) == 7 and plan["users"]["insert"]
    gone = source.users.find_one({"_id": order[4]})
    source.users.delete_one({"_id": order[4]})  # the first attempt fails on the fifth write

    with pytest.raises(FluxaError, match="no longer holds"):
        apply_promotion(store, live, source, plan, Authority.operator())
    assert _raw(live.users, order[0]) == _raw(source.users, order[0])  # written before the failure
    # the app writes in the promotion's set before the rerun: edits a written document and
    # re-creates the _id the promotion was to insert
    live.users.update_one({"_id": order[0]}, {"$set": {"name": "app edit after the failure"}})
    live.users.insert_one({"_id": 7, "name": "app created it"})
    app_writes = [_raw(live.users, order[0]), _raw(live.users, 7)]

    source.users.insert_one(gone)
    res = apply_promotion(store, live, source, plan_promotion(live, source, ["users"], None), Authority.operator())
    assert res["resumed"] is True and res["superseded"] == {"users": 2}
    undo = Path(res["undo_dir"])
    assert sorted(_kept(undo)) == sorted(app_writes)
    assert all(_raw(live.users, i) == _raw(source.users, i) for i in range(8))

    # the app edits a promoted document before the undo: the undo keeps that edit first
    live.users.update_one({"_id": order[1]}, {"$set": {"name": "app edit after the promotion"}})
    edit = _raw(live.users, order[1])
    out = cli("restore", "undo", res["promotion_id"], "--yes", "--uri", mongo_uri)
    assert out.code == 0, out.stderr
    assert f"1 newer live document(s) of users were replaced; their copies are in {undo}/users.superseded.bson" \
        in " ".join(out.stderr.split()), out.stderr
    assert sorted(_kept(undo)) == sorted(app_writes + [edit])
    # the undo puts back the state from before the first attempt (saved then: 7 was absent)
    assert {i: _raw(live.users, i) for i in range(7)} == originals and _raw(live.users, 7) is None


def test_second_writer_into_a_live_database_is_refused_naming_the_first(mongo_uri, client, db, source, cli):
    import subprocess
    import sys

    from fluxa_integrity.restore.promote import _set_status

    source.users.insert_many([{"_id": i, "name": f"user {i}"} for i in range(3)])
    db.users.insert_many([{"_id": i, "name": "tampered"} for i in range(3)])
    store = open_store()
    pid = apply_promotion(store, db, source, plan_promotion(db, source, ["users"], None), Authority.operator())["promotion_id"]
    db.users.update_one({"_id": 0}, {"$set": {"name": "tampered again"}})
    # another process is promoting into (or undoing in) the same live database: it holds the lock
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom fluxa_integrity.restore.promotion_lock import PromotionLock\n"
         f"with PromotionLock({db.name!r}):\n    print('held', file=sys.stderr, flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stderr.readline().strip() == "held"  # readiness: the lock is taken
        before = db.users.find_one({"_id": 0})
        with pytest.raises(FluxaError, match=f"another promotion or undo is writing to '{db.name}': pid {holder.pid}"):
            undo_promotion(store, client, pid, Authority.operator())
        out = cli("restore", "promote", "--from-db", source.name, "--collections", "users", "--db", db.name,
                  "--uri", mongo_uri, "--yes", "--apply", "--json")
        assert out.code == 2 and f"pid {holder.pid}" in out.json()["error"], out.stdout
        assert db.users.find_one({"_id": 0}) == before  # neither wrote
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # the holder is gone: the undo runs
    assert undo_promotion(store, client, pid, Authority.operator())["counts"]["users"]["restored"] == 3
    # a status change made underneath is refused, never overwritten
    with pytest.raises(FluxaError, match="is undone, not applying"):
        _set_status(store, pid, "applied", ("applying",))
