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

from backup_helpers import make_data
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.policy import default_policy
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
    # verify re-runs every rule that reports the faults (and no count-drop rule: run history, not documents)
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(collections=COLLS))
    found = {f.rule_id for f in report.findings if f.variant != "count_drop"}
    assert found and found <= set(plan.verify)
    kinds = {r.id: r.kind for _, r in default_policy().iter_rules()}
    assert "count_drop" not in {kinds[v] for v in plan.verify}


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
