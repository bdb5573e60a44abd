"""Backups: round trip, layout, faults (server killed, flipped byte), retention, RPO, bad inputs."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pymongo
import pytest

from backup_helpers import hashes, indexes, make_data
from fluxa_integrity.backup import catalog
from fluxa_integrity.backup.objectives import rpo_status
from fluxa_integrity.backup.retention import apply_prune, aware, plan_prune
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.policy import default_policy
from fluxa_integrity.restore.executor import restore_snapshot
from fluxa_integrity.store import open_store

FAST = dict(oplog_probe="clock")  # the exact probe scans the whole shared oplog on FerretDB


def test_round_trip_identical_content_and_indexes(mongo_uri, client, db):
    make_data(db, users=150)
    store = open_store()
    res = run_backup(mongo_uri, db.name, store, BackupOptions(oplog_probe="exact"))
    source = hashes(db)
    m = res.manifest
    assert m["status"] == "complete" and m["compression"] == "zstd"
    for name, entry in m["collections"].items():  # the hash computed while writing is the source's hash
        assert (entry["count"], entry["content_sha256"]) == (source[name]["count"], source[name]["sha256"])
        assert (res.directory / entry["data"]["path"]).name == f"{name}.bson.zst"
    meta = json.loads((res.directory / db.name / "messages.metadata.json").read_text())
    assert meta["collectionName"] == "messages" and meta["type"] == "collection" and meta["options"] == {}
    assert [i["name"] for i in meta["indexes"]][0] == "_id_" and len(meta["indexes"]) == 2
    assert meta["indexes"][0]["v"] == {"$numberInt": "2"}  # canonical Extended JSON v2
    assert len(meta["uuid"]) == 32
    start, end = m["oplog"]["start"], m["oplog"]["end"]
    assert start and end and (end["t"], end["i"]) >= (start["t"], start["i"])
    row = catalog.get_backup(store, res.id)
    assert row.status == "complete" and row.oplog_end_t == end["t"] and row.file_count == len(m["collections"]) * 2 + 1
    assert res.schema_backup is not None  # first backup of this db: its schema is new

    target = f"{db.name}_r"
    try:
        restore_snapshot(mongo_uri, store, res.id, target)
        assert hashes(client[target]) == source
        assert indexes(client[target]) == indexes(db)
    finally:
        client.drop_database(target)
    # unchanged schema: no new schema backup
    again = run_backup(mongo_uri, db.name, store, BackupOptions(collections=["users"], **FAST))
    assert again.schema_backup is None and list(again.manifest["collections"]) == ["users"]


@pytest.mark.parametrize("compression,data_suffix,meta_suffix", [("gzip", ".bson.gz", ".metadata.json.gz"),
                                                                  ("none", ".bson", ".metadata.json")])
def test_other_compressions(mongo_uri, client, db, tmp_path, compression, data_suffix, meta_suffix):
    make_data(db, users=15)
    store = open_store()
    res = run_backup(mongo_uri, db.name, store, BackupOptions(repo=tmp_path / "repo", compression=compression, **FAST))
    assert res.directory.parent == tmp_path / "repo"
    assert (res.directory / db.name / f"users{data_suffix}").is_file()
    assert (res.directory / db.name / f"users{meta_suffix}").is_file()
    target = f"{db.name}_r"
    try:
        restore_snapshot(mongo_uri, store, res.id, target)
        assert hashes(client[target]) == hashes(db)
    finally:
        client.drop_database(target)


def test_server_killed_during_backup_is_failed_and_retry_succeeds(private_server, tmp_path):
    uri = private_server.status().uri
    c = pymongo.MongoClient(uri, tz_aware=True)
    make_data(c.app, users=150)  # ~15k documents, backed up 200 at a time: killed at the first file
    expected = hashes(c.app)
    c.close()
    repo = tmp_path / "repo"
    store = open_store()

    def killer():
        deadline = time.time() + 120  # a bound on a hang, not the expected wait (loaded machines)
        while time.time() < deadline:
            if list(repo.glob(".partial-*/app/*.bson.zst")):
                private_server.kill()
                return
            time.sleep(0.005)

    t = threading.Thread(target=killer)
    t.start()
    with pytest.raises(FluxaError) as err:
        run_backup(uri, "app", store, BackupOptions(repo=repo, batch_size=200, workers=2, **FAST))
    t.join()
    failed = catalog.list_backups(store, "app")[0]
    assert failed.status == "failed" and failed.error and failed.id in str(err.value)
    assert not list(repo.glob(".partial-*")) and not (repo / failed.id).exists()
    with pytest.raises(FluxaError, match="never offered for restore"):
        catalog.restorable_backup(store, failed.id)

    uri = private_server.start(progress=lambda m: None).uri
    ok = run_backup(uri, "app", store, BackupOptions(repo=repo, **FAST))
    assert catalog.restorable_backup(store, ok.id).status == "complete"
    assert {n: (e["count"], e["content_sha256"]) for n, e in ok.manifest["collections"].items()} == \
        {n: (v["count"], v["sha256"]) for n, v in expected.items() if n != "*"}


def test_flipped_byte_is_refused_by_verify_and_restore(mongo_uri, db, cli):
    make_data(db, users=20)
    out = cli("backup", "run", "--uri", mongo_uri, "--db", db.name, "--oplog-probe", "clock", "--json")
    assert out.code == 0, out.stderr
    backup_id = out.json()["id"]
    shown = cli("backup", "show", backup_id, "--json").json()
    path = Path(shown["repo"]) / backup_id / db.name / "messages.bson.zst"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    ver = cli("backup", "verify", backup_id, "--uri", mongo_uri, "--json")
    assert ver.code == 1, ver.stderr
    report = ver.json()
    assert report["verdict"] == "fail" and any("messages.bson.zst" in p and "sha256" in p for p in report["problems"])
    assert f"{db.name}_verify" not in " ".join(pymongo.MongoClient(mongo_uri).list_database_names())

    res = cli("restore", "run", "--backup", backup_id, "--to-db", f"{db.name}_r", "--uri", mongo_uri)
    assert res.code == 2 and "messages.bson.zst" in res.stderr and "checksum" in res.stderr
    assert f"{db.name}_r" not in pymongo.MongoClient(mongo_uri).list_database_names()


def test_prune_dry_run_keeps_pinned(mongo_uri, db, cli):
    make_data(db, users=5)
    store = open_store()
    a = run_backup(mongo_uri, db.name, store, BackupOptions(**FAST))
    b = run_backup(mongo_uri, db.name, store, BackupOptions(**FAST))
    catalog.set_pin(store, a.id, "INC-7")
    later = aware(catalog.get_backup(store, b.id).finished_at) + timedelta(days=31)
    plan = {i.id: i for i in plan_prune(store, default_policy(), later)}
    assert plan[a.id].action == "keep" and "pinned" in plan[a.id].reason
    assert plan[b.id].action == "delete"
    assert plan[a.schema_backup].action == "keep" and "indefinitely" in plan[a.schema_backup].reason
    assert {i.action for i in plan_prune(store, default_policy(), later - timedelta(days=2))} == {"keep"}

    dry = cli("backup", "prune", "--dry-run", "--now", later.strftime("%Y-%m-%dT%H:%M:%S"), "--json")
    assert dry.code == 0 and dry.json()["deleted"] == []
    assert {x["id"]: x["action"] for x in dry.json()["backups"]}[b.id] == "delete"
    assert b.directory.exists()

    assert apply_prune(store, plan_prune(store, default_policy(), later)) == [b.id]
    assert not b.directory.exists() and a.directory.exists()
    cli("backup", "unpin", a.id)
    assert [i.id for i in plan_prune(store, default_policy(), later) if i.action == "delete"] == [a.id]


def test_rpo_breach_by_age(mongo_uri, db, cli):
    make_data(db, users=5)
    store = open_store()
    res = run_backup(mongo_uri, db.name, store, BackupOptions(**FAST))
    start = aware(catalog.get_backup(store, res.id).started_at)
    ok = {r["data_class"]: r["status"] for r in rpo_status(store, default_policy(), db.name, start + timedelta(minutes=10))}
    assert set(ok.values()) == {"ok"}
    late = {r["data_class"]: r["status"] for r in rpo_status(store, default_policy(), db.name, start + timedelta(minutes=20))}
    assert late == {"user_accounts": "breached", "chat_history": "ok", "user_preferences": "ok", "usage_analytics": "ok"}
    out = cli("rpo", "status", "--db", db.name, "--now", (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S"), "--json")
    assert out.code == 1 and out.json()["breached"] is True
    assert {r["data_class"]: r["status"] for r in out.json()["data_classes"]}["chat_history"] == "breached"
    # a backup without the users collection does not cover user accounts
    assert {r["data_class"]: r["backup_id"] for r in rpo_status(store, default_policy(), "nope")}["user_accounts"] is None


def test_bad_inputs(mongo_uri, db, cli, tmp_path):
    make_data(db, users=5)
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    cases = [
        (("backup", "show", "nope", "--json"), "no backup"),
        (("backup", "run", "--uri", mongo_uri, "--db", db.name, "--repo", str(not_dir), "--json"), "not a directory"),
        (("backup", "run", "--uri", mongo_uri, "--db", db.name, "--compression", "lz4", "--json"), "unknown compression"),
        (("backup", "run", "--uri", mongo_uri, "--db", db.name, "--collections", "ghosts", "--json"), "no collection"),
        (("restore", "run", "--backup", "nope", "--to-db", "x", "--uri", mongo_uri, "--json"), "no backup"),
        (("restore", "promote", "--from-db", "x", "--collections", "users", "--db", db.name, "--uri", mongo_uri,
          "--apply", "--json"), "incident"),
        (("restore", "undo", "nope", "--yes", "--uri", mongo_uri, "--json"), "no promotion"),
        (("restore", "undo", "nope", "--uri", mongo_uri, "--json"), "incident"),
    ]
    for args, text in cases:
        out = cli(*args)
        assert out.code == 2, (args, out.stdout, out.stderr)
        assert text in out.json()["error"] and out.json()["hint"], args
    # a backup to restore from, taken in-process (`backup run` has its CLI tests above)
    backup_id = run_backup(mongo_uri, db.name, open_store(), BackupOptions(**FAST)).id
    for args, text in [
        (("--to-db", db.name), "source database"),
        (("--to-db", f"{db.name}_x", "--filter", '{"$or": []}'), "not supported"),
        (("--to-db", f"{db.name}_x", "--filter", '{"a": {"$regex": "x"}}'), "$regex"),
        (("--to-db", f"{db.name}_x", "--filter", "{nope"), "not valid"),
        (("--to-db", f"{db.name}_x", "--collections", "ghosts"), "no collection"),
    ]:
        out = cli("restore", "run", "--backup", backup_id, "--uri", mongo_uri, "--json", *args)
        assert out.code == 2 and text in out.json()["error"], (args, out.stdout, out.stderr)
    assert f"{db.name}_x" not in pymongo.MongoClient(mongo_uri).list_database_names()
