"""Recipe ``correct-by-policy`` (S27) against the fault injector's ground truth, on a real server.

A small dataset is backed up, copied (the pre-fault copy), then broken by corrupt-preferences and
out-of-range. The plan must touch exactly the broken users, and each after-image must equal the
pre-fault copy by content hash: the backup and the oplog give back the overwritten value, the
unknown key is removed, key order kept. Applied by the engine under an incident, the preference
rules verify clean, the timeline holds the change set, and undo returns to the post-fault bytes.
Without history the policy defaults are used, and what has no default is left unresolved.

History needs an oplog: these tests run on a private FerretDB (its oplog is small and clean).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pymongo
import pytest

from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
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
NAME = "correct-by-policy"
PREF_RULES = ["users.preferences.theme", "users.preferences.notifications", "users.preferences.keys",
              "users.preferences.language", "users.preferences.fontSize"]


def _ctx(db, store=None):
    return RecipeContext(db=db, policy=default_policy(), store=store, now=datetime.now(UTC))


def _by_id(coll) -> dict:
    return {d["_id"]: d for d in coll.find({})}


def _truth(injections) -> dict:
    return {i: (inj.kind, v) for inj in injections for i, v in zip(inj.ids, inj.variants)}


@pytest.fixture()
def broken(private_server, tmp_path, fluxa_home):
    """Backed up, copied, then broken: (db, store, pre-fault users, {id: (kind, variant)})."""
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client.app
    generate(db, GenerateOptions(users=30, seed=27, conversations_per_user=1, messages_per_conversation=2,
                                 secondary=False))
    store = open_store()
    run_backup(uri, "app", store, BackupOptions(repo=tmp_path / "repo", oplog_probe="exact"))
    before = _by_id(db[m.USERS])
    manifest = Manifest(tmp_path / "m.json", db.name)
    injected = inject(db, manifest, "corrupt-preferences", 6, seed=27) + inject(db, manifest, "out-of-range", 3,
                                                                                 seed=27)
    yield db, store, before, _truth(injected), uri
    client.close()


def test_plan_gives_back_the_pre_fault_values_from_history(broken):
    db, store, before, truth, _ = broken
    plan = recipe(NAME).build(_ctx(db, store), collection=m.USERS)
    assert plan.unresolved == []
    assert {c.id for c in plan.changes} == set(truth)  # every broken user, nothing else
    live = _by_id(db[m.USERS])
    for c in plan.changes:
        kind, variant = truth[c.id]
        assert c.op == "update" and c.before == live[c.id]
        assert content_hash(c.after) == content_hash(before[c.id]), (kind, variant, c.reason)
        assert c.data_class == "user_preferences"
        if variant == "unknown-key":
            assert c.fields == ["preferences.legacyColor"] and "removed" in c.reason
        else:
            assert "from backup" in c.reason or "from oplog" in c.reason
    assert set(plan.verify) == {"users.preferences.theme", "users.preferences.notifications",
                                "users.preferences.keys", "users.preferences.fontSize", "users.preferences.language"}
    assert "history: backup" in plan.summary


def test_defaults_only_is_the_playbook_script(broken):
    db, store, before, truth, _ = broken
    plan = recipe(NAME).build(_ctx(db, store), collection=m.USERS, defaults_only=True)
    by = {c.id: c for c in plan.changes}
    for i, (kind, variant) in truth.items():
        if variant == "invalid-theme":
            assert by[i].after["preferences"]["theme"] == "system" and "policy default" in by[i].reason
        elif variant == "non-boolean-notifications":
            assert by[i].after["preferences"]["notifications"] is True
        elif variant == "unknown-key":
            assert content_hash(by[i].after) == content_hash(before[i])
        else:  # out-of-range: the policy declares no default for fontSize or language
            assert i not in by
            assert any(str(i) in u and "no policy default" in u for u in plan.unresolved)
    assert len(plan.unresolved) == 3


def test_rule_filter_and_bad_input(broken):
    db, store, before, truth, _ = broken
    plan = recipe(NAME).build(_ctx(db, store), collection=m.USERS, rule=["users.preferences.theme"])
    themes = {i for i, (_, v) in truth.items() if v == "invalid-theme"}
    assert {c.id for c in plan.changes} == themes and plan.verify == ["users.preferences.theme"]
    assert all(c.fields == ["preferences.theme"] for c in plan.changes)
    with pytest.raises(FluxaError, match="no rule 'users.nope'"):
        recipe(NAME).build(_ctx(db, store), collection=m.USERS, rule=["users.nope"])
    with pytest.raises(FluxaError, match="is a unique rule"):
        recipe(NAME).build(_ctx(db, store), collection=m.USERS, rule=["users.email.unique"])
    with pytest.raises(FluxaError, match="no collection 'nope'"):
        recipe(NAME).build(_ctx(db, store), collection="nope")


def test_apply_verify_undo_under_an_incident(broken):
    db, store, before, truth, uri = broken
    incidents = Incidents(store, default_policy())
    iid = incidents.open("Corrupted preferences", collections=[m.USERS], database=db.name)["id"]
    plan = engine.make_plan(_ctx(db, store), NAME, {"collection": m.USERS})
    post_fault = {i: content_hash(d) for i, d in _by_id(db[m.USERS]).items()}
    res = engine.apply_plan(db, store, incidents, plan.id, iid)
    assert res.status == "applied"
    live = _by_id(db[m.USERS])
    assert {i: content_hash(d) for i, d in live.items()} == {i: content_hash(d) for i, d in before.items()}
    ver = engine.verify_plan(db, store, incidents, default_policy(), plan.id, uri=uri)
    assert ver.closed, ver.still_open
    timeline = incidents.timeline(iid)
    applied = [t for t in timeline if t["kind"] == "recovery_action" and t["data"]["ref"] == plan.id]
    assert {t["data"]["action"] for t in applied} >= {"recipe", "verify"}
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    assert {i: content_hash(d) for i, d in _by_id(db[m.USERS]).items()} == post_fault


def test_without_a_backup_defaults_are_used_and_from_backup_refuses(db, tmp_path):
    generate(db, GenerateOptions(users=12, seed=3, conversations_per_user=1, messages_per_conversation=1,
                                 secondary=False))
    manifest = Manifest(tmp_path / "m.json", db.name)
    (inj,) = inject(db, manifest, "corrupt-preferences", 3, seed=3)
    store = open_store()
    plan = recipe(NAME).build(_ctx(db, store), collection=m.USERS)
    assert {c.id for c in plan.changes} == set(inj.ids) and "no backup" in plan.summary
    themes = [c for c in plan.changes if "theme" in c.fields[0]]
    assert themes and all(c.after["preferences"]["theme"] == "system" for c in themes)
    with pytest.raises(FluxaError, match="--from-backup"):
        recipe(NAME).build(_ctx(db, store), collection=m.USERS, from_backup=True)


def test_iso_strings_become_dates_and_nothing_the_rules_reject_is_planned(db, tmp_path):
    generate(db, GenerateOptions(users=10, seed=4, conversations_per_user=1, messages_per_conversation=1,
                                 secondary=False))
    before = _by_id(db[m.USERS])
    manifest = Manifest(tmp_path / "m.json", db.name)
    (inj,) = inject(db, manifest, "wrong-type-createdat", 2, seed=4)
    (bad_email,) = inject(db, manifest, "malformed-email", 1, seed=4)
    plan = recipe(NAME).build(_ctx(db, open_store()), collection=m.USERS)
    by = {c.id: c for c in plan.changes}
    for i in inj.ids:  # the ISO string carries the whole date: converted, equal to the pre-fault copy
        assert content_hash(by[i].after) == content_hash(before[i]) and "converted" in by[i].reason
    assert bad_email.ids[0] not in by  # no history, no default: a person decides
    assert any("users.email.format" in u for u in plan.unresolved)
