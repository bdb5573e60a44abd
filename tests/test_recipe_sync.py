"""Recipe ``sync`` (S31) against the sync-drift fault's ground truth, on a real server.

The secondary system is copied before the fault (the pre-fault copy); the plan must insert
exactly the missing ids, delete exactly the extra ones and update exactly the conflicting ones,
each to the document the secondary held before the fault with the primary's new values, and
nothing else. Applied under an incident, the sync check is clean, the drifted documents equal the
expected ones by content hash, and undo puts the secondary back byte for byte.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.model import RecipeContext, content_hash
from fluxa_integrity.recovery.registry import recipe
from fluxa_integrity.store import open_store

UTC = timezone.utc
RULE = "users.sync"


def _policy(**sync):
    p = default_policy().model_copy(deep=True)
    rule = p.rule(RULE)
    for k, v in sync.items():
        setattr(rule, k, v)
    return p


def _ctx(db, policy=None, store=None):
    return RecipeContext(db=db, policy=policy or default_policy(), store=store, now=datetime.now(UTC))


def _by_id(coll) -> dict:
    return {d["_id"]: d for d in coll.find({})}


@pytest.fixture()
def drifted(db, tmp_path):
    """A small dataset, the secondary as it was before the fault, and the fault's ground truth."""
    generate(db, GenerateOptions(users=40, seed=31, conversations_per_user=1, messages_per_conversation=2))
    sec = db.client[m.secondary_db_name(db.name)]
    before = _by_id(sec[m.USERS])
    manifest = Manifest(tmp_path / "m.json", db.name)
    (inj,) = inject(db, manifest, "sync-drift", 9, seed=31)
    truth: dict[str, list] = {}
    for i, v in zip(inj.ids, inj.variants):
        truth.setdefault(v, []).append(i)
    return db, sec, before, truth


def _sync_findings(mongo_uri, db) -> list:
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(rules=[RULE], keep_ids=True))
    assert report.warnings == []
    return [(f.variant, f.count) for f in report.findings]


def test_plan_is_the_ground_truth_and_nothing_else(mongo_uri, drifted):
    db, sec, before, truth = drifted
    assert sorted(v for v, _ in _sync_findings(mongo_uri, db)) == [
        "changed_after_sync", "extra_in_secondary", "missing_in_secondary"]
    plan = recipe("sync").build(_ctx(db))
    target, state = f"{sec.name}.{m.USERS}", f"{sec.name}.{m.SYNC_STATE}"
    assert plan.verify == [RULE] and plan.unresolved == []
    by: dict[tuple, dict] = {}
    for c in plan.changes:
        by.setdefault((c.collection, c.op), {})[c.id] = c
    assert set(by) == {(target, "insert"), (target, "delete"), (target, "update"), (state, "update")}
    assert set(by[target, "insert"]) == set(truth["missing-in-secondary"])
    assert set(by[target, "delete"]) == set(truth["extra-in-secondary"])
    assert set(by[target, "update"]) == set(truth["conflicting-lastUpdated"])
    primary = _by_id(db[m.USERS])
    for i, c in by[target, "insert"].items():  # the secondary's document as the generator's sync made it
        assert content_hash(c.after) == content_hash(before[i])
    for i, c in by[target, "delete"].items():
        assert c.before == _by_id(sec[m.USERS])[i]
    for i, c in by[target, "update"].items():
        expected = dict(before[i], lastUpdated=primary[i]["lastUpdated"])
        assert content_hash(c.after) == content_hash(expected) and c.fields == ["lastUpdated"]
        assert "winner rule 'primary'" in c.reason
    (s,) = by[state, "update"].values()
    newest = max(d["lastUpdated"] for d in primary.values())
    assert s.after["lastSyncAt"] >= newest and s.after["lastSyncAt"] >= s.before["lastSyncAt"]
    assert all(c.data_class is None for c in plan.changes)  # derived data: no class covers the copy


def test_winner_newest_writes_a_newer_secondary_record_to_the_primary(drifted):
    db, sec, before, truth = drifted
    uid = next(i for i in before if i not in {x for ids in truth.values() for x in ids})
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=400)
    sec[m.USERS].update_one({"_id": uid}, {"$set": {"email": "crm-edit@example.com", "lastUpdated": later}})
    plan = recipe("sync").build(_ctx(db, _policy(winner="newest")))
    (c,) = [c for c in plan.changes if c.id == uid]
    assert (c.collection, c.op, c.fields) == (m.USERS, "update", ["email", "lastUpdated"])
    assert c.before == db[m.USERS].find_one({"_id": uid})
    assert c.after == dict(c.before, email="crm-edit@example.com", lastUpdated=later)
    assert "winner rule 'newest'" in c.reason and "written to the primary" in c.reason
    # the other conflicts are newer in the primary: still written to the secondary
    ups = {c.id for c in plan.changes if c.op == "update" and c.collection.endswith("." + m.USERS)}
    assert ups == set(truth["conflicting-lastUpdated"])
    state = next(c for c in plan.changes if c.collection.endswith(m.SYNC_STATE))
    assert state.after["lastSyncAt"] == later  # the newest stamp carried


def test_extra_report_leaves_secondary_only_ids_and_says_so(drifted):
    db, sec, before, truth = drifted
    plan = recipe("sync").build(_ctx(db, _policy(extra="report")))
    assert not [c for c in plan.changes if c.op == "delete"]
    (line,) = plan.unresolved
    assert f"{len(truth['extra-in-secondary'])} ids only" in line and "extra: report" in line


def test_in_sync_plans_nothing_and_bad_input_is_refused(db):
    generate(db, GenerateOptions(users=15, seed=5, conversations_per_user=1, messages_per_conversation=1))
    plan = recipe("sync").build(_ctx(db))
    assert plan.changes == [] and plan.summary.endswith("already in sync")
    with pytest.raises(FluxaError, match="no sync rule 'users.email.type'"):
        recipe("sync").build(_ctx(db), rule="users.email.type")
    with pytest.raises(FluxaError, match="not top-level"):
        recipe("sync").build(_ctx(db, _policy(fields=["preferences.theme"])), rule=RULE)


def _hashes(coll) -> dict:
    return {d["_id"]: content_hash(d) for d in coll.find({})}


def test_apply_verify_and_undo_under_an_incident(mongo_uri, drifted):
    db, sec, before, truth = drifted
    store = open_store()
    incidents = Incidents(store, default_policy())
    post = {c: _hashes(sec[c]) for c in (m.USERS, m.SYNC_STATE)}
    plan = engine.make_plan(_ctx(db, store=store), "sync", {"rule": RULE})
    iid = incidents.open("CRM out of sync", collections=[m.USERS])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid, actor="responder")
    assert res.status == "applied" and res.conflicts == []
    # the secondary is the pre-fault copy with the primary's newer stamps, document by document
    primary = _by_id(db[m.USERS])
    expected = {i: content_hash(d) for i, d in before.items()}
    for i in truth["conflicting-lastUpdated"]:
        expected[i] = content_hash(dict(before[i], lastUpdated=primary[i]["lastUpdated"]))
    assert _hashes(sec[m.USERS]) == expected
    assert sec[m.SYNC_STATE].find_one({"_id": m.USERS})["lastSyncAt"] >= max(
        d["lastUpdated"] for d in primary.values())
    ver = engine.verify_plan(db, store, incidents, default_policy(), plan.id)
    assert ver.closed and ver.rules == [RULE]
    assert _sync_findings(mongo_uri, db) == []
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert ("recipe", plan.id) in [(r["data"]["action"], r["data"]["ref"]) for r in rows]
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert {c: _hashes(sec[c]) for c in (m.USERS, m.SYNC_STATE)} == post  # back to the drifted state exactly


def test_a_secondary_record_changed_after_the_plan_is_a_conflict_not_overwritten(drifted):
    db, sec, before, truth = drifted
    store = open_store()
    incidents = Incidents(store, default_policy())
    plan = engine.make_plan(_ctx(db, store=store), "sync", {})
    uid = truth["conflicting-lastUpdated"][0]
    sec[m.USERS].update_one({"_id": uid}, {"$set": {"email": "edited-in-the-crm@example.com"}})
    edited = content_hash(sec[m.USERS].find_one({"_id": uid}))
    iid = incidents.open("CRM out of sync", collections=[m.USERS])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    assert res.status == "partial" and [c["id"] for c in res.conflicts] == [uid]
    assert content_hash(sec[m.USERS].find_one({"_id": uid})) == edited
    for i in truth["missing-in-secondary"]:  # everything else was written
        assert content_hash(sec[m.USERS].find_one({"_id": i})) == content_hash(before[i])


def test_recover_plan_sync_on_the_command_line(mongo_uri, drifted, cli):
    db, sec, before, truth = drifted
    out = cli("recover", "plan", "sync", "--rule", RULE, "--db", db.name, "--uri", mongo_uri, "--json")
    assert out.code == 0, out.stderr
    res = out.json()
    assert res["counts"][f"{sec.name}.{m.USERS}"] == {"insert": 3, "delete": 3, "update": 3}
    assert res["counts"][f"{sec.name}.{m.SYNC_STATE}"] == {"update": 1}
    assert res["verify"] == [RULE] and res["conflicts_total"] == 0
    bad = cli("recover", "plan", "sync", "--rule", "users.nope", "--db", db.name, "--uri", mongo_uri, "--json")
    assert bad.code == 2 and "no sync rule 'users.nope'" in bad.stdout + bad.stderr
