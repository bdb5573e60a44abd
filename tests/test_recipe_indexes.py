"""Recipe ``indexes`` (S29) on a real server: an index dropped after a backup is planned back from
the policy and the backup's metadata, the engine creates it under an incident (timeline, counts),
the corruption rule verifies clean, every index equals the backup's definition in full (keys,
unique, sparse, TTL, partial filter - the last two only where the server has them: FerretDB 1.24
refuses them, a real MongoDB runs them), and undo drops it again; a different index of the same
name is replaced and put back on undo; an index someone recreated before the apply is not dropped
by undo (undo follows the apply's index journal); a unique index over duplicates is not planned,
and one whose create fails after a drop says how undo puts the old one back; an unexpected live
index is kept and reported; the server's validate is run or its absence said.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from pymongo.errors import OperationFailure

from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.model import RecipeContext
from fluxa_integrity.recovery.recipes.indexes import live_indexes
from fluxa_integrity.recovery.registry import recipe
from fluxa_integrity.store import open_store

UTC = timezone.utc
NAME = "indexes"


def _ctx(db, store):
    return RecipeContext(db=db, policy=default_policy(), store=store, now=datetime.now(UTC))


# indexes with options beyond the generator's plain ones, so a lost option shows: (collection,
# keys, options); TTL and partial filters are created only where the server implements them
OPTIONED = [
    (m.USERS, [("email", 1), ("_id", 1)], {"name": "email_1__id_1", "unique": True}),
    (m.CONVERSATIONS, [("title", 1)], {"name": "title_1", "sparse": True}),
    (m.LOGS, [("timestamp", 1)], {"name": "timestamp_ttl", "expireAfterSeconds": 10**9}),
    (m.ANALYTICS, [("userId", 1)], {"name": "userId_partial", "partialFilterExpression": {"userId": {"$exists": True}}}),
]


def full_specs(db) -> dict:
    """Every index of every collection as the server lists it (but the format version): a lost
    unique, sparse, expireAfterSeconds or partialFilterExpression makes two of these differ."""
    return {n: sorted(json.dumps({k: v for k, v in ix.items() if k not in ("v", "ns")}, sort_keys=True, default=str)
                      for ix in db[n].list_indexes())
            for n in sorted(db.list_collection_names())}


@pytest.fixture()
def backed_up(db, mongo_uri, tmp_path, fluxa_home):
    generate(db, GenerateOptions(users=10, seed=29, conversations_per_user=1, messages_per_conversation=2,
                                 secondary=False))
    for coll, keys, opts in OPTIONED:
        try:
            db[coll].create_index(keys, **opts)
        except OperationFailure as exc:  # FerretDB 1.24: TTL and partial indexes "not implemented yet"
            assert exc.code == 238, exc
    store = open_store()
    backup = run_backup(mongo_uri, db.name, store, BackupOptions(repo=tmp_path / "repo"))
    return db, store, backup


def test_dropped_index_is_planned_applied_verified_and_undone(backed_up, mongo_uri):
    db, store, backup = backed_up
    original = full_specs(db)
    db[m.USERS].drop_index("email_1")
    db[m.AUDIT_LOG].drop_index("collection_1_timestamp_1")  # only the backup knows this one
    optioned = [(coll, opts["name"]) for coll, _, opts in OPTIONED
                if opts["name"] in {i["name"] for i in db[coll].list_indexes()}]
    for coll, name in optioned:  # only the backup knows these, options and all
        db[coll].drop_index(name)
    plan = recipe(NAME).build(_ctx(db, store))
    changes = plan.params["index_changes"]
    assert [(c["collection"], c["action"], c["name"]) for c in changes if (c["collection"], c["name"]) not in optioned] == [
        (m.USERS, "create", "email_1"), (m.AUDIT_LOG, "create", "collection_1_timestamp_1")]
    assert sorted((c["collection"], c["name"]) for c in changes if c["action"] == "create") == sorted(
        [(m.USERS, "email_1"), (m.AUDIT_LOG, "collection_1_timestamp_1"), *optioned])
    assert "policy rule users.corruption" in changes[0]["reason"] and backup.id in changes[1]["reason"]
    assert plan.changes == [] and plan.verify == ["users.corruption", "conversations.corruption"]  # title_1
    assert "email_1" in plan.summary and not [u for u in plan.unresolved if "index" in u]

    incidents = Incidents(store, default_policy())
    iid = incidents.open("Index lost", collections=[m.USERS], database=db.name)["id"]
    saved = engine.make_plan(_ctx(db, store), NAME, {})
    res = engine.apply_plan(db, store, incidents, saved.id, iid)
    assert res.status == "applied" and res.counts[f"{m.USERS} (indexes)"]["created"] == 2  # + email_1__id_1
    assert full_specs(db) == original  # back as the backup recorded them: keys and every option
    ver = engine.verify_plan(db, store, incidents, default_policy(), saved.id, uri=mongo_uri)
    assert ver.closed, ver.still_open
    rows = [e["data"] for e in incidents.timeline(iid) if e["kind"] == "recovery_action" and e["data"]["ref"] == saved.id]
    assert rows[0]["action"] == "recipe" and rows[0]["counts"][f"{m.USERS} (indexes)"]["created"] == 2
    assert recipe(NAME).build(_ctx(db, store)).params["index_changes"] == []  # nothing left to rebuild

    engine.undo_plan(db, store, incidents, saved.id, incident_id=iid)
    assert "email_1" not in {i["name"] for i in live_indexes(db, m.USERS)}
    assert "collection_1_timestamp_1" not in {i["name"] for i in live_indexes(db, m.AUDIT_LOG)}
    for coll, name in optioned:
        assert name not in {i["name"] for i in live_indexes(db, coll)}


def test_undo_leaves_an_index_the_apply_found_already_there(backed_up):
    db, store, _ = backed_up
    db[m.USERS].drop_index("email_1")
    incidents = Incidents(store, default_policy())
    iid = incidents.open("Index lost", collections=[m.USERS], database=db.name)["id"]
    saved = engine.make_plan(_ctx(db, store), NAME, {"collection": [m.USERS], "source": "policy"})
    assert [c["name"] for c in saved.params["index_changes"]] == ["email_1"]
    db[m.USERS].create_index([("email", 1)], name="email_1")  # a DBA put it back before the apply
    res = engine.apply_plan(db, store, incidents, saved.id, iid)
    assert res.counts[f"{m.USERS} (indexes)"]["already"] == 1 and res.counts[f"{m.USERS} (indexes)"]["created"] == 0
    engine.undo_plan(db, store, incidents, saved.id, incident_id=iid)
    assert "email_1" in {i["name"] for i in live_indexes(db, m.USERS)}  # not the apply's to drop


@pytest.fixture()
def handles(db, mongo_uri, tmp_path, fluxa_home):
    """A collection with a unique index on ``h``, backed up."""
    db.handles.insert_many([{"_id": i, "h": f"h{i}"} for i in range(5)])
    db.handles.create_index([("h", 1)], name="h_1", unique=True)
    store = open_store()
    run_backup(mongo_uri, db.name, store, BackupOptions(repo=tmp_path / "repo"))
    return db, store


def test_a_unique_index_over_duplicates_is_not_planned(handles):
    db, store = handles
    db.handles.drop_index("h_1")
    db.handles.insert_one({"_id": 9, "h": "h1"})
    plan = recipe(NAME).build(_ctx(db, store), collection=["handles"], source="backup")
    assert plan.params["index_changes"] == []
    (line,) = [u for u in plan.unresolved if "h_1" in u]
    assert "cannot be built" in line and "1 value(s)" in line and "'h1'" in line
    db.handles.create_index([("h", 1)], name="h_1")  # a non-unique one of that name: not dropped for nothing
    plan = recipe(NAME).build(_ctx(db, store), collection=["handles"], source="backup")
    assert plan.params["index_changes"] == [] and any("is kept" in u for u in plan.unresolved)


def test_a_replace_whose_create_fails_says_undo_and_undo_puts_the_old_index_back(handles):
    db, store = handles
    db.handles.drop_index("h_1")
    db.handles.create_index([("h", 1)], name="h_1")  # not unique
    incidents = Incidents(store, default_policy())
    iid = incidents.open("Index changed", database=db.name)["id"]
    saved = engine.make_plan(_ctx(db, store), NAME, {"collection": ["handles"], "source": "backup"})
    assert [c["action"] for c in saved.params["index_changes"]] == ["replace"]
    db.handles.insert_one({"_id": 9, "h": "h1"})  # a duplicate arrives after the plan
    with pytest.raises(FluxaError) as err:
        engine.apply_plan(db, store, incidents, saved.id, iid)
    assert "was dropped" in err.value.message and f"recover undo {saved.id}" in err.value.message
    assert "h_1" not in {i["name"] for i in live_indexes(db, "handles")}
    engine.undo_plan(db, store, incidents, saved.id, incident_id=iid)
    assert [(i["name"], i["key"], i["options"]) for i in live_indexes(db, "handles")] == [("h_1", [["h", 1]], {})]


def test_a_different_index_is_replaced_and_put_back_on_undo(backed_up):
    db, store, _ = backed_up
    db[m.USERS].drop_index("email_1")
    db[m.USERS].create_index([("email", -1)], name="email_1")  # same name, other keys
    db[m.USERS].create_index([("name", 1)], name="name_1")  # nobody expects it
    before = live_indexes(db, m.USERS)
    incidents = Incidents(store, default_policy())
    iid = incidents.open("Index changed", collections=[m.USERS], database=db.name)["id"]
    saved = engine.make_plan(_ctx(db, store), NAME, {"collection": [m.USERS], "source": "policy"})
    (c,) = saved.params["index_changes"]
    assert c["action"] == "replace" and c["live"]["key"] == [["email", -1]]
    assert any("name_1" in u and "kept" in u for u in saved.unresolved)
    engine.apply_plan(db, store, incidents, saved.id, iid)
    assert {i["name"]: i["key"] for i in live_indexes(db, m.USERS)} == {
        "email_1": [["email", 1]], "name_1": [["name", 1]], "email_1__id_1": [["email", 1], ["_id", 1]]}
    engine.undo_plan(db, store, incidents, saved.id, incident_id=iid)
    assert sorted(json.dumps(i) for i in live_indexes(db, m.USERS)) == sorted(json.dumps(i) for i in before)


def test_validate_is_run_or_its_absence_said_and_bad_input(backed_up):
    db, store, _ = backed_up
    plan = recipe(NAME).build(_ctx(db, store))
    assert plan.params["index_changes"] == []
    assert "validate run" in plan.summary  # FerretDB 1.24 and MongoDB both have it (probed per run)
    assert not [u for u in plan.unresolved if "corruption" in u]  # a healthy database
    with pytest.raises(FluxaError, match="--source 'nope'"):
        recipe(NAME).build(_ctx(db, store), source="nope")
    with pytest.raises(FluxaError, match="no collection 'ghost'"):
        recipe(NAME).build(_ctx(db, store), collection=["ghost"])


def test_source_backup_needs_a_backup(db, fluxa_home):
    generate(db, GenerateOptions(users=3, seed=1, conversations_per_user=1, messages_per_conversation=1,
                                 secondary=False))
    with pytest.raises(FluxaError, match="no complete full backup"):
        recipe(NAME).build(_ctx(db, open_store()), source="backup")


def test_cli_plan_apply_shows_and_writes_the_index(backed_up, cli, mongo_uri):
    db, store, _ = backed_up
    db[m.USERS].drop_index("email_1")
    res = cli("recover", "plan", NAME, "--collection", m.USERS, "--no-validate", "--uri", mongo_uri, "--db", db.name,
              "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert "create email_1" in out["summary"] and "validate run" not in out["summary"] and out["total"] == 0
    plan_id = out["plan_id"]
    iid = Incidents(open_store(), default_policy()).open("Index lost", collections=[m.USERS], database=db.name)["id"]
    res = cli("recover", "apply", plan_id, "--incident", str(iid), "--apply", "--uri", mongo_uri, "--json")
    assert res.code == 0, res.stderr
    assert "email_1" in {i["name"] for i in live_indexes(db, m.USERS)}
