"""Newer app writes are never lost by a promotion or an undo: a promotion is a restore-and-promote
recovery plan in supersede mode, so a live document that changed since the plan (or since an
interrupted run wrote it) is kept, byte for byte, in the plan's journal (superseded-*.bson) before
it is overwritten; the undo does the same before it puts the pre-apply documents back."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.journal import Journal
from fluxa_integrity.recovery.live import RAW
from fluxa_integrity.restore.promote import promote, undo_promotion, unfinished_promotions
from fluxa_integrity.store import open_store


@pytest.fixture()
def source(client, db):
    name = f"{db.name}_src"
    yield client[name]
    client.drop_database(name)


def _raw(coll, _id) -> bytes | None:
    doc = coll.with_options(codec_options=RAW).find_one({"_id": _id})
    return None if doc is None else doc.raw


def _kept(journal: Path) -> list[bytes]:
    """The newer live documents set aside in the plan's journal, raw."""
    return [rec["live"].raw for rec in Journal(journal.parent, "superseded").records()]


def test_app_writes_between_failed_promotion_rerun_and_undo_are_kept(mongo_uri, client, db, source, cli, monkeypatch):
    source.users.insert_many([{"_id": i, "name": f"user {i}"} for i in range(8)])
    db.users.insert_many([{"_id": i, "name": "tampered"} for i in range(7)])  # 7 is the insert
    originals = {i: _raw(db.users, i) for i in range(7)}
    store = open_store()
    incidents = Incidents(store, default_policy())
    real, calls = Collection.replace_one, {"n": 0}

    def flaky(self, *a, **k):  # the server goes away at the third replace: the second batch
        calls["n"] += 1
        if calls["n"] == 3:
            raise AutoReconnect("connection closed")
        return real(self, *a, **k)

    monkeypatch.setattr(Collection, "replace_one", flaky)
    with pytest.raises(FluxaError, match="interrupted after 3 writes") as e:
        promote(store, incidents, db, source.name, ["users"], None, default_policy(), batch_size=3)
    assert "rerun the same command" in e.value.hint
    monkeypatch.setattr(Collection, "replace_one", real)
    [row] = unfinished_promotions(store, db.name)
    pid = row["id"]
    changes = engine.load_plan(store, pid).changes
    assert [c.op for c in changes] == ["insert"] + ["replace"] * 7 and changes[0].id == 7
    written, untouched = changes[1].id, changes[6].id
    assert _raw(db.users, written) == _raw(source.users, written) and _raw(db.users, 7) == _raw(source.users, 7)
    # the app writes in the promotion's set before the rerun: edits a written document and the
    # inserted one, and a document the promotion has not reached yet
    for i in (written, 7, untouched):
        db.users.update_one({"_id": i}, {"$set": {"name": f"app edit of {i} after the failure"}})
    app_writes = [_raw(db.users, i) for i in (written, 7, untouched)]

    res = promote(store, incidents, db, source.name, ["users"], None, default_policy(), batch_size=3)
    assert res.plan_id == pid and res.resumed is True and res.status == "applied"
    assert res.counts["users"]["superseded"] == 3
    journal = Path(res.journal)
    assert sorted(_kept(journal)) == sorted(app_writes)
    assert all(_raw(db.users, i) == _raw(source.users, i) for i in range(8))

    # the app edits a promoted document before the undo: the undo keeps that edit first
    db.users.update_one({"_id": changes[2].id}, {"$set": {"name": "app edit after the promotion"}})
    edit = _raw(db.users, changes[2].id)
    out = cli("restore", "undo", pid, "--yes", "--uri", mongo_uri)
    assert out.code == 0, out.stderr
    assert f"1 newer live document(s) of users were replaced; their copies are in {journal}/superseded-*.bson" \
        in " ".join(out.stderr.split()), out.stderr
    assert sorted(_kept(journal)) == sorted(app_writes + [edit])
    # the undo puts back each document as it was right before the promotion first wrote it: the
    # originals, 7 absent, and the app's edit of the document the first attempt had not reached
    assert {i: _raw(db.users, i) for i in range(7)} == {**originals, untouched: app_writes[2]}
    assert _raw(db.users, 7) is None


def test_second_writer_into_a_live_database_is_refused_naming_the_first(mongo_uri, client, db, source, cli):
    import subprocess
    import sys

    from fluxa_integrity.recovery.plans_store import set_status

    source.users.insert_many([{"_id": i, "name": f"user {i}"} for i in range(3)])
    db.users.insert_many([{"_id": i, "name": "tampered"} for i in range(3)])
    store = open_store()
    incidents = Incidents(store, default_policy())
    pid = promote(store, incidents, db, source.name, ["users"], None, default_policy()).plan_id
    db.users.update_one({"_id": 0}, {"$set": {"name": "tampered again"}})
    # another process is promoting into (or undoing in, or applying a plan to) the same live database
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom fluxa_integrity.recovery.lock import PlanLock\n"
         f"with PlanLock({db.name!r}):\n    print('held', file=sys.stderr, flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stderr.readline().strip() == "held"  # readiness: the lock is taken
        before = db.users.find_one({"_id": 0})
        with pytest.raises(FluxaError, match=f"is writing to '{db.name}': pid {holder.pid}"):
            undo_promotion(store, incidents, client, pid)
        out = cli("restore", "promote", "--from-db", source.name, "--collections", "users", "--db", db.name,
                  "--uri", mongo_uri, "--yes", "--apply", "--json")
        assert out.code == 2 and f"pid {holder.pid}" in out.json()["error"], out.stdout
        assert db.users.find_one({"_id": 0}) == before  # neither wrote
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # the holder is gone: the undo runs (the newer write to 0 set aside first)
    und = undo_promotion(store, incidents, client, pid)
    assert und.counts["users"]["restored"] == 3 and und.counts["users"]["superseded"] == 1
    # a status change made underneath is refused, never overwritten
    with pytest.raises(FluxaError, match="is undone, not applying"):
        set_status(store, pid, "applied", ("applying",))
