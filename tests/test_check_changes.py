"""`check run --changes` (issue 13, item 5): reads from the server only what the oplog says was
written since the last such run, re-evaluates only the parts of its local copy that changed or
whose lookups went stale, and finds exactly what a full run finds - after the injector's faults
of every kind, after chat traffic (new messages that move their conversation's lastUpdated), and
after writes in a parent collection that change child verdicts without touching the children."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from fluxa_integrity.checks import mirror as mirror_mod
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.home import fluxa_home
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store


def full(report) -> list:
    return sorted((f.rule_id, f.variant, f.count, f.affected_users, str(f.first_doc_time), str(f.last_doc_time),
                   sorted(map(str, f.ids))) for f in report.findings)


def both(uri, db, policy, store):
    """A --changes run and a full run of the same state."""
    changed = run_checks(uri, db.name, policy, RunOptions(keep_ids=True, changes=True), store=store)
    whole = run_checks(uri, db.name, policy, RunOptions(keep_ids=True))
    return changed, whole


def chat_turns(db, n: int) -> None:
    """New messages the application's way: each answers its conversation's newest message, and
    the conversation's lastUpdated and messageCount follow."""
    convs = list(db.conversations.find({"messageCount": {"$gt": 0}}).sort("_id", 1).limit(n))
    for conv in convs:
        last = max(db.messages.find({"conversationId": conv["_id"]}), key=lambda m: (m["timestamp"], str(m["_id"])))
        when = conv["lastUpdated"] + timedelta(minutes=1)
        msg = {k: v for k, v in last.items() if k != "_id"}
        msg.update(timestamp=when, parentId=last["_id"])
        db.messages.insert_one(msg)
        db.conversations.update_one({"_id": conv["_id"]}, {"$set": {"lastUpdated": when}, "$inc": {"messageCount": 1}})


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(mirror_mod, "PART_DOCS", 300)  # a few thousand messages make a dozen parts


def test_changes_runs_find_what_full_runs_find_and_read_only_what_changed(mongo_uri, db, tmp_path, small_parts):
    policy = default_policy()
    store = open_store()
    generate(db, GenerateOptions(users=60, seed=11))
    first, whole = both(mongo_uri, db, policy, store)
    assert full(first) == full(whole)
    msgs = first.changes["messages"]
    assert msgs["parts"] > 3 and msgs["evaluated"] == msgs["parts"] and msgs["read"] == whole.docs["messages"]

    # 1. nothing written: nothing read, nothing evaluated again but the time-dependent collections
    again, whole = both(mongo_uri, db, policy, store)
    assert full(again) == full(whole)
    m = again.changes["messages"]
    assert m["read"] == 0 and m["evaluated"] == 0 and m["reused"] == m["parts"]

    # 2. chat traffic: a few parts change, and the parts holding earlier messages of the same
    # conversations stay as they were (their lastUpdated moved past every message they hold)
    chat_turns(db, 5)
    turn, whole = both(mongo_uri, db, policy, store)
    assert full(turn) == full(whole)
    m = turn.changes["messages"]
    assert m["read"] == 5 and 0 < m["evaluated"] <= 2, m
    assert turn.changes["conversations"]["read"] == 5

    # 3. every fault kind of the injector, each found as a full run finds it
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "all", 2, seed=3)
    faulty, whole = both(mongo_uri, db, policy, store)
    assert whole.findings and full(faulty) == full(whole)
    m = faulty.changes["messages"]
    assert m["read"] < whole.docs["messages"] / 4 and m["reused"] > 0, m

    # 4. writes to parents alone that change their children's verdicts: a conversation deleted
    # (its messages now dangle) and one whose createdAt moves after its messages
    held = [m["conversationId"] for m in db.messages.find({}, {"conversationId": 1}).sort("_id", 1)]
    victim, moved = (db.conversations.find_one({"_id": held[len(held) * k // 3]}) for k in (1, 2))
    assert victim["_id"] != moved["_id"]
    db.conversations.delete_one({"_id": victim["_id"]})
    db.conversations.update_one({"_id": moved["_id"]}, {"$set": {"createdAt": moved["lastUpdated"] + timedelta(days=1)}})
    parents, whole = both(mongo_uri, db, policy, store)
    assert full(parents) == full(whole)
    m = parents.changes["messages"]
    assert m["read"] == 0 and m["evaluated"] >= 1 and not set(m["reasons"]) & {"documents changed"}, m
    dangling = {f.rule_id for f in parents.findings if f.variant == "dangling"}
    assert "messages.conversationId.ref" in dangling or any(r.startswith("messages.") for r in dangling)


def test_changes_refuses_what_it_cannot_do(mongo_uri, db):
    policy = default_policy()
    generate(db, GenerateOptions(users=5, seed=2))
    with pytest.raises(FluxaError, match="--workers"):
        run_checks(mongo_uri, db.name, policy, RunOptions(changes=True, workers=2))
    with pytest.raises(FluxaError, match="pick one"):
        run_checks(mongo_uri, db.name, policy, RunOptions(changes=True, incremental=True))
    # one run at a time per local copy: a second one is refused, naming the holder
    with mirror_mod.copy_lock(fluxa_home(), mongo_uri, db.name):
        with pytest.raises(FluxaError, match="another --changes run") as err:
            run_checks(mongo_uri, db.name, policy, RunOptions(changes=True))
        assert f"pid {os.getpid()}" in err.value.message
    assert run_checks(mongo_uri, db.name, policy, RunOptions(changes=True)).changes["messages"]["read"] > 0


def test_the_cli_reports_what_it_read_and_closes_a_mended_finding(cli, db, mongo_uri):
    """From the command line: the first run copies the database, a write is read back alone, and
    - being exact - a --changes run closes a finding once it is mended, which --incremental never does."""
    target = ("--uri", mongo_uri, "--db", db.name)
    generate(db, GenerateOptions(users=20, seed=4))
    first = cli("check", "run", *target, "--changes", "--json")
    assert first.code == 0, first.stderr
    total = sum(c["read"] for c in first.json()["changes"].values())
    assert total == sum(first.json()["docs"][c] for c in first.json()["changes"])
    msg = db.messages.find_one()
    db.messages.update_one({"_id": msg["_id"]}, {"$set": {"sender": "alien"}})
    bad = cli("check", "run", *target, "--changes", "--json")
    out = bad.json()
    assert bad.code == 1 and out["changes"]["messages"]["read"] == 1
    assert {(f["rule_id"], f["variant"]) for f in out["findings"]} == {("messages.sender.enum", "enum")}
    db.messages.update_one({"_id": msg["_id"]}, {"$set": {"sender": msg["sender"]}})
    mended = cli("check", "run", *target, "--changes")
    assert mended.code == 0 and "1 closed" in mended.stderr and "1 document read from the server" in mended.stderr


def test_a_parent_collection_that_appears_sends_the_parts_back():
    """A child pass whose parent collection did not exist ran without its parent rules and
    recorded no lookups: only the fingerprint can tell its stored results are stale."""
    from fluxa_integrity.checks.changes_run import fingerprint
    from fluxa_integrity.checks.facts import Facts
    from fluxa_integrity.checks.scan import PassSpec

    policy = default_policy()
    rules = policy.collections["messages"].rules
    without = PassSpec(uri="", db="d", collection="messages", rules=rules, imports={("facts", "conversations"): None})
    present = PassSpec(uri="", db="d", collection="messages", rules=rules,
                       imports={("facts", "conversations"): Facts(["createdAt"])})
    assert fingerprint(without) != fingerprint(present)
    assert fingerprint(present) == fingerprint(PassSpec(uri="", db="d", collection="messages", rules=rules,
                                                        imports={("facts", "conversations"): Facts(["userId"])}))


def test_an_unreadable_copy_state_is_a_clear_error_not_a_traceback(mongo_uri, db):
    policy = default_policy()
    generate(db, GenerateOptions(users=5, seed=6))
    run_checks(mongo_uri, db.name, policy, RunOptions(changes=True))
    state = mirror_mod.mirror_root(fluxa_home(), mongo_uri, db.name) / mirror_mod.STATE
    state.write_text("{not json")
    with pytest.raises(FluxaError, match="state.json is unreadable") as err:
        run_checks(mongo_uri, db.name, policy, RunOptions(changes=True))
    assert "delete" in err.value.hint
