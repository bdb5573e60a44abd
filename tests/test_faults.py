"""Each fault kind breaks exactly what its manifest entry says, checked by independent queries."""

from __future__ import annotations

import pytest
from bson import json_util

from fluxa_integrity.checks.formats import is_email
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import KINDS, inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest


@pytest.fixture()
def dataset(db, tmp_path):
    generate(db, GenerateOptions(users=120, seed=3))
    return db, Manifest(tmp_path / "manifest.json", db.name)


def _docs(db, coll, ids):
    return {d["_id"]: d for d in db[coll].find({"_id": {"$in": list(ids)}})}


def check_orphan_messages(db, inj):
    msgs = _docs(db, m.MESSAGES, inj.ids)
    assert len(msgs) == len(inj.ids)
    conv_ids = {d["conversationId"] for d in msgs.values()}
    assert db[m.CONVERSATIONS].count_documents({"_id": {"$in": list(conv_ids)}}) == 0


def check_orphan_conversations(db, inj):
    convs = _docs(db, m.CONVERSATIONS, inj.ids)
    assert len(convs) == len(inj.ids)
    assert db[m.USERS].count_documents({"_id": {"$in": [c["userId"] for c in convs.values()]}}) == 0


def check_null_parent(db, inj):
    msgs = _docs(db, m.MESSAGES, inj.ids)
    assert len(msgs) == len(inj.ids)
    assert all("parentId" in d and d["parentId"] is None for d in msgs.values())


def check_duplicate_emails(db, inj):
    copies, originals = _docs(db, m.USERS, inj.ids), _docs(db, m.USERS, inj.related)
    for copy_id, orig_id, variant in zip(inj.ids, inj.related, inj.variants):
        a, b = copies[copy_id]["email"], originals[orig_id]["email"]
        assert a.lower() == b.lower()
        assert (a == b) == (variant == "exact")


def check_wrong_type_createdat(db, inj):
    assert all(isinstance(d["createdAt"], str) for d in _docs(db, m.USERS, inj.ids).values())


def check_wrong_type_lastlogin(db, inj):
    docs = _docs(db, m.USERS, inj.ids).values()
    assert all(isinstance(d["lastLogin"], int) and not isinstance(d["lastLogin"], bool) for d in docs)


def check_malformed_email(db, inj):
    docs = _docs(db, m.USERS, inj.ids)
    assert len(docs) == len(inj.ids)
    assert all(isinstance(d["email"], str) and not is_email(d["email"]) for d in docs.values())


def check_half_migration(db, inj):
    docs = _docs(db, m.CONVERSATIONS, inj.ids)
    for i, v in zip(inj.ids, inj.variants):
        assert m.CONVERSATION_MIGRATED_FIELD not in docs[i]
        expected = m.CONVERSATION_SCHEMA_VERSION - (1 if v == "not-migrated" else 0)
        assert docs[i]["schemaVersion"] == expected


def check_broken_counter(db, inj):
    for cid, conv in _docs(db, m.CONVERSATIONS, inj.ids).items():
        assert conv["messageCount"] != db[m.MESSAGES].count_documents({"conversationId": cid})


def check_deleted_messages(db, inj):
    assert inj.ids and db[m.MESSAGES].count_documents({"_id": {"$in": inj.ids}}) == 0
    audits = list(db[m.AUDIT_LOG].find({"operation": "delete", "collection": m.MESSAGES,
                                       "documentId": {"$in": inj.ids}}))
    assert sorted(a["documentId"] for a in audits) == sorted(inj.ids)
    assert all(a["before"]["_id"] == a["documentId"] for a in audits)
    for cid in {a["before"]["conversationId"] for a in audits}:  # the app kept counters right
        conv = db[m.CONVERSATIONS].find_one({"_id": cid})
        assert conv["messageCount"] == db[m.MESSAGES].count_documents({"conversationId": cid})


def check_lost_messages(db, inj):
    lost = inj.details["messages"]
    assert inj.ids and len(lost) >= len(inj.ids)
    assert db[m.MESSAGES].count_documents({"_id": {"$in": lost}}) == 0
    assert db[m.AUDIT_LOG].count_documents({"documentId": {"$in": lost}}) == 0  # no trail
    assert db[m.LOGS].count_documents({"messageId": {"$in": lost}}) == len(lost)  # rebuildable
    for cid in inj.ids:  # the counter still counts them
        conv = db[m.CONVERSATIONS].find_one({"_id": cid})
        assert conv["messageCount"] > db[m.MESSAGES].count_documents({"conversationId": cid})


def check_soft_deleted_users(db, inj):
    assert db[m.USERS].count_documents({"_id": {"$in": inj.ids}, "deletedAt": {"$gte": inj.time}}) == len(inj.ids)


def check_corrupt_preferences(db, inj):
    docs = _docs(db, m.USERS, inj.ids)
    for i, v in zip(inj.ids, inj.variants):
        p = docs[i]["preferences"]
        if v == "invalid-theme":
            assert p["theme"] not in m.THEMES
        elif v == "non-boolean-notifications":
            assert not isinstance(p["notifications"], bool)
        else:
            assert set(p) - set(m.PREFERENCE_KEYS)


def check_sync_drift(db, inj):
    sec = db.client[m.secondary_db_name(db.name)]
    last_sync = sec[m.SYNC_STATE].find_one({"_id": m.USERS})["lastSyncAt"]
    for i, v in zip(inj.ids, inj.variants):
        in_primary = db[m.USERS].find_one({"_id": i})
        in_secondary = sec[m.USERS].find_one({"_id": i})
        if v == "missing-in-secondary":
            assert in_primary and in_secondary is None
        elif v == "extra-in-secondary":
            assert in_primary is None and in_secondary
        else:
            assert in_primary["lastUpdated"] > last_sync and in_secondary


def check_null_required(db, inj):
    fld = {m.MESSAGES: "sender", m.USERS: "name", m.CONVERSATIONS: "title"}[inj.collection]
    docs = _docs(db, inj.collection, inj.ids)
    assert len(docs) == len(inj.ids) and all(fld in d and d[fld] is None for d in docs.values())


def check_wrong_type_fields(db, inj):
    docs = _docs(db, inj.collection, inj.ids)
    assert len(docs) == len(inj.ids)
    for i, v in zip(inj.ids, inj.variants):
        d = docs[i]
        if v == "title-number":
            assert isinstance(d["title"], int)
        else:
            assert {"user-name-missing": "name", "text-missing": "text", "event-missing": "event"}[v] not in d


def check_out_of_range(db, inj):
    docs = _docs(db, m.USERS, inj.ids)
    for i, v in zip(inj.ids, inj.variants):
        p = docs[i]["preferences"]
        if v == "unknown-language":
            assert p["language"] not in m.LANGUAGES
        else:
            assert not 12 <= p["fontSize"] <= 20


def check_control_char_email(db, inj):
    docs = _docs(db, m.USERS, inj.ids)
    for d in docs.values():
        e = d["email"]
        # invisible to the eye and to the playbook's regex (a trailing newline aside), not an address
        assert not is_email(e) and is_email("".join(ch for ch in e if ch.isprintable()))
    assert len(docs) == len(inj.ids)


def check_dates_out_of_order(db, inj):
    docs = _docs(db, inj.collection, inj.ids)
    assert len(docs) == len(inj.ids)
    for i, v in zip(inj.ids, inj.variants):
        d = docs[i]
        if v == "login-before-signup":
            assert d["lastLogin"] < d["createdAt"]
        elif v == "updated-before-signup":
            assert d["lastUpdated"] < d["createdAt"]
        elif v == "conversation-before-user":
            assert d["createdAt"] < db[m.USERS].find_one({"_id": d["userId"]})["createdAt"]
        elif v == "updated-before-created":
            assert d["lastUpdated"] < d["createdAt"]
        elif v == "message-after-conversation-update":
            assert d["timestamp"] > db[m.CONVERSATIONS].find_one({"_id": d["conversationId"]})["lastUpdated"]
        elif v == "log-before-signup":
            assert d["timestamp"] < db[m.USERS].find_one({"_id": d["userId"]})["createdAt"]
        else:
            assert v == "reply-before-parent"
            parent = db[m.MESSAGES].find_one({"_id": d["parentId"]})
            assert d["timestamp"] < parent["timestamp"]
            assert d["timestamp"] >= db[m.CONVERSATIONS].find_one({"_id": d["conversationId"]})["createdAt"]


def check_activity_after_deletion(db, inj):
    fld = {m.USERS: "lastLogin", m.CONVERSATIONS: "lastUpdated", m.MESSAGES: "timestamp", m.LOGS: "timestamp",
           m.ANALYTICS: "timestamp"}[inj.collection]
    docs = _docs(db, inj.collection, inj.ids)
    assert len(docs) == len(inj.ids)
    for d in docs.values():
        owner = db[m.USERS].find_one({"_id": d["_id"] if inj.collection == m.USERS else d["userId"]})
        assert owner["deletedAt"] < d[fld]


CHECKS = {name: globals()["check_" + name.replace("-", "_")] for name in KINDS}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_matches_its_manifest(dataset, kind):
    db, manifest = dataset
    before_other = db[m.ANALYTICS].count_documents({})
    count = 7 if kind == "dates-out-of-order" else 4  # one of each variant
    done = inject(db, manifest, kind, count, seed=11)
    # one injection per collection a kind breaks; `count` faults, or for activity-after-deletion
    # `count` users deleted and every document of theirs dated after the deletion
    assert done and {i.kind for i in done} == {kind} and len({i.collection for i in done}) == len(done)
    n = sum(len(i.ids) for i in done)
    assert n >= count if kind == "activity-after-deletion" else n == count
    reloaded = Manifest(manifest.path, db.name)  # what is on disk is what happened
    assert [i.as_doc() for i in reloaded.injections] == [i.as_doc() for i in done]
    for inj in reloaded.injections:
        CHECKS[kind](db, inj)
    assert db[m.ANALYTICS].count_documents({}) == before_other  # nothing else touched


def test_all_kinds_never_share_a_target(dataset):
    db, manifest = dataset
    done = inject(db, manifest, "all", 3, seed=5)
    assert {i.kind for i in done} == set(KINDS)
    seen: dict = {}
    for inj in done:
        for _id in inj.ids + inj.related:
            key = (inj.collection, _id)
            assert key not in seen, f"{inj.kind} reused a target of {seen.get(key)}"
            seen[key] = inj.kind
    for inj in Manifest(manifest.path, db.name).injections:  # every check still holds together
        CHECKS[inj.kind](db, inj)


def test_manifest_is_extended_json(dataset):
    db, manifest = dataset
    inject(db, manifest, "null-parent", 2)
    doc = json_util.loads(manifest.path.read_text())
    assert doc["database"] == db.name
    assert db[m.MESSAGES].count_documents({"_id": {"$in": doc["injections"][0]["ids"]}}) == 2


def test_bad_requests_are_clear_errors(dataset):
    db, manifest = dataset
    with pytest.raises(FluxaError, match="unknown fault kind 'nope'"):
        inject(db, manifest, "nope", 1)
    with pytest.raises(FluxaError, match="untouched documents in 'users'"):
        inject(db, manifest, "soft-deleted-users", 10_000)
    assert manifest.injections == []  # nothing recorded for a refused request
    empty = db.client[db.name + "_empty"]
    with pytest.raises(FluxaError, match="no Fluxa data"):
        inject(empty, manifest, "null-parent", 1)


def test_soft_deleted_users_are_deleted_after_their_newest_document_even_in_a_timeline_past_today(
        db, mongo_uri, tmp_path):
    # review 1, item 7: deletedAt was the real date, so users whose data runs past it (a dataset
    # that started 100 days ago spans 300 days) tripped every *.before_user_deletion rule
    from datetime import datetime, timedelta, timezone

    from fluxa_integrity.checks.runner import RunOptions, run_checks
    from fluxa_integrity.fluxa.expectations import score, unexplained
    from fluxa_integrity.policy import default_policy

    generate(db, GenerateOptions(users=60, seed=5, start=datetime.now(timezone.utc) - timedelta(days=100)))
    manifest = Manifest(tmp_path / "m.json", db.name)
    (inj,) = inject(db, manifest, "soft-deleted-users", 12, seed=5)
    report = run_checks(mongo_uri, db.name, default_policy(), RunOptions(keep_ids=True))
    assert unexplained(manifest, report.findings, db) == {}, sorted({k for k in unexplained(
        manifest, report.findings, db)})
    assert score(manifest, report.findings)["soft-deleted-users"]["recall"] == 1.0
    assert {f.rule_id for f in report.findings} == {"users.deletions"}
    check_soft_deleted_users(db, inj)
