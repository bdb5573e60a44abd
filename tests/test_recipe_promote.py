"""Recipe ``restore-and-promote`` (S24/S25) against fault ground truth, on a real server.

A backup is taken and restored into a scratch database (the restored copy); faults are injected
in live afterwards. The plan must insert exactly the deleted documents and replace exactly the
changed ones, each with the restored copy's document (equal by content hash to the pre-fault
document), leave live-only documents alone, mark a replacement that undoes a write made after the
copy's point, and honour --ids.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from bson import json_util

from backup_helpers import make_data
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.model import RecipeContext, content_hash
from fluxa_integrity.recovery.registry import recipe
from fluxa_integrity.restore.executor import restore_snapshot
from fluxa_integrity.store import open_store

UTC = timezone.utc
COLLS = [m.USERS, m.CONVERSATIONS, m.MESSAGES]


def _ctx(db, store):
    return RecipeContext(db=db, policy=default_policy(), store=store, now=datetime.now(UTC))


def _hashes(coll) -> dict:
    return {d["_id"]: content_hash(d) for d in coll.find({})}


@pytest.fixture()
def restored(mongo_uri, client, db, tmp_path):
    """Live data after faults, its restored copy from before them, and the faults' ground truth."""
    make_data(db, users=40, seed=25)
    store = open_store()
    backup = run_backup(mongo_uri, db.name, store, BackupOptions(oplog_probe="clock"))
    copy = f"{db.name}_restored"
    restore_snapshot(mongo_uri, store, backup.id, copy, collections=COLLS)
    pre = {n: _hashes(db[n]) for n in COLLS}
    manifest = Manifest(tmp_path / "m.json", db.name)
    truth = {i.kind: i for i in inject(db, manifest, "deleted-messages", 3, seed=25)
             + inject(db, manifest, "corrupt-preferences", 3, seed=25)}
    yield db, client[copy], store, pre, truth
    client.drop_database(copy)


def test_plan_is_the_diff_and_brings_back_the_pre_fault_documents(mongo_uri, restored):
    db, copy, store, pre, truth = restored
    new_user = db.users.insert_one({"name": "signed up after the backup", "email": "late@example.com",
                                    "lastUpdated": datetime.now(UTC)}).inserted_id
    plan = recipe("restore-and-promote").build(_ctx(db, store), source_db=copy.name, collections=",".join(COLLS))
    by: dict[tuple, dict] = {}
    for c in plan.changes:
        by.setdefault((c.collection, c.op), {})[c.id] = c
    deleted, corrupted = truth["deleted-messages"], truth["corrupt-preferences"]
    assert set(by) == {(m.MESSAGES, "insert"), (m.USERS, "replace"), (m.CONVERSATIONS, "replace")}
    assert set(by[m.MESSAGES, "insert"]) == set(deleted.ids)
    assert set(by[m.USERS, "replace"]) == set(corrupted.ids)  # the late sign-up is left alone
    assert set(by[m.CONVERSATIONS, "replace"]) == set(deleted.details["conversations"])  # their counters
    assert new_user not in {c.id for c in plan.changes}
    assert "1 live-only document(s) left alone" in plan.summary
    for (coll, _op), changes in by.items():
        for i, c in changes.items():
            assert content_hash(c.after) == pre[coll][i]  # the pre-fault document, byte for byte
            if c.before is not None:
                assert content_hash(c.before) == content_hash(db[coll].find_one({"_id": i}))
    assert by[m.USERS, "replace"][corrupted.ids[0]].fields == ["preferences"]
    assert all(c.data_class for c in plan.changes)
    # verify re-runs every rule that reports the faults' document states (not count_drop/deletions:
    # a drop between runs or an audit-log delete is an event that bringing documents back leaves)
    kinds = {r.id: r.kind for _, r in default_policy().iter_rules()}
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(collections=COLLS))
    found = {f.rule_id for f in report.findings if kinds[f.rule_id] not in ("count_drop", "deletions")}
    assert found and found <= set(plan.verify)
    assert not {"count_drop", "deletions"} & {kinds[v] for v in plan.verify}


def test_a_write_after_the_copys_point_is_named_and_ids_select(restored):
    db, copy, store, pre, truth = restored
    uid = truth["corrupt-preferences"].ids[0]
    db.users.update_one({"_id": uid}, {"$set": {"lastUpdated": datetime.now(UTC)}})
    ghost = {"$oid": "65f0c0ffee0000000000abcd"}
    ids = '[{"$oid": "%s"}, {"$oid": "65f0c0ffee0000000000abcd"}]' % uid
    plan = recipe("restore-and-promote").build(_ctx(db, store), source_db=copy.name, collections=[m.USERS], ids=ids)
    (c,) = plan.changes
    assert (c.id, c.op) == (uid, "replace") and "after the copy's point" in c.reason
    assert content_hash(c.after) == pre[m.USERS][uid]
    assert "1 replaced document(s) were written in live after the copy's point" in plan.summary
    (line,) = plan.unresolved
    assert "1 of the --ids are in neither" in line and ghost["$oid"] in line


def test_bad_input_is_refused(restored):
    db, copy, store, _pre, _truth = restored
    build = recipe("restore-and-promote").build
    with pytest.raises(FluxaError, match="is the live database"):
        build(_ctx(db, store), source_db=db.name, collections="users")
    with pytest.raises(FluxaError, match="has no collection 'analytics'"):
        build(_ctx(db, store), source_db=copy.name, collections="users,analytics")
    with pytest.raises(FluxaError, match="--ids must be a JSON array"):
        build(_ctx(db, store), source_db=copy.name, collections="users", ids='{"a": 1}')
    with pytest.raises(FluxaError, match="does not exist"):
        build(_ctx(db, store), source_db=db.name + "_nothing", collections="users")


def test_apply_verify_and_undo_under_an_incident(mongo_uri, restored):
    db, copy, store, pre, truth = restored
    incidents = Incidents(store, default_policy())
    post = {n: _hashes(db[n]) for n in COLLS}
    plan = engine.make_plan(_ctx(db, store), "restore-and-promote", {"source-db": copy.name, "collections": COLLS})
    iid = incidents.open("Messages deleted, preferences corrupted", collections=[m.USERS, m.MESSAGES])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid, actor="responder")
    # the faults wrote every replaced document after the copy's point (the oplog says so): each is
    # held, a conflict left as it is; the deleted messages come back
    held = {(h["collection"], h["id"]) for h in plan.params["held"]}
    assert held == {(c.collection, c.id) for c in plan.changes if c.op == "replace"} and held
    assert res.status == "partial" and {(c["collection"], c["id"]) for c in res.conflicts} == held
    assert all(c["reason"].startswith("held: written in live after the copy's point") for c in res.conflicts)
    assert {n: _hashes(db[n]) for n in COLLS} != pre
    res = engine.apply_plan(db, store, incidents, plan.id, iid, actor="responder", force_ids=[i for _, i in held])
    assert res.status == "applied" and res.conflicts == []
    assert {n: _hashes(db[n]) for n in COLLS} == pre  # every document equals the pre-fault copy
    ver = engine.verify_plan(db, store, incidents, default_policy(), plan.id)
    assert ver.closed, ver.still_open
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(rules=plan.verify))
    assert report.findings == []
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert ("recipe", plan.id) in [(r["data"]["action"], r["data"]["ref"]) for r in rows]
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert {n: _hashes(db[n]) for n in COLLS} == post  # back to the state before the apply exactly


def test_a_live_document_changed_after_the_plan_is_a_conflict_until_forced(restored):
    db, copy, store, pre, truth = restored
    incidents = Incidents(store, default_policy())
    ids = json_util.dumps(truth["corrupt-preferences"].ids)  # asked for by id: not held
    plan = engine.make_plan(_ctx(db, store), "restore-and-promote", {"source_db": copy.name, "collections": [m.USERS],
                                                                     "ids": ids})
    assert plan.params["held"] == [] and len(plan.changes) == 3
    uid = truth["corrupt-preferences"].ids[1]
    db.users.update_one({"_id": uid}, {"$set": {"name": "renamed by the app after the plan"}})
    renamed = content_hash(db.users.find_one({"_id": uid}))
    iid = incidents.open("Preferences corrupted", collections=[m.USERS])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    assert res.status == "partial" and [c["id"] for c in res.conflicts] == [uid]
    assert content_hash(db.users.find_one({"_id": uid})) == renamed  # never silently overwritten
    others = [i for i in truth["corrupt-preferences"].ids if i != uid]
    assert all(content_hash(db.users.find_one({"_id": i})) == pre[m.USERS][i] for i in others)
    forced = engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=[uid])
    assert forced.status == "applied"
    assert content_hash(db.users.find_one({"_id": uid})) == pre[m.USERS][uid]


def test_restore_promote_is_this_recipe_applied_in_supersede_mode(mongo_uri, restored, cli, fluxa_home):
    """`restore promote` is one user of the engine: its dry run plans what `recover plan
    restore-and-promote` plans, and --apply makes and applies that plan (supersede mode), whose id
    is the promotion id, shown and verified by `recover` like any plan."""
    import json

    db, copy, store, pre, truth = restored
    ids = '[{"$oid": "%s"}]' % truth["corrupt-preferences"].ids[0]
    for extra in ([], ["--ids", ids]):
        dry = cli("restore", "promote", "--from-db", copy.name, "--collections", "users,messages", *extra,
                  "--db", db.name, "--uri", mongo_uri, "--json")
        assert dry.code == 0, dry.stderr
        plan = cli("recover", "plan", "restore-and-promote", "--source-db", copy.name, "--collections",
                   "users,messages", *extra, "--db", db.name, "--uri", mongo_uri, "--json")
        assert plan.code == 0, plan.stderr
        counts = plan.json()["counts"]
        for name, c in dry.json()["collections"].items():  # the same documents, the same kinds of change
            assert counts.get(name, {}).get("replace", 0) == c["overwrite"]
            assert counts.get(name, {}).get("insert", 0) == c["insert"]
        assert set(counts) == set(dry.json()["collections"])
    iid = Incidents(store, default_policy()).open("Messages deleted, preferences corrupted",
                                                  collections=[m.USERS, m.MESSAGES])["id"]
    app = cli("restore", "promote", "--from-db", copy.name, "--collections", ",".join(COLLS), "--db", db.name,
              "--incident", str(iid), "--apply", "--uri", mongo_uri, "--json")
    assert app.code == 0, app.stderr
    pid = app.json()["promotion_id"]
    assert {n: _hashes(db[n]) for n in COLLS} == pre  # every document equals the pre-fault copy
    meta = json.loads((fluxa_home / "plans" / pid / "plan.json").read_text())
    assert (meta["recipe"], meta["on_conflict"]) == ("restore-and-promote", "supersede")
    show = cli("recover", "show", pid, "--uri", mongo_uri, "--json")
    assert show.code == 0 and show.json()["plan"]["status"] == "applied", show.stdout
    assert show.json()["plan"]["incident_id"] == iid
    ver = cli("recover", "verify", pid, "--uri", mongo_uri, "--json")
    assert ver.code == 0 and ver.json()["closed"] is True, ver.stdout


def test_a_write_after_the_copys_point_is_held_from_the_oplog_without_a_time_field(mongo_uri, restored, cli):
    """The app renames a user after the backup without touching its time field: the oplog shows
    the write, so the replace is held - a conflict in the dry run and at apply, the app's write
    left in place until forced by id. `restore promote` (supersede) keeps it in the journal and
    overwrites it."""
    from fluxa_integrity.recovery.journal import Journal

    db, copy, store, pre, truth = restored
    incidents = Incidents(store, default_policy())
    uid = next(d["_id"] for d in db.users.find({}, sort=[("_id", 1)]) if d["_id"] not in truth["corrupt-preferences"].ids)
    db.users.update_one({"_id": uid}, {"$set": {"name": "renamed by the app after the backup"}})
    renamed = content_hash(db.users.find_one({"_id": uid}))
    plan = engine.make_plan(_ctx(db, store), "restore-and-promote", {"source_db": copy.name, "collections": [m.USERS]})
    assert plan.source_point < datetime.now(UTC) and uid in {h["id"] for h in plan.params["held"]}
    [c] = [c for c in plan.changes if c.id == uid]
    assert "the oplog has a write at" in c.reason and "held" in c.reason
    dry = engine.dry_run(db, plan)
    assert uid in {x["id"] for x in dry.conflicts if x["held"]}
    iid = incidents.open("Preferences corrupted", collections=[m.USERS])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    assert uid in {x["id"] for x in res.conflicts} and res.status == "partial"
    assert content_hash(db.users.find_one({"_id": uid})) == renamed  # not overwritten
    forced = engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=[uid])
    assert forced.counts[m.USERS]["forced"] == 1
    assert content_hash(db.users.find_one({"_id": uid})) == pre[m.USERS][uid]
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert content_hash(db.users.find_one({"_id": uid})) == renamed  # undo puts the app's write back
    # restore promote: supersede mode - the held document is kept in the journal, then overwritten
    app = cli("restore", "promote", "--from-db", copy.name, "--collections", m.USERS, "--db", db.name,
              "--incident", str(iid), "--apply", "--uri", mongo_uri, "--json")
    assert app.code == 0, app.stderr
    out = app.json()
    assert out["superseded"][m.USERS] >= 1 and "held" in out["summary"]
    assert content_hash(db.users.find_one({"_id": uid})) == pre[m.USERS][uid]
    from fluxa_integrity.recovery.plans_store import plan_dir

    kept = [rec["live"] for rec in Journal(plan_dir(out["promotion_id"]), "superseded").records()]
    assert renamed in {content_hash(k) for k in kept}
