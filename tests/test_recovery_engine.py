"""The recovery engine against a real server: plans saved whole and checked, dry runs that call
out conflicts, applies that are journaled, idempotent and on the incident's timeline, undo back
to the exact pre-apply bytes, and the refusals (applied twice, no or closed incident, newer
writes). The recipe is a tiny one the tests register (tests/recovery_recipe.py) (recipes are another
module's job); the kill and server-restart tests live in test_recover_cli.py."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import bson
import pytest
from bson import ObjectId
from bson.int64 import Int64

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.model import RecipeContext
from fluxa_integrity.store import open_store
from recovery_recipe import EPOCH, RECIPE, after_hashes, hashes, seed

N = 60


@pytest.fixture()
def store(fluxa_home):
    return open_store()


@pytest.fixture()
def incidents(store):
    return Incidents(store, default_policy())


@pytest.fixture()
def ctx(db, store):
    return RecipeContext(db=db, policy=default_policy(), store=store, now=datetime.now(timezone.utc))


def test_plan_is_saved_whole_typed_and_checked(db, store, ctx, fluxa_home):
    seed(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items", "drop-every": "10"}, actor="alice")
    assert plan.id and (fluxa_home / "plans" / plan.id / "plan.json").is_file()
    meta = json.loads((fluxa_home / "plans" / plan.id / "plan.json").read_text())
    assert meta["recipe"] == RECIPE and meta["database"] == db.name and meta["changes"] == len(plan.changes)
    back = engine.load_plan(store, plan.id)
    # types survive: Int64, dates, ObjectIds, nested documents, byte-identical images
    for a, b in zip(plan.changes, back.changes):
        assert (a.collection, a.op, a.id, a.reason) == (b.collection, b.op, b.id, b.reason)
        assert a.after == b.after and a.before == b.before
    ins = [c for c in back.changes if c.op == "insert"][0]
    assert isinstance(ins.after["n"], Int64) and isinstance(ins.after["oid"], ObjectId)
    assert ins.after["at"] == EPOCH
    [row] = engine.list_plans(store)
    assert (row["id"], row["status"], row["actor"]) == (plan.id, "planned", "alice")
    assert row["counts"] == {"items": {"update": 20, "delete": 4, "insert": 4}}
    # a damaged changes file is refused, by name
    path = fluxa_home / "plans" / plan.id / "changes.bson"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FluxaError, match="fails its sha256"):
        engine.load_plan(store, plan.id)


def test_bad_parameters_and_unknown_recipe(ctx):
    with pytest.raises(FluxaError, match="unknown recipe 'nope'"):
        engine.make_plan(ctx, "nope", {})
    with pytest.raises(FluxaError, match="needs --collection"):
        engine.make_plan(ctx, RECIPE, {})
    with pytest.raises(FluxaError, match="--drop-every 'x' is not a int"):
        engine.make_plan(ctx, RECIPE, {"collection": "items", "drop_every": "x"})
    with pytest.raises(FluxaError, match="no parameter --colour"):
        engine.make_plan(ctx, RECIPE, {"collection": "items", "colour": "red"})
    with pytest.raises(FluxaError, match="no recovery plan 'x-1'"):
        engine.load_plan(ctx.store, "x-1")


def test_dry_run_counts_samples_and_conflicts(db, ctx):
    seed(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    db.items.update_one({"_id": 3}, {"$set": {"name": "edited by the app"}})  # after the source point
    db.items.insert_one({"_id": 1001, "n": 5})  # an insert's _id taken by another document
    before = hashes(db)
    dry = engine.dry_run(db, plan, samples=2)
    assert hashes(db) == before  # reads only
    assert dry.counts == {"items": {"update": 20, "delete": 4, "insert": 4}}
    assert dry.states == {"items": {"todo": 26, "done": 0, "conflict": 2}}
    assert {c["id"] for c in dry.conflicts} == {3, 1001} and dry.conflicts_total == 2
    c3 = next(c for c in dry.conflicts if c["id"] == 3)
    assert c3["fields"] == {"name": ["item 3", "edited by the app"]}
    assert len(dry.samples) == 6  # two per collection and kind
    upd = [s for s in dry.samples if s["op"] == "update"][1]  # _id 3 (0 -> -0 is no change)
    assert upd["fields"]["nested.a"] == [upd["id"], -upd["id"]] and upd["fields"]["label"] == [None, "fixed"]


def test_apply_then_undo_restores_exact_bytes_and_records_the_timeline(db, store, ctx, incidents):
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid, actor="alice", batch_size=7)
    assert res.status == "applied" and not res.resumed
    assert res.counts == {"items": {"written": 28, "already": 0, "conflicts": 0, "forced": 0}}
    after = hashes(db)
    want = after_hashes(plan)
    assert {k: after[k] for k in want} == want  # every document is exactly the plan's after-image
    assert not {c.id for c in plan.changes if c.op == "delete"} & set(after)
    assert len(after) == N - 4 + 4
    row = engine.list_plans(store)[0]
    assert row["status"] == "applied" and row["incident_id"] == iid
    with pytest.raises(FluxaError, match="already applied") as e:
        engine.apply_plan(db, store, incidents, plan.id, iid)
    assert "undo it first or make a new plan" in e.value.hint
    assert hashes(db) == after
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert und.counts["items"] == {"restored": 24, "deleted": 4, "already": 0, "superseded": 0}
    assert hashes(db) == original  # byte for byte
    assert engine.list_plans(store)[0]["status"] == "undone"
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert [(r["data"]["action"], r["data"]["status"], r["data"]["ref"]) for r in rows] == [
        ("recipe", "applied", plan.id), ("recipe-undo", "applied", plan.id)]
    assert rows[0]["data"]["counts"]["items"]["written"] == 28 and rows[0]["actor"] == "alice"
    with pytest.raises(FluxaError, match="already undone"):
        engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)


def test_conflicts_are_not_overwritten_unless_forced_by_id(db, store, ctx, incidents):
    seed(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    db.items.update_one({"_id": 6}, {"$set": {"name": "newer"}})
    db.items.update_one({"_id": 9}, {"$set": {"name": "newer too"}})
    newer = hashes(db)
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    assert res.status == "partial" and {c["id"] for c in res.conflicts} == {6, 9}
    assert res.counts["items"]["conflicts"] == 2 and res.counts["items"]["written"] == 26
    now = hashes(db)
    assert now[6] == newer[6] and now[9] == newer[9]  # the app's writes survive
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert rows[-1]["data"]["status"] == "partial" and "2 conflicts" in rows[-1]["data"]["summary"]
    # forcing one conflict by id writes that one only; the live document is journaled first
    res2 = engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=[6])
    assert res2.counts["items"] == {"written": 0, "already": 26, "conflicts": 1, "forced": 1}
    assert db.items.find_one({"_id": 6})["label"] == "fixed" and hashes(db)[9] == newer[9]
    # undo puts back what was live before each write: the app's version of 6, the seed elsewhere
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert hashes(db) == newer


def test_apply_refuses_without_an_open_incident_and_writes_nothing(db, store, ctx, incidents):
    seed(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    before = hashes(db)
    with pytest.raises(FluxaError, match="needs an open incident"):
        engine.apply_plan(db, store, incidents, plan.id, None)
    with pytest.raises(FluxaError, match="no incident 4242"):
        engine.apply_plan(db, store, incidents, plan.id, 4242)
    iid = incidents.open("x", collections=["analytics"])["id"]
    incidents.acknowledge(iid)
    incidents.resolve(iid, "done")
    incidents.review(iid, root_cause="test")
    incidents.close(iid)
    with pytest.raises(FluxaError, match="is closed"):
        engine.apply_plan(db, store, incidents, plan.id, iid)
    with pytest.raises(FluxaError, match="is for database"):
        engine.apply_plan(db.client["elsewhere"], store, incidents, plan.id, iid)
    assert hashes(db) == before and engine.list_plans(store)[0]["status"] == "planned"
    with pytest.raises(FluxaError, match="never applied"):
        engine.undo_plan(db, store, incidents, plan.id)


def test_undo_refuses_documents_changed_since_the_apply_unless_forced(db, store, ctx, incidents, fluxa_home):
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    engine.apply_plan(db, store, incidents, plan.id, iid)
    db.items.update_one({"_id": 12}, {"$set": {"name": "written after the apply"}})
    applied = hashes(db)
    with pytest.raises(FluxaError, match=r"1 document\(s\) the plan wrote changed in live since it was applied "
                                         r"\(items/12\)") as e:
        engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert "--force" in e.value.hint
    assert hashes(db) == applied and engine.list_plans(store)[0]["status"] == "applied"  # nothing half-written
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=iid, force=True)
    assert und.counts["items"]["superseded"] == 1
    assert hashes(db) == original
    kept = list((fluxa_home / "plans" / plan.id / "journal").glob("superseded-*.bson"))
    assert len(kept) == 1
    [doc] = bson.decode_all(kept[0].read_bytes())
    assert doc["live"]["name"] == "written after the apply"


def test_resumed_apply_after_a_failure_completes_without_duplicates(db, store, ctx, incidents, monkeypatch):
    """An apply that fails midway (a write refused after some batches) is ``failed``, recorded as
    partial, and the rerun completes it; the journal keeps the first images only."""
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    from pymongo.collection import Collection
    from pymongo.errors import AutoReconnect

    real = Collection.replace_one
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise AutoReconnect("connection closed")
        return real(self, *a, **k)

    monkeypatch.setattr(Collection, "replace_one", flaky)
    with pytest.raises(FluxaError, match="interrupted after") as e:
        engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=5)
    assert "rerun" in e.value.hint
    assert engine.list_plans(store)[0]["status"] == "failed"
    res = engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=5)
    assert res.resumed and res.status == "applied"
    c = res.counts["items"]
    assert c["written"] + c["already"] == 28 and c["already"] >= 10 and c["conflicts"] == 0
    assert db.items.count_documents({}) == N
    statuses = [e["data"]["status"] for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert statuses == ["partial", "applied"]
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert hashes(db) == original


def _users(db, themes: list[str]) -> list:
    ids = [ObjectId() for _ in themes]
    db.users.insert_many([{"_id": i, "email": f"u{k}@example.com", "name": f"user {k}", "createdAt": EPOCH,
                           "preferences": {"theme": t, "notifications": True}}
                          for k, (i, t) in enumerate(zip(ids, themes))])
    return ids


def _theme_plan(db, store, ids: list, rule: str = "users.preferences.theme"):
    from fluxa_integrity.recovery.model import Change, Plan
    from fluxa_integrity.recovery.plans_store import save

    changes = []
    for doc in db.users.find({"_id": {"$in": ids}}):
        after = {**doc, "preferences": {**doc["preferences"], "theme": "system"}}
        changes.append(Change("users", "update", doc["_id"], doc, after, "theme not in the policy's enum",
                              data_class="user_preferences", fields=["preferences.theme"]))
    plan = Plan("test-theme", db.name, {}, datetime.now(timezone.utc), changes, verify=[rule])
    save(store, plan)
    return plan


def test_verify_runs_the_plans_rules_closes_the_findings_and_records_the_result(db, mongo_uri, store, incidents):
    from fluxa_integrity.checks.history import list_findings, record_run
    from fluxa_integrity.checks.runner import RunOptions, run_checks

    policy = default_policy()
    bad = _users(db, ["neon", "dark", "pink", "light", "neon"])
    wrong = [bad[0], bad[2], bad[4]]
    record_run(store, run_checks(mongo_uri, db.name, policy, RunOptions(rules=["users.preferences.theme"])))
    [finding] = [f for f in list_findings(store, db.name) if f.rule_id == "users.preferences.theme"]
    assert finding.count == 3
    plan = _theme_plan(db, store, wrong[:2])  # one of the three left out: still open after the apply
    with pytest.raises(FluxaError, match="only an applied plan is verified"):
        engine.verify_plan(db, store, incidents, policy, plan.id)
    iid = incidents.open("Bad themes", collections=["users.preferences"])["id"]
    engine.apply_plan(db, store, incidents, plan.id, iid)
    res = engine.verify_plan(db, store, incidents, policy, plan.id)
    assert not res.closed and res.rules == ["users.preferences.theme"] and res.collections == ["users"]
    [left] = res.still_open
    assert (left["count"], left["on_plan_documents"]) == (1, 0)
    # the rest by a second plan: now clean, and the open finding is closed in the store
    plan2 = _theme_plan(db, store, [wrong[2]])
    engine.apply_plan(db, store, incidents, plan2.id, iid)
    res2 = engine.verify_plan(db, store, incidents, policy, plan2.id)
    assert res2.closed and res2.still_open == [] and res2.run["closed"] == 1
    assert not [f for f in list_findings(store, db.name) if f.rule_id == "users.preferences.theme"]
    rows = [e["data"] for e in incidents.timeline(iid) if e["kind"] == "recovery_action" and e["data"]["action"] == "verify"]
    assert [(r["ref"], r["status"]) for r in rows] == [(plan.id, "still-open"), (plan2.id, "closed")]
    row = next(r for r in engine.list_plans(store) if r["id"] == plan2.id)
    assert row["verified_at"] is not None and row["result"]["verify"]["closed"] is True


def test_apply_respects_containment_by_another_incident(db, store, ctx, incidents):
    seed(db)
    before = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    holder = incidents.open("Items corrupted", collections=["analytics"])["id"]
    incidents.contain(holder, db, read_only=True, collections=["items"])
    other = incidents.open("Another problem", collections=["analytics"])["id"]
    with pytest.raises(FluxaError, match="read-only") as e:
        engine.apply_plan(db, store, incidents, plan.id, other)
    assert f"--incident {holder}" in e.value.hint
    assert hashes(db) == before and engine.list_plans(store)[0]["status"] == "planned"
    res = engine.apply_plan(db, store, incidents, plan.id, holder)  # the containing incident recovers
    assert res.status == "applied"


def test_undo_respects_containment_by_another_incident(db, store, ctx, incidents):
    """`recover undo` checks containment as apply does: refused before any write under another
    incident or the operator's --yes (no incident), allowed under the containing incident."""
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    holder = incidents.open("Items corrupted", collections=["analytics"])["id"]
    engine.apply_plan(db, store, incidents, plan.id, holder)
    applied = hashes(db)
    incidents.contain(holder, db, read_only=True, collections=["items"])
    other = incidents.open("Another problem", collections=["analytics"])["id"]
    for iid in (other, None):
        with pytest.raises(FluxaError, match="read-only") as e:
            engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
        assert f"--incident {holder}" in e.value.hint
    assert hashes(db) == applied and engine.list_plans(store)[0]["status"] == "applied"
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=holder)  # the containing incident
    assert und.finished and hashes(db) == original
