"""Continuous validation (S1, issue 11 deliverable 2): the oplog watcher against fault ground truth.

Faults are injected by the fault injector while a watcher runs; every injected document of a kind
a single write shows (field, field-order, migration and reference rules) must become a finding of
the rule the expectations table names, within a bound, and nothing else may be named; a check
run over the same rules then finds the same fingerprints (no new finding). Restarts resume from
the stored position, a trimmed-away position is a reported gap, and the serve job runs it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
from bson import ObjectId, json_util

from fluxa_integrity.checks.history import record_run
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.expectations import EXPECTED
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.mongo.devserver import DevServer, free_port
from fluxa_integrity.policy import load_policy
from fluxa_integrity.service.validation import WatchOptions, Watcher, load_position, watch
from fluxa_integrity.store import open_store
from fluxa_integrity.store.models import CheckRun, Finding, Sighting
from waiting import DEADLINE_S, wait_until

#: Fault kinds one write shows: each injected document breaks a field, field-order, migration or
#: reference rule by itself (counters, duplicates, deletions and parent dates need other documents).
WRITE_KINDS = ["orphan-messages", "orphan-conversations", "null-parent", "wrong-type-createdat",
               "wrong-type-lastlogin", "malformed-email", "half-migration", "corrupt-preferences",
               "null-required", "wrong-type-fields", "out-of-range", "control-char-email"]
#: Write to finding, on a loaded 2-core machine: a bound on a hang, not the expected latency
#: (benchmarks/bench_validation_latency.py measures that).
LATENCY_BOUND_S = 30.0


def ej(value):
    return json_util.loads(json_util.dumps(value))


def key(value) -> str:
    return json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS)


@pytest.fixture()
def policy():
    return load_policy(None)


def _generated(db):
    generate(db, GenerateOptions(users=20, secondary=False, conversations_per_user=3, messages_per_conversation=4),
             drop=True)
    return db


@pytest.fixture()
def fluxa_db(db):
    return _generated(db)


@pytest.fixture()
def quiet(mongo_uri, client, tmp_path, ferretdb_binary):
    """(uri, Fluxa database) on a server whose oplog holds only this test's writes. On the dev
    server a FerretDB of the test's own: the watcher's every poll there is a full read of the
    oplog, and a suite run leaves the session server's at its 20k-entry cap - seconds a poll on a
    loaded machine, near the latency bound. Against FLUXA_TEST_MONGODB_URI (change streams, no
    oplog reads) the session's server."""
    if os.environ.get("FLUXA_TEST_MONGODB_URI"):
        db = client[f"t_{uuid.uuid4().hex[:10]}"]
        yield mongo_uri, _generated(db)
        client.drop_database(db.name)
        return
    server = DevServer(tmp_path / "own-devdb")
    uri = server.start(port=free_port(), progress=lambda msg: None).uri
    c = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        yield uri, _generated(c["quiet"])
    finally:
        c.close()
        server.stop()


@contextmanager
def watching(uri: str, db_name: str, policy, **opts):
    """A watcher in a thread: yields once it is ready (its position and guard are set), stops on exit."""
    stop, ready, box, lines = threading.Event(), threading.Event(), {}, []

    def run():
        try:
            box["report"] = watch(uri, db_name, policy, open_store(), WatchOptions(poll_ms=50, **opts), stop,
                                  lines.append, ready.set)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            box["error"] = exc
            ready.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(DEADLINE_S), "the watcher never became ready"
    if "error" in box:
        raise box["error"]
    box["log"] = lines
    try:
        yield box
    finally:
        stop.set()
        t.join(DEADLINE_S)
        if "error" in box:
            raise box["error"]


def findings(store, db_name) -> dict[tuple[str, str], Finding]:
    with store.session() as s:
        return {(f.rule_id, f.variant): f for f in s.query(Finding).filter(Finding.database == db_name)}


def sample_ids(f: Finding) -> set[str]:
    return {key(s["_id"]) for s in f.samples or []}


def expected_by_finding(manifest: Manifest) -> dict[tuple[str, str | None], set[str]]:
    """(rule id, accepted variants) -> the injected ids, from the manifest and the expectations table."""
    out: dict = {}
    for inj in manifest.injections:
        for i, _id in enumerate(inj.ids):
            variant = inj.variants[i] if inj.variants else None
            rule_id, variants = EXPECTED[inj.kind].get(variant) or EXPECTED[inj.kind][None]
            out.setdefault((rule_id, frozenset(variants)), set()).add(key(_id))
    return out


def test_each_bad_write_becomes_its_rules_finding_within_seconds(quiet, policy, tmp_path):
    mongo_uri, fluxa_db = quiet
    store = open_store()
    manifest = Manifest(tmp_path / "manifest.json", fluxa_db.name)
    with watching(mongo_uri, fluxa_db.name, policy) as w:
        seconds = {}
        for kind in WRITE_KINDS:
            inject(fluxa_db, manifest, kind, 3, seed=7)
            written = time.monotonic()
            inj = [i for i in manifest.injections if i.kind == kind]

            def seen() -> bool:
                found = findings(store, fluxa_db.name)
                for i in inj:
                    for n, _id in enumerate(i.ids):
                        variant = i.variants[n] if i.variants else None
                        rule_id, variants = EXPECTED[kind].get(variant) or EXPECTED[kind][None]
                        if not any(key(_id) in sample_ids(f) for (r, v), f in found.items()
                                   if r == rule_id and v in variants):
                            return False
                return True

            wait_until(seen, f"every {kind} write to become its finding", timeout=LATENCY_BOUND_S, poll=0.05)
            seconds[kind] = time.monotonic() - written
    report = w["report"]
    assert report.mode == "oplog" or report.mode == "change_stream"
    assert report.violations >= 3 * len(WRITE_KINDS) and not report.gaps
    assert report.latency_summary()["p95"] <= LATENCY_BOUND_S

    # precision: every document a watcher finding names is an injected one of that rule
    expected = expected_by_finding(manifest)
    found = findings(store, fluxa_db.name)
    for (rule_id, variant), f in found.items():
        allowed = set().union(*[ids for (r, vs), ids in expected.items() if r == rule_id and variant in vs])
        assert sample_ids(f) <= allowed, f"{rule_id} ({variant}) names documents no fault touched"
        assert f.status == "open" and f.count == len(sample_ids(f))
    # the same fingerprints as a check run: a run of those rules opens nothing new
    rules = sorted({r for r, _ in expected})
    summary = record_run(store, run_checks(mongo_uri, fluxa_db.name, policy, RunOptions(rules=rules)))
    assert summary["opened"] == 0 and summary["reopened"] == 0
    with store.session() as s:
        run = s.get(CheckRun, report.run_id)
        assert run.status == "continuous" and run.stats["violations"] == report.violations


def test_a_restart_resumes_after_its_position_and_counts_nothing_twice(mongo_uri, fluxa_db, policy):
    store = open_store()
    name = f"validation:{fluxa_db.name}"
    conv = fluxa_db[m.CONVERSATIONS].find_one()
    first = {"_id": ObjectId(), "conversationId": ObjectId(), "userId": conv["userId"], "text": "lost",
             "sender": "user", "timestamp": datetime.now(timezone.utc)}
    with watching(mongo_uri, fluxa_db.name, policy):
        fluxa_db[m.MESSAGES].insert_one(first)
        wait_until(lambda: key(first["_id"]) in sample_ids(findings(store, fluxa_db.name).get(
            ("messages.conversationId.ref", "dangling")) or Finding()), "the dangling message's finding")
    stopped_at, _ = load_position(store, name)
    assert stopped_at is not None

    # written while no watcher runs: the next one sees them, and not the first write again
    user = fluxa_db[m.USERS].find_one()
    fluxa_db[m.USERS].update_one({"_id": user["_id"]}, {"$set": {"email": "no-at-sign"}})
    with watching(mongo_uri, fluxa_db.name, policy, once=True) as w:
        pass
    report = w["report"]
    assert report.violations == 1 and report.last > stopped_at
    found = findings(store, fluxa_db.name)
    assert key(user["_id"]) in sample_ids(found[("users.email.format", "format")])
    dangling = found[("messages.conversationId.ref", "dangling")]
    assert dangling.count == 1
    with store.session() as s:
        assert s.query(Sighting).filter(Sighting.finding_id == dangling.id).count() == 1


def test_updates_are_evaluated_as_whole_documents(mongo_uri, fluxa_db, policy):
    """FerretDB's `u` carries the whole document; a replacement is one; MongoDB's $v:2 diff is
    fetched by _id - all three give the document as it is now."""
    user = fluxa_db[m.USERS].find_one()
    w = Watcher(pymongo.MongoClient(mongo_uri, tz_aware=True), fluxa_db.name, policy, open_store())
    whole = {**user, "email": "x@y.z"}
    assert w._updated_document(m.USERS, {"o": {"$v": 1, "$set": whole}, "o2": {"_id": user["_id"]}}) == whole
    assert w._updated_document(m.USERS, {"o": whole, "o2": {"_id": user["_id"]}}) == whole
    fetched = w._updated_document(m.USERS, {"o": {"$v": 2, "diff": {"u": {"email": user["email"]}}},
                                            "o2": {"_id": user["_id"]}})
    assert fetched == fluxa_db[m.USERS].find_one({"_id": user["_id"]})


@pytest.mark.skipif(bool(__import__("os").environ.get("FLUXA_TEST_MONGODB_URI")), reason="needs the project's own FerretDB")
def test_a_position_trimmed_away_while_stopped_is_a_reported_gap(tmp_path, ferretdb_binary, policy):
    from fluxa_integrity.mongo.devserver import DevServer, free_port
    from fluxa_integrity.mongo.oplog_guard import GUARDS
    from fluxa_integrity.service.jobs import find_job, job_definitions
    from fluxa_integrity.service.tasks import TASKS, TaskContext

    server = DevServer(tmp_path / "gap-devdb")
    st = server.start(port=free_port(), oplog_entries=50, oplog_trim_s=3600, progress=lambda msg: None)
    try:
        c = pymongo.MongoClient(st.uri, tz_aware=True)
        app = c["app"]
        generate(app, GenerateOptions(users=3, secondary=False, conversations_per_user=1,
                                      messages_per_conversation=2), drop=True)
        store = open_store()
        with watching(st.uri, "app", policy):
            app[m.USERS].update_one({}, {"$set": {"name": "still fine"}})
            wrote = next(c.local["oplog.rs"].find({"ns": "app.users"}).sort("$natural", -1).limit(1))["ts"]
            wait_until(lambda: (p := load_position(store, "validation:app")[0]) is not None and p >= wrote,
                       "the watcher to pass the write")
        # stopped; its guard lapses (stale by an hour) and more than the cap is written
        c.local[GUARDS].update_many({"_id": {"$ne": "__settings__"}},
                                    {"$set": {"at": datetime.now(timezone.utc) - timedelta(hours=1)}})
        lost = app[m.USERS].find_one()
        app[m.USERS].update_one({"_id": lost["_id"]}, {"$set": {"email": "lost-in-the-gap"}})
        app.filler.insert_many([{"_id": i} for i in range(200)])
        before = server.log_file.read_text().count("no guard holds")
        server.trim_oplog_now()
        wait_until(lambda: server.log_file.read_text().count("no guard holds") > before, "the trim to the cap")
        app[m.USERS].update_one({"_id": lost["_id"]}, {"$set": {"email": "bad-after-the-gap"}})

        ctx = TaskContext(st.uri, "app", policy, store)
        job = find_job(job_definitions(policy), "validate-oplog")
        result = TASKS["validation"](ctx, job, once=True)
        assert result.outcome == "failed" and "GAP after" in result.error
        gap = result.details["gaps"][0]
        assert gap["reason"].startswith("the live oplog was trimmed past the validation position")
        assert result.details["violations"] == 1  # the write after the gap, evaluated
    finally:
        server.stop()
