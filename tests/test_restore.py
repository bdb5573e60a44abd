"""Restore: resumable after a kill, filters, diff, promote + undo, verification and RTO."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from backup_helpers import hashes, make_data
from fluxa_integrity.backup import catalog
from fluxa_integrity.backup.objectives import rto_status
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.policy import default_policy
from fluxa_integrity.restore.filters import compile_filter, parse_filter
from fluxa_integrity.store import open_store

FAST = dict(oplog_probe="clock")


@pytest.fixture()
def backed_up(mongo_uri, db):
    make_data(db, users=60)
    res = run_backup(mongo_uri, db.name, open_store(), BackupOptions(**FAST))
    return res


@pytest.fixture()
def target(client, db):
    name = f"{db.name}_t"
    yield name
    client.drop_database(name)


def test_restore_killed_midway_then_rerun_completes(mongo_uri, client, db, target, fluxa_home, cli):
    # ~7k messages in batches of 1000 (restore/executor.py): killed after the first, far from the end
    make_data(db, users=150)
    backup_id = run_backup(mongo_uri, db.name, open_store(), BackupOptions(**FAST)).id
    args = [sys.executable, "-m", "fluxa_integrity", "restore", "run", "--backup", backup_id, "--to-db", target,
            "--uri", mongo_uri, "--json"]
    proc = subprocess.Popen(args, env={**os.environ, "FLUXA_HOME": str(fluxa_home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if "messages" in client[target].list_collection_names() and client[target].messages.estimated_document_count() > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = {n: client[target][n].estimated_document_count() for n in client[target].list_collection_names()}
    source = hashes(db)
    assert sum(partial.values()) < source["*"]["count"], "the restore finished before it was killed"

    out = cli("restore", "run", "--backup", backup_id, "--to-db", target, "--uri", mongo_uri, "--json")
    assert out.code == 0, out.stderr
    assert out.json()["resumed"] is True
    assert hashes(client[target]) == source  # same counts and content: nothing lost, no duplicates


def test_filter_restore_matches_server_query(mongo_uri, client, db, backed_up, target, cli):
    since = datetime(2026, 5, 1, tzinfo=timezone.utc)
    flt = '{"sender": "bot", "timestamp": {"$gte": {"$date": "2026-05-01T00:00:00Z"}}}'
    out = cli("restore", "run", "--backup", backed_up.id, "--to-db", target, "--collections", "messages",
              "--filter", flt, "--uri", mongo_uri, "--json")
    assert out.code == 0, out.stderr
    expected = db.messages.count_documents({"sender": "bot", "timestamp": {"$gte": since}})
    assert 0 < expected < db.messages.count_documents({})
    assert client[target].list_collection_names() == ["messages"]
    assert client[target].messages.count_documents({}) == expected
    assert client[target].messages.count_documents({"sender": {"$ne": "bot"}}) == 0


def test_filter_operators():
    doc = {"a": 5, "b": {"c": "x"}, "d": [1, 2], "t": datetime(2026, 1, 2, tzinfo=timezone.utc)}
    yes = ['{"a": 5}', '{"b.c": "x"}', '{"a": {"$in": [1, 5]}}', '{"a": {"$gt": 4, "$lte": 5}}', '{"d": 2}',
           '{"z": {"$exists": false}}', '{"b.c": {"$exists": true}}', '{"t": {"$lt": {"$date": "2026-02-01T00:00:00Z"}}}',
           '{"a": {"$nin": [1]}, "b.c": {"$ne": "y"}}']
    no = ['{"a": 6}', '{"a": {"$gt": "4"}}', '{"b.c": {"$in": ["y"]}}', '{"z": {"$exists": true}}', '{"a": {"$lt": 5}}']
    for f in yes:
        assert compile_filter(parse_filter(f))(doc), f
    for f in no:
        assert not compile_filter(parse_filter(f))(doc), f


def test_diff_promote_and_undo_restore_exact_state(mongo_uri, client, db, backed_up, target, cli):
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.recovery import engine

    incidents = Incidents.from_environment()
    inc = incidents.open("users overwritten by a bad deploy", collections=["users"])["id"]
    out = cli("restore", "run", "--backup", backed_up.id, "--to-db", target, "--incident", str(inc), "--uri", mongo_uri)
    assert out.code == 0, out.stderr
    same = cli("restore", "diff", "--target-db", target, "--db", db.name, "--uri", mongo_uri)
    assert same.code == 0, same.stderr  # nothing changed since the backup: exit 0, and it says what it compared
    assert "no differences" in same.stderr and f"live {db.name} (" in same.stderr and f"with {target} (" in same.stderr
    users = list(db.users.find().sort("_id", 1).limit(5))
    db.users.update_one({"_id": users[0]["_id"]}, {"$set": {"name": "changed", "lastUpdated": datetime.now(timezone.utc)}})
    db.users.update_one({"_id": users[1]["_id"]}, {"$set": {"name": "changed too"}})  # old lastUpdated: no conflict
    db.users.delete_one({"_id": users[2]["_id"]})
    db.users.insert_one({"email": "new@example.com", "lastUpdated": datetime.now(timezone.utc)})

    d = cli("restore", "diff", "--target-db", target, "--db", db.name, "--collections", "users", "--uri", mongo_uri, "--json")
    assert d.code == 1, d.stderr  # differences found
    u = d.json()["collections"]["users"]
    assert (u["added"], u["removed"], u["changed"], u["conflicts"]) == (1, 1, 2, 2)
    assert u["samples"]["removed"] == [{"$oid": str(users[2]["_id"])}]
    assert d.json()["differences"] == 4
    assert d.json()["live"] == {"db": db.name, "documents": db.users.count_documents({})}
    assert d.json()["restored"]["db"] == target and d.json()["restored"]["backup_id"] == backed_up.id
    assert d.json()["restored"]["documents"] == client[target].users.count_documents({})

    before = hashes(db)
    dry = cli("restore", "promote", "--from-db", target, "--collections", "users", "--db", db.name, "--uri", mongo_uri, "--json")
    assert dry.code == 0 and dry.json()["dry_run"] is True
    c = dry.json()["collections"]["users"]
    assert (c["overwrite"], c["insert"]) == (2, 1)
    [sample] = [x for x in c["sample_diffs"] if x["_id"] == {"$oid": str(users[0]["_id"])}]
    assert sample["fields"]["name"] == ["changed", users[0]["name"]]  # live -> the backup's
    assert hashes(db) == before  # a dry run writes nothing
    human = cli("restore", "promote", "--from-db", target, "--collections", "users", "--db", db.name, "--uri", mongo_uri)
    assert human.code == 0, human.stderr
    old_date = client[target].users.find_one({"_id": users[0]["_id"]})["lastUpdated"]
    # dates are printed (not swallowed as Rich markup), as ISO text; ObjectIds as ObjectId(hex)
    iso = old_date.isoformat(timespec="milliseconds" if old_date.microsecond else "seconds").replace("+00:00", "Z")
    assert f" -> {iso}" in human.stderr, human.stderr  # live value -> the backup's
    assert f"_id ObjectId({users[0]['_id']})" in human.stderr

    ids = '[{"$oid": "%s"}, {"$oid": "%s"}]' % (users[0]["_id"], users[2]["_id"])
    app = cli("restore", "promote", "--from-db", target, "--collections", "users", "--ids", ids, "--db", db.name,
              "--incident", str(inc), "--apply", "--uri", mongo_uri, "--json")
    assert app.code == 0, app.stderr
    pid = app.json()["promotion_id"]
    assert app.json()["planned"]["users"] == {"replace": 1, "insert": 1}
    assert app.json()["counts"]["users"] == {"written": 2, "already": 0, "conflicts": 0, "forced": 0, "superseded": 0}
    assert db.users.find_one({"_id": users[0]["_id"]}) == client[target].users.find_one({"_id": users[0]["_id"]})
    assert db.users.find_one({"_id": users[2]["_id"]}) is not None
    assert db.users.find_one({"_id": users[1]["_id"]})["name"] == "changed too"  # not selected: untouched

    promoted = hashes(db)
    bare = cli("restore", "undo", pid, "--uri", mongo_uri, "--json")  # writes to live: needs --incident or --yes
    assert bare.code == 2 and "--incident ID (preferred) or --yes" in bare.json()["hint"], bare.stdout
    assert hashes(db) == promoted
    undo = cli("restore", "undo", pid, "--incident", str(inc), "--uri", mongo_uri, "--json")
    assert undo.code == 0, undo.stderr
    assert hashes(db) == before
    assert undo.json()["undone_by"] == f"incident:{inc}"
    again = cli("restore", "undo", pid, "--yes", "--uri", mongo_uri, "--json")
    assert again.code == 2 and "already undone" in again.json()["error"]

    # the restore, the promotion and the undo are on the incident's timeline, with their counts
    actions = [e["data"] for e in incidents.timeline(inc) if e["kind"] == "recovery_action"]
    assert [(a["action"], a["status"]) for a in actions] == [("restore", "applied"), ("promote", "applied"),
                                                             ("undo", "applied")]
    assert actions[0]["counts"]["users"]["inserted"] == client[target].users.count_documents({})
    assert actions[1]["ref"] == pid and actions[1]["counts"]["users"]["written"] == 2
    assert actions[2]["ref"] == pid
    assert actions[2]["counts"]["users"] == {"restored": 1, "deleted": 1, "already": 0, "superseded": 0}
    # the promotion is a recovery plan like any other: listed, with its journal
    [row] = [r for r in engine.list_plans(open_store()) if r["id"] == pid]
    assert (row["recipe"], row["status"], row["incident_id"]) == ("restore-and-promote", "undone", inc)


def test_verify_records_verdict_and_rto(mongo_uri, client, db, backed_up, cli):
    out = cli("backup", "verify", backed_up.id, "--uri", mongo_uri, "--json")
    assert out.code == 0, out.stderr
    rep = out.json()
    assert rep["verdict"] == "pass" and rep["problems"] == []
    assert all(c["content_ok"] and c["indexes_ok"] for c in rep["collections"].values())
    assert set(rep["restore_seconds"]) == {"user_accounts", "chat_history", "user_preferences", "usage_analytics"}
    assert "integrity_findings" in rep  # the checks ran on the restored copy
    assert not [n for n in client.list_database_names() if n.startswith(f"{db.name}_verify")]
    store = open_store()
    assert catalog.get_backup(store, backed_up.id).status == "verified"
    rto = {r["data_class"]: r for r in rto_status(store, default_policy(), db.name)}
    assert rto["user_accounts"]["status"] == "ok" and rto["user_accounts"]["measured_seconds"] is not None
    st = cli("rto", "status", "--json")
    assert st.code == 0 and not st.json()["breached"]


def test_a_drill_that_errors_is_recorded_failed(mongo_uri, client, db, backed_up, monkeypatch):
    from fluxa_integrity.errors import FluxaError
    from fluxa_integrity.restore import verification
    from fluxa_integrity.restore.verification import verify_backup

    store = open_store()
    assert verify_backup(mongo_uri, store, backed_up.id, default_policy(), run_integrity_checks=False)["verdict"] == "pass"
    assert catalog.get_backup(store, backed_up.id).status == "verified"
    real = verification.restore_snapshot

    def fails_midway(*args, **kwargs):  # the scratch restore errors out (a server refusal, a full disk)
        real(*args, **kwargs)
        raise FluxaError("restore into the scratch database failed: injected", "fix it and rerun")

    monkeypatch.setattr(verification, "restore_snapshot", fails_midway)
    with pytest.raises(FluxaError, match="injected"):
        verify_backup(mongo_uri, store, backed_up.id, default_policy(), run_integrity_checks=False)
    assert catalog.get_backup(store, backed_up.id).status == "complete"  # "verified" no longer stands
    latest = catalog.verifications(store, backed_up.id)[0]  # newest first
    assert latest.verdict == "fail" and "injected" in latest.details["error"]
    with store.session() as s:  # the scratch copy is gone, and no restore row says otherwise
        from fluxa_integrity.store.backup_models import RestoreRun
        assert {r.status for r in s.query(RestoreRun)} == {"dropped"}
    assert not [n for n in client.list_database_names() if n.startswith(f"{db.name}_verify")]
