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


# -- review defects (issue 10): each test failed before its fix ---------------------------------------


def _close(incidents, iid: int) -> None:
    incidents.acknowledge(iid)
    incidents.resolve(iid, "done")
    incidents.review(iid, root_cause="test")
    incidents.close(iid)


def _timeline(incidents, iid: int, action: str = "recipe") -> list[dict]:
    return [e["data"] for e in incidents.timeline(iid)
            if e["kind"] == "recovery_action" and e["data"]["action"] == action]


def _superseded(fluxa_home, plan_id: str) -> list:
    from fluxa_integrity.recovery.journal import Journal

    return [(rec["i"], rec["live"]) for rec in Journal(fluxa_home / "plans" / plan_id, "superseded").records()]


def _fail_first_write(monkeypatch):
    """The first batch is journaled, then its write fails (the server went away)."""
    from pymongo.errors import AutoReconnect

    from fluxa_integrity.recovery import apply as apply_mod

    real = apply_mod.write_batch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise AutoReconnect("connection closed")
        return real(*a, **k)

    monkeypatch.setattr(apply_mod, "write_batch", flaky)


def test_forced_conflict_over_a_journaled_unwritten_change_keeps_the_newer_write(db, store, ctx, incidents, fluxa_home,
                                                                                 monkeypatch):
    """Apply fails after batch 1 is journaled, before it is written; the app updates _id 3; the
    rerun reports 3 as a conflict; --force-id 3 overwrites it. The app's write is kept (superseded
    journal) and undo puts it back - not the pre-plan image the first journal record holds."""
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    _fail_first_write(monkeypatch)
    with pytest.raises(FluxaError, match="interrupted after 0 writes"):
        engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=10)
    assert hashes(db) == original  # journaled, nothing written
    db.items.update_one({"_id": 3}, {"$set": {"name": "the app wrote this"}})
    app_version = hashes(db)[3]
    res = engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=10)
    assert [c["id"] for c in res.conflicts] == [3] and hashes(db)[3] == app_version
    forced = engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=[3])
    assert forced.counts["items"]["forced"] == 1 and db.items.find_one({"_id": 3})["label"] == "fixed"
    kept = _superseded(fluxa_home, plan.id)
    assert [i for i, _ in kept] == [next(k for k, c in enumerate(plan.changes) if c.id == 3)]
    assert kept[0][1]["name"] == "the app wrote this"
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert und.finished
    assert hashes(db) == {**original, 3: app_version}  # the app's write is back, everything else as before


def test_undo_leaves_journaled_changes_the_apply_never_wrote(db, store, ctx, incidents, monkeypatch):
    """A change journaled but not written - an insert whose _id the app took between the batch's
    read and its write (duplicate key), a change the app wrote after an interrupted batch was
    journaled (a conflict on the rerun) - is not the apply's: undo leaves the app's documents
    alone instead of refusing or deleting them."""
    from fluxa_integrity.recovery.journal import Journal

    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    _fail_first_write(monkeypatch)
    with pytest.raises(FluxaError, match="interrupted"):
        engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=10)
    monkeypatch.undo()
    db.items.update_one({"_id": 3}, {"$set": {"name": "the app wrote this"}})  # journaled, never written
    real = Journal.append

    def app_races(self, records):
        out = real(self, records)
        if self.kind == "apply" and any(r[2] == 1001 for r in records):
            db.items.insert_one({"_id": 1001, "n": 7, "name": "the app's own 1001"})  # lands before the insert
        return out

    monkeypatch.setattr(Journal, "append", app_races)
    res = engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=10)
    assert sorted(c["id"] for c in res.conflicts) == [3, 1001]
    monkeypatch.undo()
    app = hashes(db)
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)  # not refused: 3 and 1001 are not ours
    assert und.finished and und.changed == []
    assert hashes(db) == {**original, 3: app[3], 1001: app[1001]}


def test_undo_puts_back_a_write_whose_done_record_was_lost(db, store, ctx, incidents, monkeypatch):
    """Killed between a batch's writes and its done record: the written documents read back as the
    plan's after-image, so undo puts them back although no done record says so."""
    from fluxa_integrity.recovery.journal import Journal

    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]

    def lost(self, done):
        raise OSError("disk full")

    monkeypatch.setattr(Journal, "append_done", lost)
    with pytest.raises(FluxaError, match="interrupted after 5 writes: disk full"):
        engine.apply_plan(db, store, incidents, plan.id, iid, batch_size=5)
    monkeypatch.undo()
    assert hashes(db) != original
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert und.finished and hashes(db) == original


def test_index_plan_collections_are_under_containment(db, store, incidents):
    """An index plan has no document changes: its params.index_changes collections are checked."""
    from fluxa_integrity.recovery.model import Plan
    from fluxa_integrity.recovery.plans_store import save

    seed(db)
    plan = Plan("test-index-only", db.name, {"index_changes": [
        {"collection": "items", "action": "create", "name": "n_1", "key": [["n", 1]], "options": {}, "reason": "x"}]},
        datetime.now(timezone.utc), [])
    save(store, plan)
    holder = incidents.open("Items corrupted", collections=["analytics"])["id"]
    incidents.contain(holder, db, read_only=True, collections=["items"])
    other = incidents.open("Another problem", collections=["analytics"])["id"]
    with pytest.raises(FluxaError, match="read-only"):
        engine.apply_plan(db, store, incidents, plan.id, other)
    assert engine.list_plans(store)[0]["status"] == "planned"


def test_undo_refuses_when_the_recording_incident_is_closed(db, store, ctx, incidents):
    """--yes records the undo on the apply's incident: closed, the undo is refused before any write
    (it would be off the record); with --incident of an open incident it runs and is recorded."""
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    engine.apply_plan(db, store, incidents, plan.id, iid)
    applied = hashes(db)
    _close(incidents, iid)
    with pytest.raises(FluxaError, match=f"incident {iid}.*closed") as e:
        engine.undo_plan(db, store, incidents, plan.id)
    assert "--incident ID" in e.value.hint
    assert hashes(db) == applied and engine.list_plans(store)[0]["status"] == "applied"
    other = incidents.open("Undo the relabel", collections=["analytics"])["id"]
    und = engine.undo_plan(db, store, incidents, plan.id, incident_id=other)
    assert und.timeline["recorded"] and hashes(db) == original
    assert [t["status"] for t in _timeline(incidents, other, "recipe-undo")] == ["applied"]


def test_a_delete_racing_a_write_keeps_the_newer_document(db, store, ctx, incidents, fluxa_home, monkeypatch):
    """Where deletes go one find_one_and_delete at a time (forced here on the dev server), a
    document written between the batch's read and its delete is kept in the superseded journal,
    reported as a conflict, and undo puts that newer document back."""
    from fluxa_integrity.recovery import writes
    from fluxa_integrity.recovery.journal import Journal

    monkeypatch.setattr(writes, "per_document_deletes", lambda client: True)
    seed(db)
    original = hashes(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    victim = next(c.id for c in plan.changes if c.op == "delete")
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    real = Journal.append

    def app_races(self, records):
        out = real(self, records)
        if self.kind == "apply" and any(r[2] == victim for r in records):
            db.items.update_one({"_id": victim}, {"$set": {"name": "written in the instant before"}})
        return out

    monkeypatch.setattr(Journal, "append", app_races)
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    monkeypatch.setattr(Journal, "append", real)
    assert [c["id"] for c in res.conflicts] == [victim] and res.status == "partial"
    assert db.items.find_one({"_id": victim}) is None
    [(i, kept)] = _superseded(fluxa_home, plan.id)
    assert plan.changes[i].id == victim and kept["name"] == "written in the instant before"
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    now = hashes(db)
    assert db.items.find_one({"_id": victim})["name"] == "written in the instant before"
    assert {k: v for k, v in now.items() if k != victim} == {k: v for k, v in original.items() if k != victim}


def test_force_ids_must_name_the_plans_conflicts_typed_as_the_plan_stores_them(db, store, ctx, incidents):
    seed(db)
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    db.items.update_one({"_id": 6}, {"$set": {"name": "newer"}})
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    with pytest.raises(FluxaError, match="has no change with that _id") as e:
        engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=["4242"])
    assert "$oid" in e.value.hint
    assert engine.list_plans(store)[0]["status"] == "planned"  # refused before anything
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    assert [c["id"] for c in res.conflicts] == [6]
    with pytest.raises(FluxaError, match="not a conflict the apply of plan .* left unwritten"):
        engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=["9"])  # in the plan, written already
    forced = engine.apply_plan(db, store, incidents, plan.id, iid, force_ids=["6"])  # text, as typed: the int 6
    assert forced.counts["items"]["forced"] == 1 and db.items.find_one({"_id": 6})["label"] == "fixed"


class Killed(BaseException):
    """A kill -9 at a precise point: nothing catches it."""


def test_a_kill_around_the_final_status_records_the_change_set_once(db, store, ctx, incidents, monkeypatch):
    from fluxa_integrity.recovery import apply as apply_mod

    seed(db)
    iid = incidents.open("Items mislabelled", collections=["analytics"])["id"]
    # killed at the final status change: the rerun completes; the change set is on the timeline once
    plan = engine.make_plan(ctx, RECIPE, {"collection": "items"})
    real_status = apply_mod.set_status

    def killed_at_applied(store_, plan_id, status, *a, **k):
        if status == "applied":
            raise Killed()
        return real_status(store_, plan_id, status, *a, **k)

    monkeypatch.setattr(apply_mod, "set_status", killed_at_applied)
    with pytest.raises(Killed):
        engine.apply_plan(db, store, incidents, plan.id, iid)
    monkeypatch.undo()
    engine.apply_plan(db, store, incidents, plan.id, iid)
    assert [t["status"] for t in _timeline(incidents, iid) if t["ref"] == plan.id] == ["applied"]
    # killed after the status, before the timeline entry: the next command on the plan records it
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    plan2 = engine.make_plan(ctx, RECIPE, {"collection": "items", "label": "again"})
    real_record = apply_mod.record_pending
    calls = {"n": 0}

    def killed_before_record(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the first call flushes what an earlier run left; the second records this one
            raise Killed()
        return real_record(*a, **k)

    monkeypatch.setattr(apply_mod, "record_pending", killed_before_record)
    with pytest.raises(Killed):
        engine.apply_plan(db, store, incidents, plan2.id, iid)
    monkeypatch.undo()
    assert _timeline(incidents, iid, "recipe")[-1]["ref"] == plan.id and engine.list_plans(store)[0]["status"] == "applied"
    with pytest.raises(FluxaError, match="already applied"):
        engine.apply_plan(db, store, incidents, plan2.id, iid)
    assert [t["status"] for t in _timeline(incidents, iid) if t["ref"] == plan2.id] == ["applied"]


def test_save_failure_names_the_change_and_leaves_no_temporary_directory(db, store, fluxa_home):
    from fluxa_integrity.recovery.model import Change, Plan
    from fluxa_integrity.recovery.plans_store import save

    plan = Plan("test-overflow", db.name, {}, datetime.now(timezone.utc), [
        Change("items", "update", 7, {"_id": 7, "n": 1}, {"_id": 7, "n": 2 ** 70}, "too big")])
    with pytest.raises(FluxaError, match=r"items/7 \(update\) cannot be encoded"):
        save(store, plan)
    assert not [p for p in (fluxa_home / "plans").iterdir()]  # no .tmp-* left behind
    assert engine.list_plans(store) == []


def test_apply_locks_every_database_the_plan_writes(db, store, incidents):
    from fluxa_integrity.recovery.lock import PlanLock
    from fluxa_integrity.recovery.model import Change, Plan
    from fluxa_integrity.recovery.plans_store import save

    other = f"{db.name}_secondary"
    plan = Plan("test-sync-like", db.name, {}, datetime.now(timezone.utc), [
        Change(f"{other}.users", "insert", 1, None, {"_id": 1, "email": "a@example.com"}, "missing")])
    save(store, plan)
    iid = incidents.open("Sync broken", collections=["analytics"])["id"]
    try:
        with PlanLock(other):  # another writer holds the secondary
            with pytest.raises(FluxaError, match=f"another recovery apply.*{other}"):
                engine.apply_plan(db, store, incidents, plan.id, iid)
        assert db.client[other].users.count_documents({}) == 0
        assert engine.apply_plan(db, store, incidents, plan.id, iid).status == "applied"
    finally:
        db.client.drop_database(other)


def test_verify_connects_with_the_uri_it_is_given(db, store, incidents, monkeypatch):
    """The face passes the URI it resolved; the engine reads nothing private of pymongo."""
    from fluxa_integrity.recovery import verify as verify_mod

    seen = []

    def fake_run(uri, *a, **k):
        seen.append(uri)
        raise FluxaError("stop here")

    monkeypatch.setattr(verify_mod, "run_checks", fake_run)
    monkeypatch.setattr(type(db.client), "_init_kwargs", property(lambda self: {"host": "mongodb://wrong:1/"}),
                        raising=False)
    plan = _theme_plan(db, store, _users(db, ["neon"]))
    iid = incidents.open("Bad themes", collections=["users.preferences"])["id"]
    engine.apply_plan(db, store, incidents, plan.id, iid)
    for uri in ("mongodb://given:27017/", None):
        with pytest.raises(FluxaError, match="stop here"):
            engine.verify_plan(db, store, incidents, default_policy(), plan.id, uri=uri)
    host, port = db.client.address
    assert seen == ["mongodb://given:27017/", f"mongodb://{host}:{port}/?directConnection=true"]
