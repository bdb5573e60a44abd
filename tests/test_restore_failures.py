"""Restore commands fail explicitly: the server killed mid-promotion and mid-undo (exit 2, rerun
resumes), diffs that refuse a missing side, ids that must exist, readable values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pymongo
import pytest
from bson import ObjectId

from backup_helpers import hashes, make_data
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.cli.render import literal as readable
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.restore.verification import verify_backup
from fluxa_integrity.recovery.plans_store import get_row, list_rows
from fluxa_integrity.store import open_store

# Documents to promote. FerretDB 1.24 scans the collection for every replace by _id, so 400 are
# seconds of writes; the test freezes the command (SIGSTOP) before killing the server anyway.
N = 400
GONE = 40  # of them deleted from live since the backup: the promotion inserts them back
EPOCH = datetime(2026, 5, 1, tzinfo=timezone.utc)


def _start(args: list[str], fluxa_home) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fluxa_integrity", *args], text=True,
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _kill_server_under(proc: subprocess.Popen, server, still_midway) -> dict:
    """Freeze the command, prove it is mid-way, kill the server, let the command run on into the
    dead server; return its JSON answer."""
    proc.send_signal(signal.SIGSTOP)
    try:
        assert proc.poll() is None and still_midway(), "the command finished before the kill could land"
        server.kill()
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err, err
    return json.loads(out)


def _status(pid: str) -> str:
    return get_row(open_store(), pid)["status"]


def test_server_killed_mid_promotion_and_mid_undo_then_reruns_complete(private_server, fluxa_home, cli):
    uri = private_server.status().uri
    c = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    docs = [{"_id": i, "name": f"user {i}", "joined": EPOCH, "n": i} for i in range(N)]
    c.app_restored.users.insert_many(docs)
    c.app.users.insert_many([{**d, "name": "tampered"} for d in docs[GONE:]])  # (update_many is slow on FerretDB)
    c.app.users.insert_many([{"_id": N + i, "name": "created after the backup"} for i in range(10)])
    c.expected.users.insert_many(docs + [{"_id": N + i, "name": "created after the backup"} for i in range(10)])
    expected, before = hashes(c.expected), hashes(c.app)
    c.close()
    watch = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    incidents = Incidents.from_environment()
    inc = incidents.open("users tampered", collections=["users"])["id"]
    promote = ["restore", "promote", "--from-db", "app_restored", "--collections", "users", "--db", "app",
               "--uri", uri, "--incident", str(inc), "--apply", "--json"]

    # 1. the server dies mid-promotion: exit 2 saying how to resume, the promotion is failed
    proc = _start(promote, fluxa_home)
    restored = lambda: watch.app.users.count_documents({"name": {"$regex": "^user "}})  # noqa: E731
    _wait_for(lambda: restored() > 0, proc, "the promotion started writing")
    err = _kill_server_under(proc, private_server, lambda: restored() < N - GONE)
    assert "interrupted" in err["error"] and "rerun the same command to resume" in err["hint"]
    [row] = list_rows(open_store())  # the promotion is a recovery plan
    pid = row["id"]
    assert row["recipe"] == "restore-and-promote" and _status(pid) == "failed"

    # 2. the server is back: the same command resumes THAT promotion and finishes it exactly
    uri = private_server.start(progress=lambda m: None).uri
    watch = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    again = cli(*promote[:promote.index("--uri") + 1], uri, *promote[promote.index("--uri") + 2:])
    assert again.code == 0, again.stderr
    assert again.json()["promotion_id"] == pid and again.json()["resumed"] is True and again.json()["status"] == "applied"
    assert hashes(watch.app) == expected  # every document promoted once: nothing lost, no duplicates
    assert _status(pid) == "applied"

    # 3. the server dies mid-undo: exit 2, rerun resumes, the live data is back byte for byte
    undo = ["restore", "undo", pid, "--incident", str(inc), "--uri", uri, "--json"]
    proc = _start(undo, fluxa_home)
    put_back = lambda: watch.app.users.count_documents({"name": "tampered"})  # noqa: E731
    _wait_for(lambda: put_back() > 0, proc, "the undo started putting documents back")
    err = _kill_server_under(proc, private_server, lambda: put_back() < N - GONE)
    assert "interrupted" in err["error"] and "rerun" in err["hint"]
    assert _status(pid) == "undoing"
    uri = private_server.start(progress=lambda m: None).uri
    watch = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    again = cli("restore", "undo", pid, "--incident", str(inc), "--uri", uri, "--json")
    assert again.code == 0, again.stderr
    assert hashes(watch.app) == before
    assert _status(pid) == "undone"
    watch.close()

    # every run is on the incident's timeline: the interrupted ones as partial, with what they wrote
    rows = [e["data"] for e in incidents.timeline(inc) if e["kind"] == "recovery_action"]
    assert [(r["action"], r["status"]) for r in rows] == [("promote", "partial"), ("promote", "applied"),
                                                          ("undo", "partial"), ("undo", "applied")]
    assert all(r["ref"] == pid for r in rows)
    first, rerun = rows[0]["counts"]["users"], rows[1]["counts"]["users"]
    assert 0 < first["written"] < N
    # the rerun writes exactly what the first run had not: every document once
    assert rerun["written"] + rerun["already"] == N and rerun["already"] >= first["written"]
    assert rerun["conflicts"] == 0 and rerun["superseded"] == 0
    assert 0 < rows[2]["counts"]["users"]["restored"] + rows[2]["counts"]["users"]["deleted"] < N
    undone = rows[3]["counts"]["users"]  # the rerun put back the rest; the first run's are already back
    assert undone["restored"] + undone["deleted"] + undone["already"] == N


@pytest.fixture()
def small_backup(mongo_uri, db):
    make_data(db, users=8)
    return run_backup(mongo_uri, db.name, open_store(), BackupOptions(oplog_probe="clock"))


def test_diff_refuses_a_missing_side(mongo_uri, client, db, small_backup, cli):
    # backup verify restores into a scratch database and drops it: diff never compares against it
    assert verify_backup(mongo_uri, open_store(), small_backup.id, default_policy(),
                         run_integrity_checks=False)["verdict"] == "pass"
    d = cli("restore", "diff", "--backup", small_backup.id, "--db", db.name, "--uri", mongo_uri, "--json")
    assert d.code == 2 and "no complete restore of backup" in d.json()["error"], d.stdout

    target = f"{db.name}_r"
    out = cli("restore", "run", "--backup", small_backup.id, "--to-db", target, "--uri", mongo_uri, "--json")
    assert out.code == 0, out.stderr
    rid = out.json()["restore_id"]
    ok = cli("restore", "diff", "--restore", str(rid), "--db", db.name, "--uri", mongo_uri, "--json")
    assert ok.code == 0 and ok.json()["differences"] == 0, ok.stdout
    missing_live = cli("restore", "diff", "--restore", str(rid), "--db", "no_such_db", "--uri", mongo_uri, "--json")
    assert missing_live.code == 2 and "'no_such_db' does not exist" in missing_live.json()["error"]
    not_restored = cli("restore", "diff", "--restore", str(rid), "--db", db.name, "--collections", "users,nope",
                       "--uri", mongo_uri, "--json")
    assert not_restored.code == 2 and "no collection 'nope'" in not_restored.json()["error"]
    client.drop_database(target)
    gone = cli("restore", "diff", "--target-db", target, "--db", db.name, "--uri", mongo_uri, "--json")
    assert gone.code == 2 and f"{target!r}" in gone.json()["error"] and "does not exist" in gone.json()["error"]


class _FailAfterFirstCollection:
    """Progress sink that fails the restore once one collection is done: a restore that stops half-way."""

    def start(self, name, total): ...

    def advance(self, name, n): ...

    def done(self, name):
        raise RuntimeError("injected: the restore stops here")


def test_a_reused_target_is_never_compared_or_promoted_as_an_older_restore(mongo_uri, client, db, small_backup, cli):
    from fluxa_integrity.restore.executor import restore_snapshot

    target = f"{db.name}_r"
    first = cli("restore", "run", "--backup", small_backup.id, "--to-db", target, "--uri", mongo_uri, "--json")
    assert first.code == 0, first.stderr
    db.users.insert_one({"_id": "new", "name": "after backup A"})
    backup_b = run_backup(mongo_uri, db.name, open_store(), BackupOptions(oplog_probe="clock"))
    # backup B into the same target, dropping it, stops half-way: the target holds part of B
    with pytest.raises(RuntimeError, match="injected"):
        restore_snapshot(mongo_uri, open_store(), backup_b.id, target, drop_target=True,
                         progress=_FailAfterFirstCollection(), workers=1)
    try:
        by_target = cli("restore", "diff", "--target-db", target, "--db", db.name, "--uri", mongo_uri, "--json")
        assert by_target.code == 2 and f"no complete restore into {target!r}" in by_target.json()["error"], by_target.stdout
        by_id = cli("restore", "diff", "--restore", str(first.json()["restore_id"]), "--db", db.name, "--uri",
                    mongo_uri, "--json")
        assert by_id.code == 2 and "is dropped, not complete" in by_id.json()["error"], by_id.stdout
        before = hashes(db)
        promote = cli("restore", "promote", "--from-db", target, "--collections", "users", "--db", db.name,
                      "--yes", "--apply", "--uri", mongo_uri, "--json")
        assert promote.code == 2 and "is failed" in promote.json()["error"], promote.stdout
        assert hashes(db) == before
    finally:
        client.drop_database(target)


def test_every_id_given_must_exist(mongo_uri, client, db, small_backup, cli):
    target = f"{db.name}_r"
    incidents = Incidents.from_environment()
    resolved = incidents.open("old", collections=["users"])["id"]
    incidents.acknowledge(resolved)
    incidents.resolve(resolved, "fixed")
    run = ["restore", "run", "--backup", small_backup.id, "--to-db", target, "--uri", mongo_uri, "--json"]
    for bad, says in (("999", "no incident 999"), ("abc", "not"), (str(resolved), "is resolved")):
        r = cli(*run, "--incident", bad)
        assert r.code == 2 and says in r.json()["error"], r.stdout
        assert target not in client.list_database_names()  # refused before anything was written
    r = cli("restore", "run", "--backup", "nosuchbackup", "--to-db", target, "--uri", mongo_uri, "--json")
    assert r.code == 2 and "no backup 'nosuchbackup'" in r.json()["error"]
    assert cli(*run).code == 0
    before = hashes(db)
    db.users.update_many({}, {"$set": {"name": "x"}})
    changed = hashes(db)
    for extra in ([], ["--apply"]):
        p = cli("restore", "promote", "--from-db", target, "--collections", "users", "--db", db.name,
                "--incident", "999", *extra, "--uri", mongo_uri, "--json")
        assert p.code == 2 and "no incident 999" in p.json()["error"], p.stdout
    assert hashes(db) == changed != before  # nothing promoted
    for args, says in ((["restore", "diff", "--restore", "999"], "no restore '999'"),
                       (["restore", "diff", "--backup", "nosuchbackup"], "no backup 'nosuchbackup'"),
                       (["restore", "undo", "nosuchpromotion", "--yes"], "no promotion 'nosuchpromotion'"),
                       (["restore", "undo", "nosuchpromotion", "--incident", "999"], "no incident 999")):
        r = cli(*args, "--db", db.name, "--uri", mongo_uri, "--json") if args[1] == "diff" else \
            cli(*args, "--uri", mongo_uri, "--json")
        assert r.code == 2 and says in r.json()["error"], (args, r.stdout)


def test_readable_values():
    oid = ObjectId("65f0c0ffee0000000000beef")
    assert readable(datetime(2026, 5, 1, 12, 30, tzinfo=timezone.utc)) == "2026-05-01T12:30:00Z"
    assert readable(datetime(2026, 5, 1, 12, 30, 0, 250000)) == "2026-05-01T12:30:00.250Z"
    assert readable(oid) == "ObjectId(65f0c0ffee0000000000beef)"
    assert readable({"a": [1, {"b": None}], "s": "x\x00y"}) == '{a: [1, {b: null}], s: "x\\u0000y"}'
    assert readable("z" * 500, limit=10) == "\"" + "z" * 8 + "…"


def test_one_unfinished_promotion_per_database_and_the_selection_it_resumes(client, db, monkeypatch):
    from pymongo.collection import Collection
    from pymongo.errors import AutoReconnect

    from fluxa_integrity.errors import FluxaError
    from fluxa_integrity.restore.promote import promote, resumable_promotion

    source = client[f"{db.name}_src"]
    policy = default_policy()
    try:
        source.users.insert_many([{"_id": i, "name": f"user {i}"} for i in range(6)])
        source.notes.insert_one({"_id": 1, "text": "kept"})
        db.users.insert_many([{"_id": i, "name": "tampered"} for i in range(6)])
        db.notes.insert_one({"_id": 1, "text": "tampered"})
        store = open_store()
        incidents = Incidents(store, policy)
        real = Collection.replace_one

        def down(self, *a, **k):
            raise AutoReconnect("connection closed")

        monkeypatch.setattr(Collection, "replace_one", down)  # the promotion of [1, 2] fails
        with pytest.raises(FluxaError, match="interrupted"):
            promote(store, incidents, db, source.name, ["users"], [1, 2], policy)
        monkeypatch.setattr(Collection, "replace_one", real)
        [row] = list_rows(store)
        pid = row["id"]
        assert _status(pid) == "failed"
        # any other selection into this database is refused, naming the unfinished one and how to finish it
        for names, ids in ((["users"], [3]), (["users"], None), (["notes"], [1]), (["users", "notes"], [1, 2])):
            with pytest.raises(FluxaError, match=f"promotion {pid} into '{db.name}' is unfinished \\(failed\\)") as e:
                promote(store, incidents, db, source.name, names, ids, policy)
            assert f"restore undo {pid}" in e.value.hint and "--ids ..." in e.value.hint
        assert db.users.find_one({"_id": 3})["name"] == "tampered" and db.notes.find_one({"_id": 1})["text"] == "tampered"
        assert len(list_rows(store)) == 1  # no plan was made for them
        # another live database is not blocked
        assert resumable_promotion(store, f"{db.name}_other", source.name, ["users"], [3]) is None
        # the same collections and --ids (Extended JSON, compared canonically) resume it
        assert resumable_promotion(store, db.name, source.name, ["users"], [1, 2]) == pid
        res = promote(store, incidents, db, source.name, ["users"], [1, 2], policy)
        assert res.plan_id == pid and res.resumed is True and _status(pid) == "applied"
        assert [d["name"] for d in db.users.find({"_id": {"$in": [1, 2, 3]}}).sort("_id", 1)] == \
            ["user 1", "user 2", "tampered"]
        # finished: a new promotion with another selection goes ahead
        res = promote(store, incidents, db, source.name, ["notes"], [1], policy)
        assert res.plan_id != pid and res.resumed is False
    finally:
        client.drop_database(source.name)


def test_a_promotion_made_by_an_earlier_version_is_named_not_undone(db, cli, mongo_uri, fluxa_home):
    """Old promotions (a ``promotions`` row, an undo store under $FLUXA_HOME/undo/<id>) are not
    read by this version: undo names the store and how to put it back; an unfinished one still
    blocks a new promotion into its database."""
    from fluxa_integrity.errors import FluxaError
    from fluxa_integrity.restore.promote import promote
    from fluxa_integrity.store.backup_models import Promotion

    store = open_store()
    with store.session() as s:
        s.add(Promotion(id="20260101T000000Z-abcdef", from_db="x_restored", live_db=db.name, collections=["users"],
                        authorized_by="operator confirmation (--yes)", status="failed",
                        undo_dir=str(fluxa_home / "undo" / "20260101T000000Z-abcdef"), created_at=EPOCH, counts={}))
    r = cli("restore", "undo", "20260101T000000Z-abcdef", "--yes", "--uri", mongo_uri, "--json")
    assert r.code == 2 and "made by an earlier version" in r.json()["error"], r.stdout
    assert "users.overwritten.bson" not in r.json()["hint"] and "<coll>.overwritten.bson" in r.json()["hint"]
    with pytest.raises(FluxaError, match="made by an earlier version, is unfinished \\(failed\\)"):
        promote(store, Incidents(store, default_policy()), db, "x_restored", ["users"], None, default_policy())
