"""Recipe ``reconstruct-from-logs`` (S26) against the lost-messages fault's ground truth.

The messages and conversations are copied before the fault (the pre-fault copy). The plan must
insert every lost message once, each marked with its provenance (``_recovered: {from, logId}``,
the Fluxa policy's default) and, that field removed, byte-for-byte the lost one (parentId
relinked, field order kept), put each conversation's counter back, and nothing else. Applied
under an incident the counter check is clean, no check flags the mark, and the timeline holds the
change set; undo returns to the post-fault state exactly. Also: the window/user/conversation
filters, JSON-lines log files, a message that still exists is never planned, audited deletions are
left to undelete, no mark when a policy sets ``provenance_field: null``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

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
from fluxa_integrity.recovery.provenance import content_hash_without, provenance_field
from fluxa_integrity.recovery.registry import recipe
from fluxa_integrity.store import open_store

UTC = timezone.utc
NAME = "reconstruct-from-logs"
COUNTER = "conversations.messageCount"
PROV = "_recovered"


def _ctx(db, policy=None, store=None):
    return RecipeContext(db=db, policy=policy or default_policy(), store=store, now=datetime.now(UTC))


def _hashes(coll) -> dict:
    return {d["_id"]: content_hash(d) for d in coll.find({})}


def _hashes_without_mark(coll) -> dict:
    """The ground-truth comparison: a rebuilt document without its provenance field."""
    return {d["_id"]: content_hash_without(d, PROV) for d in coll.find({})}


@pytest.fixture()
def lost(db, tmp_path):
    """A small dataset, its pre-fault copy, and lost messages (ground truth in the manifest)."""
    generate(db, GenerateOptions(users=30, seed=26, conversations_per_user=2, messages_per_conversation=4))
    pre = {c: _hashes(db[c]) for c in (m.MESSAGES, m.CONVERSATIONS)}
    pre_docs = {d["_id"]: d for d in db[m.MESSAGES].find({})}
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "lost-messages", 6, seed=26)
    return db, pre, pre_docs, inj


def _counter_findings(mongo_uri, db) -> list:
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(rules=[COUNTER], keep_ids=True))
    return sorted(i for f in report.findings for i in f.ids)


def test_plan_rebuilds_exactly_the_lost_messages_and_their_counters(mongo_uri, lost):
    db, pre, _, inj = lost
    lost_ids = inj.details["messages"]
    assert _counter_findings(mongo_uri, db) == sorted(inj.ids)  # what detection sees
    plan = recipe(NAME).build(_ctx(db))
    inserts = [c for c in plan.changes if c.op == "insert"]
    updates = [c for c in plan.changes if c.op == "update"]
    assert len(inserts) + len(updates) == len(plan.changes)
    assert sorted(c.id for c in inserts) == sorted(lost_ids)  # every lost id once, nothing else
    assert provenance_field(default_policy(), m.MESSAGES) == PROV
    for c in inserts:  # marked; without the mark byte for byte the lost message (parentId relinked, order kept)
        assert c.collection == m.MESSAGES and c.data_class == "chat_history"
        assert content_hash(c.after) != pre[m.MESSAGES][c.id]
        assert content_hash_without(c.after, PROV) == pre[m.MESSAGES][c.id]
        mark = c.after[PROV]
        assert set(mark) == {"from", "logId"} and mark["from"] == "logs" and isinstance(mark["logId"], ObjectId)
        assert list(c.after)[-1] == PROV and not any(k.startswith("$") or "." in k for k in mark)
        assert c.reason.startswith("rebuilt from log entry logs/")
    # the storage failure left the counters as they were: with the messages back they are right
    assert updates == [] and _hashes(db[m.CONVERSATIONS]) == pre[m.CONVERSATIONS]
    assert plan.verify == [COUNTER] and plan.unresolved == []
    # a re-plan is the same plan
    again = recipe(NAME).build(_ctx(db))
    assert [(c.op, c.id, content_hash(c.after)) for c in again.changes] == \
        [(c.op, c.id, content_hash(c.after)) for c in plan.changes]


def test_apply_verify_and_undo_under_an_incident(mongo_uri, lost):
    db, pre, _, inj = lost
    store = open_store()
    incidents = Incidents(store, default_policy())
    post = {c: _hashes(db[c]) for c in (m.MESSAGES, m.CONVERSATIONS)}
    plan = engine.make_plan(_ctx(db, store=store), NAME, {})
    iid = incidents.open("Messages missing", collections=[m.MESSAGES])["id"]
    res = engine.apply_plan(db, store, incidents, plan.id, iid, actor="responder")
    assert res.status == "applied"
    for coll in (m.MESSAGES, m.CONVERSATIONS):  # the affected documents equal the pre-fault copy
        assert _hashes_without_mark(db[coll]) == pre[coll]
    rebuilt = set(inj.details["messages"])
    assert {d["_id"] for d in db[m.MESSAGES].find({PROV: {"$exists": True}}, {"_id": 1})} == rebuilt
    ver = engine.verify_plan(db, store, incidents, default_policy(), plan.id)
    assert ver.closed and ver.rules == [COUNTER]
    assert _counter_findings(mongo_uri, db) == []
    # no rule of the policy flags the mark: every check on messages sees the rebuilt ones as clean
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(collections=[m.MESSAGES], keep_ids=True))
    assert not [(f.rule_id, i) for f in report.findings for i in f.ids if i in rebuilt]
    rows = [e for e in incidents.timeline(iid) if e["kind"] == "recovery_action"]
    assert [(r["data"]["action"], r["data"]["ref"]) for r in rows][0] == ("recipe", plan.id)
    assert rows[0]["data"]["counts"][m.MESSAGES]["written"] == len(inj.details["messages"])
    engine.undo_plan(db, store, incidents, plan.id, incident_id=iid)
    for coll in (m.MESSAGES, m.CONVERSATIONS):  # back to the post-fault state exactly
        assert _hashes(db[coll]) == post[coll]


def test_filters_keep_the_plan_to_a_user_a_conversation_or_a_window(lost):
    db, pre, pre_docs, inj = lost
    lost_docs = [pre_docs[i] for i in inj.details["messages"]]
    one = lost_docs[0]
    by_conv = recipe(NAME).build(_ctx(db), conversation=str(one["conversationId"]))
    want = sorted(d["_id"] for d in lost_docs if d["conversationId"] == one["conversationId"])
    assert sorted(c.id for c in by_conv.changes if c.op == "insert") == want
    # several conversations in one plan: exactly the union of each one's
    other = next(d for d in lost_docs if d["conversationId"] != one["conversationId"])
    both = recipe(NAME).build(_ctx(db), conversation=[str(one["conversationId"]), str(other["conversationId"])])
    assert sorted(c.id for c in both.changes if c.op == "insert") == sorted(
        d["_id"] for d in lost_docs if d["conversationId"] in (one["conversationId"], other["conversationId"]))
    by_user = recipe(NAME).build(_ctx(db), user=str(one["userId"]))
    assert sorted(c.id for c in by_user.changes if c.op == "insert") == \
        sorted(d["_id"] for d in lost_docs if d["userId"] == one["userId"])
    t = one["timestamp"]
    window = recipe(NAME).build(_ctx(db), since=t, until=t)
    assert [c.id for c in window.changes if c.op == "insert"] == [one["_id"]]
    nothing = recipe(NAME).build(_ctx(db), since=t + timedelta(days=3650))
    assert nothing.changes == [] and nothing.verify == []


def test_log_files_rebuild_what_the_log_collection_lost_and_ids_are_deterministic(lost, tmp_path):
    db, pre, pre_docs, inj = lost
    lost_ids = inj.details["messages"]
    entries = list(db[m.LOGS].find({"messageId": {"$in": lost_ids}}))
    db[m.LOGS].delete_many({"messageId": {"$in": lost_ids}})  # the log collection lost them too
    assert [c for c in recipe(NAME).build(_ctx(db)).changes if c.op == "insert"] == []
    path = tmp_path / "app.jsonl"
    lines = []
    for e in entries:  # plain JSON as an application writes it: hex ids, ISO dates
        lines.append(json.dumps({"userId": str(e["userId"]), "conversationId": str(e["conversationId"]),
                                 "messageId": str(e["messageId"]), "operation": e["operation"],
                                 "timestamp": e["timestamp"].isoformat().replace("+00:00", "Z"),
                                 "messageContent": e["messageContent"]}))
    lines.append(json.dumps({"operation": "login", "userId": str(entries[0]["userId"])}))  # not a message
    path.write_text("\n".join(lines) + "\n")
    plan = recipe(NAME).build(_ctx(db), log_file=[str(path)])
    inserts = [c for c in plan.changes if c.op == "insert"]
    assert sorted(c.id for c in inserts) == sorted(lost_ids)
    assert all(content_hash_without(c.after, PROV) == pre[m.MESSAGES][c.id] for c in inserts)
    assert all(c.reason.startswith("rebuilt from log entry app.jsonl:") for c in inserts)
    assert all(c.after[PROV]["from"] == "file" and c.after[PROV]["source"].startswith("app.jsonl:") for c in inserts)
    # without the message id the id is derived, the same on every plan, and content matching
    # still keeps messages that exist out of the plan
    stripped = tmp_path / "noid.jsonl"
    stripped.write_text("\n".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "messageId"})
                                  for line in lines) + "\n")
    a = recipe(NAME).build(_ctx(db), log_file=[str(stripped)])
    b = recipe(NAME).build(_ctx(db), log_file=[str(stripped)])
    ids = [c.id for c in a.changes if c.op == "insert"]
    assert ids == [c.id for c in b.changes if c.op == "insert"] and len(ids) == len(lost_ids)
    assert not set(ids) & set(lost_ids) and all(isinstance(i, ObjectId) for i in ids)
    stripped_docs = {c.id: c.after for c in a.changes if c.op == "insert"}
    one = next(iter(stripped_docs.values()))
    db[m.MESSAGES].insert_one(one)  # that message is back (under its derived id): never duplicated
    again = recipe(NAME).build(_ctx(db), log_file=[str(stripped)])
    assert one["_id"] not in [c.id for c in again.changes if c.op == "insert"]
    (bad := tmp_path / "bad.jsonl").write_text('{"operation": "message_sent"}\nnot json\n')
    with pytest.raises(FluxaError, match="bad.jsonl:2"):
        recipe(NAME).build(_ctx(db), log_file=[str(bad)])


def test_existing_messages_audited_deletions_counters_and_provenance(lost, tmp_path):
    db, pre, pre_docs, inj = lost
    lost_ids = inj.details["messages"]
    back = lost_ids[0]
    db[m.MESSAGES].insert_one(pre_docs[back])  # one lost message came back by itself
    # the app deleted others on purpose: audit record kept, counter decremented
    (deleted,) = inject(db, Manifest(tmp_path / "m.json", db.name), "deleted-messages", 3, seed=7)
    plan = recipe(NAME).build(_ctx(db))
    assert {c.id for c in plan.changes if c.op == "insert"} == set(lost_ids) - {back}
    assert len(plan.unresolved) == len(deleted.ids)
    for i in deleted.ids:
        (note,) = [u for u in plan.unresolved if str(i) in u]
        assert "deleted on purpose" in note and "undelete" in note
    forced = recipe(NAME).build(_ctx(db), audited=True)
    assert {c.id for c in forced.changes if c.op == "insert"} == (set(lost_ids) - {back}) | set(deleted.ids)
    ups = [c for c in forced.changes if c.op == "update"]  # the decremented counters go back up
    assert sorted(c.id for c in ups) == sorted(pre_docs[i]["conversationId"] for i in deleted.ids)
    for c in ups:
        assert c.collection == m.CONVERSATIONS and c.fields == ["messageCount"]
        assert content_hash(c.after) == pre[m.CONVERSATIONS][c.id]
        assert c.before == db[m.CONVERSATIONS].find_one({"_id": c.id})
    assert forced.verify == [COUNTER]
    # a policy that opts out of the mark (provenance_field: null) rebuilds the lost bytes exactly
    policy = default_policy().model_copy(deep=True)
    policy.collections[m.MESSAGES].reconstruct.provenance_field = None
    bare = recipe(NAME).build(_ctx(db, policy))
    for c in (c for c in bare.changes if c.op == "insert"):
        assert PROV not in c.after and content_hash(c.after) == pre[m.MESSAGES][c.id]


def test_a_collection_without_a_mapping_is_refused(db):
    with pytest.raises(FluxaError, match="no reconstruct mapping for collection 'users'"):
        recipe(NAME).build(_ctx(db), collection="users")


def test_the_command_line_plans_it(mongo_uri, lost, cli):
    db, pre, _, inj = lost
    res = cli("recover", "plan", NAME, "--uri", mongo_uri, "--db", db.name, "--json")
    assert res.code == 0, res.stderr
    out = res.json()
    assert out["counts"] == {m.MESSAGES: {"insert": len(inj.details["messages"])}}, out
    bad = cli("recover", "plan", NAME, "--uri", mongo_uri, "--db", db.name, "--collection", "users")
    assert bad.code == 2 and "no reconstruct mapping" in bad.stderr


@pytest.mark.parametrize("bad", ["$recovered", "meta.recovered", ""])
def test_a_provenance_field_must_be_a_plain_key(bad):
    from pydantic import ValidationError

    spec = default_policy().collections[m.MESSAGES].reconstruct.model_dump()
    with pytest.raises(ValidationError, match="plain top-level key"):
        type(default_policy().collections[m.MESSAGES].reconstruct)(**{**spec, "provenance_field": bad})
