"""Recipe ``undelete`` (S28) against the fault injector's ground truth: soft-deleted users (and
users soft-deleted long ago, which ``--since`` must leave alone), messages the app deleted with
an audit before-image, and messages lost with no audit record at all - brought back from the
newest backup plus the oplog, document by document, with no database restore.

Each test copies the data before the fault. The plan must touch every deleted id once and
nothing else, each after-image equal to the pre-fault copy by content hash; applied under an
incident, the plan's checks are clean and the timeline holds the change set; undo returns to
the post-fault state exactly. Hard-delete tests run on a private server: they read the oplog,
which on the shared server holds the whole suite's writes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pymongo
import pytest
from bson import ObjectId

from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.rules import DeletionsRule
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.model import RecipeContext, content_hash
from fluxa_integrity.recovery.registry import recipe
from fluxa_integrity.store import open_store

UTC = timezone.utc
NAME = "undelete"
COUNTER = "conversations.messageCount"
SMALL = dict(conversations_per_user=2, messages_per_conversation=4)


def _ctx(db, policy=None, store=None):
    return RecipeContext(db=db, policy=policy or default_policy(), store=store, now=datetime.now(UTC))


def _hashes(coll) -> dict:
    return {d["_id"]: content_hash(d) for d in coll.find({})}


def _apply_verify_undo(db, plan_params: dict, pre: dict, colls: tuple[str, ...], rules: list[str]):
    """make, apply under an incident, verify, check the timeline, undo: the acceptance loop."""
    store = open_store()
    incidents = Incidents(store, default_policy())
    post = {c: _hashes(db[c]) for c in colls}
    plan = engine.make_plan(_ctx(db, store=store), NAME, plan_params)
    iid = incidents.open("Data loss", collections=list(colls))["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid, actor="responder")
    assert res.status == "applied"
    for c in colls:
        assert _hashes(db[c]) == pre[c]
    ver = engine.verify_plan(db, store, incidents, default_policy(), plan.id)
    assert ver.rules == rules and ver.closed, ver.still_open
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert [(r["data"]["action"], r["data"]["ref"]) for r in rows][0] == ("recipe", plan.id)
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    for c in colls:
        assert _hashes(db[c]) == post[c]
    return plan


def test_soft_deletes_since_t_are_cleared_and_older_ones_left(db, tmp_path):
    generate(db, GenerateOptions(users=40, seed=28, **SMALL))
    manifest = Manifest(tmp_path / "m.json", db.name)
    old = inject(db, manifest, "activity-after-deletion", 2, seed=28)  # deleted mid-history: long ago
    pre = {m.USERS: _hashes(db[m.USERS])}
    (inj,) = inject(db, manifest, "soft-deleted-users", 5, seed=28)
    since = inj.time - timedelta(seconds=1)
    plan = recipe(NAME).build(_ctx(db), collection=m.USERS, since=since, soft=True)
    assert sorted(c.id for c in plan.changes) == sorted(inj.ids)  # the long-deleted users stay
    for c in plan.changes:
        assert (c.op, c.fields, c.data_class) == ("update", ["deletedAt"], "user_accounts")
        assert content_hash(c.after) == pre[m.USERS][c.id]
    assert plan.verify == ["users.deletions"] and plan.unresolved == []
    old_users = next(i for i in old if i.collection == m.USERS)
    everything = recipe(NAME).build(_ctx(db), collection=m.USERS, soft=True)  # no --since: every marker
    assert {c.id for c in everything.changes} >= set(inj.ids) | set(old_users.ids)
    one = recipe(NAME).build(_ctx(db), collection=m.USERS, since=since, ids=[str(inj.ids[0])], soft=True)
    assert [c.id for c in one.changes] == [inj.ids[0]]
    _apply_verify_undo(db, {"collection": m.USERS, "since": since, "soft": True}, pre, (m.USERS,),
                       ["users.deletions"])


def test_children_soft_deleted_with_their_parent_come_back_with_it(db):
    generate(db, GenerateOptions(users=10, seed=5, **SMALL))
    policy = default_policy().model_copy(deep=True)
    policy.collections[m.CONVERSATIONS].rules.append(
        DeletionsRule(id="conversations.deletions", soft_delete_field="deletedAt"))
    user = db[m.USERS].find_one({}, sort=[("_id", 1)])
    convs = [c["_id"] for c in db[m.CONVERSATIONS].find({"userId": user["_id"]})]
    other = db[m.CONVERSATIONS].find_one({"userId": {"$ne": user["_id"]}})
    t = datetime.now(UTC).replace(microsecond=0)
    db[m.USERS].update_one({"_id": user["_id"]}, {"$set": {"deletedAt": t}})
    db[m.CONVERSATIONS].update_many({"_id": {"$in": convs[1:]}}, {"$set": {"deletedAt": t + timedelta(seconds=20)}})
    db[m.CONVERSATIONS].update_one({"_id": convs[0]}, {"$set": {"deletedAt": t - timedelta(days=2)}})  # earlier, alone
    db[m.CONVERSATIONS].update_one({"_id": other["_id"]}, {"$set": {"deletedAt": t}})  # another user's
    plan = recipe(NAME).build(_ctx(db, policy), collection=m.USERS, since=t, soft=True)
    assert [(c.collection, c.id) for c in plan.changes] == \
        [(m.USERS, user["_id"])] + [(m.CONVERSATIONS, c) for c in sorted(convs[1:])]
    assert all("deletedAt" not in c.after for c in plan.changes)
    assert plan.verify == ["users.deletions", "conversations.deletions"]


def test_audited_deletions_come_back_from_the_before_image(private_server, tmp_path):
    client = pymongo.MongoClient(private_server.status().uri, tz_aware=True)
    db = client.app
    generate(db, GenerateOptions(users=30, seed=12, **SMALL))
    pre = {c: _hashes(db[c]) for c in (m.MESSAGES, m.CONVERSATIONS)}
    start = datetime.now(UTC) - timedelta(seconds=1)
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "deleted-messages", 5, seed=12)
    plan = recipe(NAME).build(_ctx(db), collection=m.MESSAGES, since=start, hard=True)
    ins = [c for c in plan.changes if c.op == "insert"]
    ups = [c for c in plan.changes if c.op == "update"]
    assert sorted(c.id for c in ins) == sorted(inj.ids) and len(ins) + len(ups) == len(plan.changes)
    for c in ins:
        assert content_hash(c.after) == pre[m.MESSAGES][c.id]
        assert "audit entry" in c.reason and "before-image" in c.reason
    assert sorted(c.id for c in ups) == sorted(inj.details["conversations"])  # the app's -1 undone
    assert all(content_hash(c.after) == pre[m.CONVERSATIONS][c.id] for c in ups)
    assert plan.verify == [COUNTER] and plan.unresolved == []
    _apply_verify_undo(db, {"collection": m.MESSAGES, "since": start, "hard": True}, pre,
                       (m.MESSAGES, m.CONVERSATIONS), [COUNTER])
    client.close()


def test_lost_messages_come_back_from_the_backup_and_the_oplog(private_server, tmp_path):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client.app
    generate(db, GenerateOptions(users=30, seed=14, secondary=False, **SMALL))
    store = open_store()
    run_backup(uri, "app", store, BackupOptions(repo=tmp_path / "repo", oplog_probe="exact"))
    # written after the backup, changed, then lost: only the oplog knows it
    conv = db[m.CONVERSATIONS].find_one({}, sort=[("_id", 1)])
    late = {"_id": ObjectId(), "conversationId": conv["_id"], "userId": conv["userId"], "text": "draft",
            "sender": "user", "timestamp": datetime.now(UTC).replace(microsecond=0)}
    db[m.MESSAGES].insert_one(late)
    db[m.MESSAGES].update_one({"_id": late["_id"]}, {"$set": {"text": "final words"}})
    final = db[m.MESSAGES].find_one({"_id": late["_id"]})
    db[m.CONVERSATIONS].update_one({"_id": conv["_id"]}, {"$inc": {"messageCount": 1}})
    pre = {c: _hashes(db[c]) for c in (m.MESSAGES, m.CONVERSATIONS)}
    start = datetime.now(UTC) - timedelta(seconds=1)
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "lost-messages", 5, seed=14)
    db[m.MESSAGES].delete_one({"_id": late["_id"]})  # lost too, counter left stale
    ghost = ObjectId()  # an audit record of a document nothing else knows
    db[m.AUDIT_LOG].insert_one({"_id": ObjectId(), "operation": "delete", "collection": m.MESSAGES,
                                "documentId": ghost, "timestamp": datetime.now(UTC), "actor": "x", "before": None})
    lost = sorted(set(inj.details["messages"]) | {late["_id"]})  # lost-messages may have taken it already
    plan = recipe(NAME).build(_ctx(db, store=store), collection=m.MESSAGES, since=start, hard=True)
    ins = {c.id: c for c in plan.changes if c.op == "insert"}
    assert sorted(ins) == lost and len(ins) == len(plan.changes)  # stale counters are right again
    for i, c in ins.items():
        assert content_hash(c.after) == pre[m.MESSAGES][i]
        assert "oplog delete" in c.reason
    assert content_hash(ins[late["_id"]].after) == content_hash(final)
    assert "from the oplog" in ins[late["_id"]].reason
    assert all("from backup " in ins[i].reason for i in inj.details["messages"] if i != late["_id"])
    (note,) = plan.unresolved
    assert str(ghost) in note and "found in no audit before-image, backup or oplog" in note
    _apply_verify_undo(db, {"collection": m.MESSAGES, "since": start, "hard": True}, pre,
                       (m.MESSAGES, m.CONVERSATIONS), [COUNTER])
    client.close()


def test_bad_input(db):
    with pytest.raises(FluxaError, match="no collection 'nope'"):
        recipe(NAME).build(_ctx(db), collection="nope")
    with pytest.raises(FluxaError, match="messages has no soft-delete field"):
        recipe(NAME).build(_ctx(db), collection=m.MESSAGES, soft=True)
