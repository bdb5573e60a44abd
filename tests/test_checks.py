"""Detection against ground truth: every injected fault found, clean data clean, findings with
history that survives restarts - on SQLite and PostgreSQL state stores."""

from __future__ import annotations

from bson.regex import Regex
from datetime import datetime, timedelta, timezone

import pytest

from fluxa_integrity.checks.history import baselines, list_findings, record_run
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.expectations import score, unexplained
from fluxa_integrity.fluxa.faults import KINDS, inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store

UTC = timezone.utc


@pytest.fixture(scope="module")
def policy():
    return default_policy()


def _run(mongo_uri, db, policy, **kw):
    return run_checks(mongo_uri, db.name, policy, RunOptions(keep_ids=True, **kw))


@pytest.mark.parametrize("users,per_kind", [(120, 4), (200, 10)])
def test_every_injected_fault_found_and_clean_data_is_clean(mongo_uri, db, policy, tmp_path, users, per_kind):
    generate(db, GenerateOptions(users=users, seed=users))
    clean = _run(mongo_uri, db, policy)
    assert clean.findings == [], [(f.rule_id, f.variant, f.samples[:2]) for f in clean.findings]
    assert clean.warnings == []
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "all", per_kind, seed=users)
    report = _run(mongo_uri, db, policy)
    scores = score(manifest, report.findings)
    assert set(scores) == set(KINDS)
    for kind, row in scores.items():
        assert row["recall"] == 1.0, f"{kind}: missed {row['missed']}"
    # nothing is reported that the injections did not cause, document by document: every id a
    # finding names is an injected id of that rule, one the injection names as related (the
    # originals of duplicated emails), or a side effect its kind causes by design
    assert unexplained(manifest, report.findings, db) == {}


def test_the_precision_check_catches_a_wrong_ground_truth_and_a_clean_document_flagged(
        mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=80, seed=9))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "duplicate-emails", 2, seed=9)   # related ids: the originals
    inject(db, manifest, "dates-out-of-order", 7, seed=9)  # one of each variant, side effects included
    report = _run(mongo_uri, db, policy)
    assert unexplained(manifest, report.findings, db) == {}
    # an injector that leaves an id out of its ground truth
    dup = next(i for i in manifest.injections if i.kind == "duplicate-emails")
    left_out, dup.ids = dup.ids[0], dup.ids[1:]
    assert unexplained(manifest, report.findings, db) == {("users.email.unique", "duplicate"): [left_out]}
    dup.ids = [left_out, *dup.ids]
    # a rule that flags a clean document: the count and the ids no longer agree with the truth
    clean_id = db.users.find_one({"_id": {"$nin": list(manifest.touched("users"))}})["_id"]
    f = next(f for f in report.findings if f.rule_id == "users.email.unique")
    f.ids, f.count = [*f.ids, clean_id], f.count + 1
    assert unexplained(manifest, report.findings, db) == {("users.email.unique", "duplicate"): [clean_id]}
    f.count += 1
    assert unexplained(manifest, report.findings, db)[("count", "users.email.unique")] == [f.count, f.count - 1]


def test_two_workers_find_the_same(mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=150, seed=8))
    inject(db, Manifest(tmp_path / "m.json", db.name), "all", 3, seed=2)
    one = _run(mongo_uri, db, policy, workers=1)
    two = _run(mongo_uri, db, policy, workers=2)
    key = lambda r: sorted((f.rule_id, f.variant, f.count, sorted(map(str, f.ids))) for f in r.findings)  # noqa: E731
    assert key(one) == key(two) and one.docs == two.docs


def test_findings_carry_evidence(mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=100, seed=4))
    inj = inject(db, Manifest(tmp_path / "m.json", db.name), "wrong-type-createdat", 3)[0]
    report = run_checks(mongo_uri, db.name, policy, RunOptions(max_samples=2))
    (f,) = [f for f in report.findings if f.rule_id == "users.createdAt.type"]
    assert f.count == 3 and len(f.samples) == 2 and f.affected_users == 3
    assert f.data_class == "user_accounts" and f.criticality == "critical"
    assert all(isinstance(s["value"], str) and s["_id"] in inj.ids for s in f.samples)
    assert f.first_doc_time <= f.last_doc_time


# -- the playbook's own queries, run by the server, agree with the scanner ----------------------

def test_playbook_queries_agree_with_the_scanner(mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=120, seed=6))
    t0 = datetime.now(UTC) - timedelta(seconds=5)
    inject(db, Manifest(tmp_path / "m.json", db.name), "all", 5, seed=6)
    found = {(f.rule_id, f.variant): set(f.ids) for f in _run(mongo_uri, db, policy).findings}

    def ids(cursor):
        return {d["_id"] for d in cursor}

    # orphaned references: parentId present but null
    assert ids(db.messages.find({"parentId": {"$exists": True, "$eq": None}})) == found[("messages.parentId.ref", "null")]
    # data types: createdAt not a date; lastLogin present and not a date
    assert ids(db.users.find({"createdAt": {"$not": {"$type": "date"}}})) == found[("users.createdAt.type", "type")]
    assert ids(db.users.find({"lastLogin": {"$exists": True, "$not": {"$type": "date"}}})) == \
        found[("users.lastLogin.type", "type")]
    # the playbook's email regex is looser than ours: everything it flags, we flag too
    assert ids(db.users.find({"email": {"$type": "string", "$not": Regex(r"^.+@.+\..+$")}})) <= \
        found[("users.email.format", "format")]
    # schema migration: the field the migration adds is missing
    assert ids(db.conversations.find({"messageCount": {"$exists": False}})) == \
        found[("conversations.migration", "missing:messageCount")]
    # data loss: soft deletes since the suspected time, and audit-log deletions
    assert ids(db.users.find({"deletedAt": {"$gt": t0}})) == found[("users.deletions", "soft_deleted")]
    audit = {d["documentId"] for d in db.auditLog.find({"operation": "delete", "collection": "messages",
                                                        "timestamp": {"$gt": t0}})}
    assert audit == found[("messages.deletions", "audit_delete")]
    # duplicate keys: the playbook's $group (on the lower-cased email, as our rule is case-insensitive)
    dup_groups = {}
    for u in db.users.find({}, {"email": 1}):
        dup_groups.setdefault(u["email"].casefold(), set()).add(u["_id"])
    assert set().union(*(g for g in dup_groups.values() if len(g) > 1)) == found[("users.email.unique", "duplicate")]
    # orphaned references (the $lookup example): messages whose conversation is gone
    conv_ids = ids(db.conversations.find({}, {"_id": 1}))
    assert {d["_id"] for d in db.messages.find({}, {"conversationId": 1}) if d["conversationId"] not in conv_ids} == \
        found[("messages.conversationId.ref", "dangling")]


# -- history ----------------------------------------------------------------------------------

def _history_roundtrip(url, mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=80, seed=2))
    inj = inject(db, Manifest(tmp_path / "m.json", db.name), "null-parent", 3)[0]
    store = open_store(url)
    first = record_run(store, run_checks(mongo_uri, db.name, policy))
    store.dispose()
    store = open_store(url)  # a restart: a new engine on the same database
    second = record_run(store, run_checks(mongo_uri, db.name, policy))
    assert first["opened"] == 1 and second["opened"] == 0 and second["seen_again"] == 1
    (f,) = [f for f in list_findings(store, db.name) if f.rule_id == "messages.parentId.ref"]
    assert len(f.sightings) == 2 and f.first_run_id == first["run_id"] and f.last_run_id == second["run_id"]
    assert f.count == 3 and f.status == "open"
    # repair the fault: restore the original parents; the next run closes the finding
    originals = inj.details["original_parentIds"]
    for _id, parent in zip(inj.ids, originals):
        db.messages.update_one({"_id": _id}, {"$set": {"parentId": parent}})
    third = record_run(store, run_checks(mongo_uri, db.name, policy))
    assert third["closed"] == 1
    assert list_findings(store, db.name) == []
    (closed,) = list_findings(store, db.name, "closed")
    assert closed.closed_at is not None and len(closed.sightings) == 2
    # a run restricted to other rules does not close or reopen anything
    assert baselines(store, db.name)[m.MESSAGES] == db.messages.count_documents({})
    store.dispose()


def test_history_on_sqlite(mongo_uri, db, policy, tmp_path):
    _history_roundtrip(f"sqlite:///{tmp_path / 'state.db'}", mongo_uri, db, policy, tmp_path)


def test_history_on_postgresql(postgres_url, mongo_uri, db, policy, tmp_path):
    from sqlalchemy import create_engine, text

    name = "t_" + db.name[2:]
    with create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    _history_roundtrip(postgres_url.rsplit("/", 1)[0] + "/" + name, mongo_uri, db, policy, tmp_path)


def test_count_drop_is_measured_against_the_last_run(mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=60, seed=1))
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    record_run(store, run_checks(mongo_uri, db.name, policy))
    n = db.analytics.count_documents({})
    doomed = [d["_id"] for d in db.analytics.find({}, {"_id": 1}).limit(n // 5 + 1)]
    db.analytics.delete_many({"_id": {"$in": doomed}})
    report = run_checks(mongo_uri, db.name, policy, baselines=baselines(store, db.name))
    (f,) = [f for f in report.findings if f.rule_id == "analytics.count_drop"]
    assert f.samples[0]["value"] == {"previous": n, "now": n - len(doomed)}


# -- bad input ----------------------------------------------------------------------------------

def test_unknown_collection_and_rule_are_errors(mongo_uri, db, policy):
    with pytest.raises(FluxaError, match="unknown collection 'nope'"):
        run_checks(mongo_uri, db.name, policy, RunOptions(collections=["nope"]))
    with pytest.raises(FluxaError, match="unknown rule"):
        run_checks(mongo_uri, db.name, policy, RunOptions(rules=["users.nope"]))


def test_rule_on_a_field_that_never_exists_warns(mongo_uri, db, tmp_path):
    from fluxa_integrity.policy import load_policy

    text = (default_policy_path().read_text()
            .replace("field: createdAt", "field: createdAtt", 1))
    p = tmp_path / "typo.yaml"
    p.write_text(text)
    report = run_checks(mongo_uri, db.name, load_policy(p), RunOptions(collections=["users"])) \
        if generate(db, GenerateOptions(users=20, seed=1)) else None
    assert any("createdAtt" in w and "typo" in w for w in report.warnings), report.warnings


def test_missing_collections_are_warnings_not_crashes(mongo_uri, db, policy):
    db.users.insert_one({"_id": 1, "email": "a@b.co", "createdAt": datetime.now(UTC)})
    report = run_checks(mongo_uri, db.name, policy)
    assert any("'messages' does not exist" in w for w in report.warnings)
    assert report.missing == ["conversations", "messages", "logs", "auditLog", "analytics"]


def default_policy_path():
    from importlib import resources

    return resources.files("fluxa_integrity.policy") / "default_policy.yaml"


def test_consistency_rules_timestamp_order_and_copied_field(mongo_uri, db, policy):
    """Two S3 rules no fault kind exercises: a message older than its conversation, and a
    message whose copied userId differs from its conversation's."""
    generate(db, GenerateOptions(users=40, seed=12))
    early, other = list(db.messages.find({}, {"conversationId": 1, "userId": 1}).limit(2))
    conv = db.conversations.find_one({"_id": early["conversationId"]})
    db.messages.update_one({"_id": early["_id"]}, {"$set": {"timestamp": conv["createdAt"] - timedelta(days=3)}})
    stranger = db.users.find_one({"_id": {"$ne": other["userId"]}})["_id"]
    db.messages.update_one({"_id": other["_id"]}, {"$set": {"userId": stranger}})
    found = {(f.rule_id, f.variant): f for f in _run(mongo_uri, db, policy).findings}
    order = found.pop(("messages.timestamp.order", "before_parent"))
    copied = found.pop(("messages.userId.copied", "mismatch"))
    assert found == {}
    assert order.ids == [early["_id"]] and order.samples[0]["parent"] == conv["_id"]
    assert order.samples[0]["parent_value"] == conv["createdAt"]
    assert copied.ids == [other["_id"]] and copied.samples[0]["value"] == stranger


# -- rules that must not miss values (issue 9, items 11 and 26) -------------------------------

def _violations(rule_doc: dict, doc: dict) -> list[str]:
    from pydantic import TypeAdapter

    from fluxa_integrity.checks.document_rules import compile_document_rule
    from fluxa_integrity.policy.rules import Rule

    rule = TypeAdapter(Rule).validate_python({"id": "t.rule", **rule_doc})
    return [variant for variant, _value, _msg in compile_document_rule(rule, "t")(doc)]


def test_required_fields_are_not_null_unless_the_policy_says_so():
    sender = {"kind": "field", "field": "sender", "required": True, "enum": ["user", "bot"]}
    assert _violations(sender, {"sender": None}) == ["null"]
    assert _violations(sender, {}) == ["missing"] and _violations(sender, {"sender": "bot"}) == []
    assert _violations({**sender, "nullable": True}, {"sender": None}) == []
    # an optional field's null is a value like any other: not one of the enum's, not of the types
    theme = {"kind": "field", "field": "theme", "enum": ["light", "dark"], "only_if_present": True}
    assert _violations(theme, {"theme": None}) == ["enum"]
    assert _violations({**theme, "enum": ["light", None]}, {"theme": None}) == []
    assert _violations({"kind": "field", "field": "d", "types": ["date"]}, {"d": None}) == ["type"]
    assert _violations({"kind": "field", "field": "d", "types": ["date", "null"]}, {"d": None}) == []
    assert _violations({"kind": "field", "field": "x"}, {"x": None}) == []  # no constraint at all
    assert _violations({"kind": "field", "field": "x", "nullable": False}, {"x": None}) == ["null"]


def test_formats_reject_control_and_invisible_characters():
    from fluxa_integrity.checks.formats import FORMATS
    from fluxa_integrity.policy.rules import Format
    from typing import get_args

    assert set(FORMATS) == set(get_args(Format))  # every format the policy accepts is implemented
    email = {"kind": "field", "field": "email", "format": "email"}
    assert _violations(email, {"email": "ada.lovelace@example.com"}) == []
    assert _violations(email, {"email": "ädä@exämple.de"}) == []  # non-ASCII letters are fine
    for bad in ("ada\x00@example.com", "ada@example.com\n", "ada\u200b@example.com", "ada@\texample.com",
                "ada@example.com\x7f", "ada@exa\u202emple.com", "ada@example..com", "ada@.example.com",
                "a" * 250 + "@b.co"):
        assert _violations(email, {"email": bad}) == ["format"], repr(bad)


def test_field_order_within_a_document():
    from datetime import datetime

    rule = {"kind": "field_order", "earlier": "createdAt", "later": "lastUpdated"}
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert _violations(rule, {"createdAt": t0, "lastUpdated": t1}) == []
    assert _violations(rule, {"createdAt": t0, "lastUpdated": t0}) == []
    assert _violations(rule, {"createdAt": t1, "lastUpdated": t0}) == ["out_of_order"]
    # a missing or mistyped date is the type rule's finding, not this one
    assert _violations(rule, {"createdAt": "2026-02-01", "lastUpdated": t0}) == []
    assert _violations(rule, {"lastUpdated": t0}) == []


def test_detection_imports_nothing_of_fluxa():
    """checks/ is app-agnostic: no import of fluxa_integrity.fluxa (the email format lives in
    checks/formats.py, the values in the policy)."""
    import ast
    from pathlib import Path

    import fluxa_integrity.checks as checks

    for path in Path(checks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert not module.startswith("..fluxa") and "fluxa_integrity.fluxa" not in module, (path, module)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("fluxa_integrity.fluxa") for a in node.names), path


def test_a_run_that_evaluates_no_rule_is_an_error(mongo_uri, client, policy):
    with pytest.raises(FluxaError, match="has none of the collections the policy checks") as err:
        run_checks(mongo_uri, "nosuchdb_fluxa_runner", policy)
    assert "users" in err.value.message and "analytics" in err.value.message and err.value.hint
    assert "nosuchdb_fluxa_runner" not in client.list_database_names()


def test_a_reply_is_not_older_than_the_message_it_answers(mongo_uri, db, policy):
    """A parent rule on its own collection (checks/self_order.py), decided at the end of the pass:
    the parent may come after its child in read order, or not exist at all."""
    from bson import ObjectId

    t = datetime(2026, 3, 1, tzinfo=UTC)
    conv, user = ObjectId(), ObjectId()
    db.users.insert_one({"_id": user, "email": "a@b.co", "name": "A", "createdAt": t - timedelta(days=9),
                         "lastUpdated": t - timedelta(days=9), "preferences": {"theme": "dark"}})
    db.conversations.insert_one({"_id": conv, "userId": user, "title": "x", "createdAt": t - timedelta(days=1),
                                 "lastUpdated": t + timedelta(days=1), "messageCount": 4, "schemaVersion": 2})
    first, late_parent, early_reply, ghost_reply = (ObjectId() for _ in range(4))
    msg = lambda _id, ts, parent=None: {"_id": _id, "conversationId": conv, "userId": user, "text": "t",  # noqa: E731
                                        "sender": "user", "timestamp": ts, **({"parentId": parent} if parent else {})}
    # the reply is inserted (and read) before the message it answers, and is a minute older than it
    db.messages.insert_many([msg(early_reply, t, late_parent), msg(first, t - timedelta(hours=1)),
                             msg(late_parent, t + timedelta(minutes=1), first), msg(ghost_reply, t, ObjectId())])
    found = {(f.rule_id, f.variant): f for f in _run(mongo_uri, db, policy, collections=["messages"]).findings}
    order = found.pop(("messages.timestamp.after_parent", "before_parent"))
    assert order.ids == [early_reply] and order.samples[0]["parent"] == late_parent
    assert order.samples[0]["parent_value"] == t + timedelta(minutes=1) and order.affected_users == 1
    found.pop(("messages.corruption", "index_missing"))  # no indexes in this hand-made database
    assert set(found) == {("messages.parentId.ref", "dangling")}  # the unknown parent: the reference's finding
