"""Recipe ``migrate`` (S30) against the half-migration fault's ground truth, on a real server.

Forward: the corrective migration (policy: conversations-v2 adds messageCount = the number of
the conversation's messages, schemaVersion 2) plans exactly the half-migrated conversations, each
after-image equal to the pre-fault copy by content hash (field order included); applied under an
incident the migration rule verifies clean, the timeline holds it, undo is exact.
Rollback: the touched fields of every document go back to their values at T (backup + oplog,
document level): the half-migration rolled back to before it ran gives the pre-fault copy, and a
field the migration does not touch keeps its newer value; applied under an incident the
conversations equal that ground truth, the timeline holds the change set, undo is exact.
Step semantics (rename in place, a lossless or lossy convert, remove, add with a value) on a tiny
collection.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
from bson import Int64

from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.migrations import Migration
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.model import RecipeContext, content_hash
from fluxa_integrity.recovery.registry import recipe
from fluxa_integrity.store import open_store
from waiting import wait_until

UTC = timezone.utc
NAME = "migrate"
MIG = "conversations-v2"


def _ctx(db, store=None, policy=None):
    return RecipeContext(db=db, policy=policy or default_policy(), store=store, now=datetime.now(UTC))


def _by_id(coll) -> dict:
    return {d["_id"]: d for d in coll.find({})}


def _hashes(coll) -> dict:
    return {i: content_hash(d) for i, d in _by_id(coll).items()}


def _data(db, seed: int) -> None:
    generate(db, GenerateOptions(users=15, seed=seed, conversations_per_user=2, messages_per_conversation=3,
                                 secondary=False))


def test_forward_is_the_pre_fault_copy_and_applies_verifies_undoes(db, tmp_path, mongo_uri):
    _data(db, 30)
    before = _by_id(db[m.CONVERSATIONS])
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "half-migration", 8, seed=30)
    assert set(inj.variants) == {"not-migrated", "version-bumped-field-missing"}
    store = open_store()
    plan = recipe(NAME).build(_ctx(db, store), migration=MIG)
    assert plan.unresolved == [] and plan.verify == ["conversations.migration"]
    assert {c.id for c in plan.changes} == set(inj.ids)
    for c in plan.changes:
        assert content_hash(c.after) == content_hash(before[c.id]), c.reason
        assert c.fields[0] == "messageCount" and c.data_class == "chat_history"
        assert "count of messages.conversationId" in c.reason

    incidents = Incidents(store, default_policy())
    iid = incidents.open("Half-applied migration", collections=[m.CONVERSATIONS], database=db.name)["id"]
    saved = engine.make_plan(_ctx(db, store), NAME, {"migration": MIG})
    post_fault = _hashes(db[m.CONVERSATIONS])
    assert engine.apply_plan(db, store, incidents, saved.id, iid).status == "applied"
    assert _hashes(db[m.CONVERSATIONS]) == {i: content_hash(d) for i, d in before.items()}
    ver = engine.verify_plan(db, store, incidents, default_policy(), saved.id, uri=mongo_uri)
    assert ver.closed, ver.still_open
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action" and e["data"]["ref"] == saved.id]
    assert {r["data"]["action"] for r in rows} >= {"recipe", "verify"}
    assert recipe(NAME).build(_ctx(db, store), migration=MIG).changes == []  # nothing left to migrate
    engine.undo_plan(db, store, incidents, saved.id, incident_id=iid)
    assert _hashes(db[m.CONVERSATIONS]) == post_fault


@pytest.fixture()
def backed_up(private_server, tmp_path, fluxa_home):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client.app
    _data(db, 31)
    store = open_store()
    run_backup(uri, "app", store, BackupOptions(repo=tmp_path / "repo", oplog_probe="exact"))
    yield db, store
    client.close()


def _after_this_second() -> datetime:
    """Now, then wait for the clock to leave this second: oplog times may be whole seconds."""
    t = datetime.now(UTC)
    wait_until(lambda: time.time() >= int(t.timestamp()) + 1.05, "the clock to pass the mark's second")
    return t


def test_rollback_to_before_the_fault_restores_the_touched_fields(backed_up, tmp_path):
    db, store = backed_up
    # after the backup, before T: only the oplog knows these counters (the backup holds the old ones)
    db[m.CONVERSATIONS].update_many({}, {"$inc": {"messageCount": 100}})
    before = _by_id(db[m.CONVERSATIONS])
    t = _after_this_second()
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "half-migration", 6, seed=31)
    kept = inj.ids[0]
    db[m.CONVERSATIONS].update_one({"_id": kept}, {"$set": {"title": "renamed after the fault"}})
    plan = recipe(NAME).build(_ctx(db, store), migration=MIG, direction="rollback", as_of=t)
    assert {c.id for c in plan.changes} == set(inj.ids) and plan.verify == [] and plan.unresolved == []
    for c in plan.changes:
        expected = dict(before[c.id], title="renamed after the fault") if c.id == kept else before[c.id]
        assert content_hash(c.after) == content_hash(expected), c.reason
        assert set(c.fields) <= {"messageCount", "schemaVersion"} and "oplog" in plan.summary
    # a conversation created after T is left alone and said so
    db[m.CONVERSATIONS].insert_one({"_id": "late", "title": "new", "schemaVersion": 2, "messageCount": 0})
    plan = recipe(NAME).build(_ctx(db, store), migration=MIG, direction="rollback", as_of=t)
    assert plan.unresolved == ["1 conversations document(s) did not exist at " + t.isoformat() + ": left as they are"]


def test_rollback_applies_under_an_incident_equals_ground_truth_and_undoes_exactly(backed_up, tmp_path):
    db, store = backed_up
    db[m.CONVERSATIONS].update_many({}, {"$inc": {"messageCount": 7}})  # only the oplog knows these
    before = _by_id(db[m.CONVERSATIONS])
    t = _after_this_second()
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "half-migration", 6, seed=32)
    kept = inj.ids[-1]
    db[m.CONVERSATIONS].update_one({"_id": kept}, {"$set": {"title": "renamed after the fault"}})
    expected = {i: content_hash(dict(d, title="renamed after the fault") if i == kept else d)
                for i, d in before.items()}
    post_fault = _hashes(db[m.CONVERSATIONS])
    assert {i for i in expected if expected[i] != post_fault[i]} == set(inj.ids)

    incidents = Incidents(store, default_policy())
    iid = incidents.open("Migration to roll back", collections=[m.CONVERSATIONS], database=db.name)["id"]
    saved = engine.make_plan(_ctx(db, store), NAME, {"migration": MIG, "direction": "rollback", "as_of": t})
    res = engine.apply_plan(db, store, incidents, saved.id, iid, actor="responder")
    assert res.status == "applied" and res.counts[m.CONVERSATIONS]["written"] == len(inj.ids)
    # ground truth: every conversation as the fault's manifest says it was at T, the later title kept
    assert _hashes(db[m.CONVERSATIONS]) == expected
    ver = engine.verify_plan(db, store, incidents, default_policy(), saved.id)
    assert ver.closed  # a rollback names no rule to verify (the migration rule flags it by design)
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action" and e["data"]["ref"] == saved.id]
    assert rows[0]["data"]["action"] == "recipe" and rows[0]["data"]["status"] == "applied"
    assert rows[0]["data"]["counts"][m.CONVERSATIONS]["written"] == len(inj.ids) and "responder" in str(rows[0])
    undone = engine.undo_plan(db, store, incidents, saved.id, incident_id=iid)
    assert undone.finished and _hashes(db[m.CONVERSATIONS]) == post_fault  # exactly the pre-apply bytes
    assert "recipe-undo" in {e["data"]["action"] for e in incidents.timeline(iid) if e["kind"] == "recovery_action"}


def test_bad_input_is_refused(db):
    ctx = _ctx(db, open_store())
    with pytest.raises(FluxaError, match="no migration 'nope'"):
        recipe(NAME).build(ctx, migration="nope")
    with pytest.raises(FluxaError, match="needs --as-of"):
        recipe(NAME).build(ctx, migration=MIG, direction="rollback")
    with pytest.raises(FluxaError, match="in the future"):
        recipe(NAME).build(ctx, migration=MIG, direction="rollback", as_of=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(FluxaError, match="is for --direction rollback"):
        recipe(NAME).build(ctx, migration=MIG, as_of=datetime.now(UTC))
    with pytest.raises(FluxaError, match="neither forward nor rollback"):
        recipe(NAME).build(ctx, migration=MIG, direction="sideways")
    with pytest.raises(FluxaError, match="cannot roll migration conversations-v2 back"):  # no backup of this db
        recipe(NAME).build(ctx, migration=MIG, direction="rollback", as_of=ctx.now - timedelta(seconds=1))


def test_rename_convert_remove_and_add_steps(db):
    policy = default_policy().model_copy(deep=True)
    policy.migrations.append(Migration.model_validate({
        "id": "items-v3", "collection": "items", "steps": [
            {"op": "rename", "field": "qty", "to": "quantity"},
            {"op": "convert", "field": "price", "to": "double"},
            {"op": "remove_field", "field": "legacy"},
            {"op": "add_field", "field": "currency", "value": "EUR", "before": "v"},
            {"op": "set_version", "field": "v", "value": 3}]}))
    db.items.insert_many([
        {"_id": 1, "qty": 2, "price": "9.5", "legacy": True, "v": 2},
        {"_id": 2, "qty": 1, "price": Int64(4), "v": 2},
        {"_id": 3, "qty": 5, "price": "cheap", "v": 2},  # no lossless conversion
        {"_id": 4, "quantity": 1, "price": 1.0, "currency": "USD", "v": 3},  # done: untouched
    ])
    plan = recipe(NAME).build(_ctx(db, policy=policy), migration="items-v3")
    by = {c.id: c for c in plan.changes}
    assert set(by) == {1, 2}
    assert list(by[1].after.items()) == [("_id", 1), ("quantity", 2), ("price", 9.5), ("currency", "EUR"), ("v", 3)]
    assert list(by[2].after.items()) == [("_id", 2), ("quantity", 1), ("price", 4.0), ("currency", "EUR"), ("v", 3)]
    assert plan.unresolved == ["items/3: price = 'cheap' does not convert to double without loss"]
    assert plan.verify == []
