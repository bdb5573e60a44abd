"""`check run --backup` (issue 13): the policy evaluated on a backup's files with no server finds
what a run on the database it was taken from finds, for every fault kind of the injector; damaged
files are refused naming the file and the byte offset, and such a run is never complete; every
full backup is checked on its files right after it is taken (S4)."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import bson
import pytest

from fluxa_integrity.backup.files import HashedWriter
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.checks.sources import DamagedFile, FileSegment, baselines_before, open_backup, segments
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.expectations import score
from fluxa_integrity.fluxa.faults import KINDS, inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.rules import SyncRule
from fluxa_integrity.store import open_store


def full(findings) -> list:
    """Everything a finding says, samples included, in a comparable form."""
    return sorted((f.rule_id, f.variant, f.collection, f.count, f.affected_users, str(f.first_doc_time),
                   str(f.last_doc_time), sorted(map(str, f.ids)), repr(f.samples)) for f in findings)


@pytest.fixture(scope="module")
def faulty(client, mongo_uri, tmp_path_factory):
    """A dataset with every fault kind injected, and a full backup of it."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    db = client[name]
    tmp = tmp_path_factory.mktemp("check-backup")
    generate(db, GenerateOptions(users=120, seed=120))
    manifest = Manifest(tmp / "m.json", name)
    inject(db, manifest, "all", 4, seed=120)
    store = open_store(f"sqlite:///{tmp}/state.db")
    backup = run_backup(mongo_uri, name, store, BackupOptions(repo=tmp / "repo", oplog_probe="clock"))
    yield SimpleNamespace(db=db, manifest=manifest, store=store, backup=backup)
    client.drop_database(name)
    client.drop_database(m.secondary_db_name(name))


def test_backup_findings_equal_live_for_every_fault_kind(mongo_uri, faulty):
    policy = default_policy()
    db, store = faulty.db, faulty.store
    live = run_checks(mongo_uri, db.name, policy, RunOptions(keep_ids=True))
    files = open_backup(store, faulty.backup.id)
    back = run_checks(None, db.name, policy, RunOptions(keep_ids=True), files=files,
                      baselines=baselines_before(store, db.name, files.started_at))
    assert back.database == f"{db.name}@backup:{faulty.backup.id}"
    # sync rules compare with the secondary system, another database: named, not evaluated
    sync = {r.id for _, r in policy.iter_rules() if isinstance(r, SyncRule) and r.enabled}
    assert sync and not sync & set(back.rules)
    for rid in sync:
        assert any(w.startswith(f"rule {rid}: not evaluable on a backup") for w in back.warnings), back.warnings
    live_sync = [f for f in live.findings if f.rule_id in sync]
    assert live_sync  # sync-drift was injected: the exclusion is not vacuous
    assert full(back.findings) == full([f for f in live.findings if f.rule_id not in sync])
    assert back.docs == live.docs
    scores = score(faulty.manifest, back.findings)
    assert set(scores) == set(KINDS)
    for kind, row in scores.items():
        if kind != "sync-drift":
            assert row["recall"] == 1.0, f"{kind}: missed {row['missed']}"


def _write(path: Path, data: bytes, compression: str) -> None:
    w = HashedWriter(path, compression)
    w.write(data)
    w.close()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_damaged_files_name_the_file_and_the_byte_offset(tmp_path, compression):
    docs = [bson.encode({"_id": i, "text": "x" * (i * 7)}) for i in range(10)]
    offsets = [sum(len(d) for d in docs[:i]) for i in range(11)]
    good = b"".join(docs)
    path = tmp_path / f"c.bson{compression}"
    _write(path, good, compression)
    got = [d for b in FileSegment(str(path), compression).batches(4) for d in b]
    assert [d["_id"] for d in got] == list(range(10))

    def error(data: bytes, framing: bool = True) -> str:
        _write(path, data, compression)
        with pytest.raises(DamagedFile) as exc:
            for _ in FileSegment(str(path), compression).batches(4):
                pass
        if framing:  # cutting a file into segments walks the length prefixes only
            with pytest.raises(DamagedFile):
                segments(str(path), compression, 3)
        assert str(path) in exc.value.message
        return exc.value.message

    assert f"at byte {offsets[9]}" in error(good[:-3])  # truncated: the last document is cut
    bad = bytearray(good)
    bad[offsets[5]:offsets[5] + 4] = (2).to_bytes(4, "little")  # a length no document can have
    assert f"at byte {offsets[5]}" in error(bytes(bad))
    bad = bytearray(good)
    bad[offsets[4] + 4] = 0x7F  # an element type BSON does not have
    assert f"at byte {offsets[4]}" in error(bytes(bad), framing=False)
    bad = bytearray(good)
    bad[offsets[3] - 1] = 0x01  # a document not ending in NUL
    assert f"at byte {offsets[2]}" in error(bytes(bad))


def test_check_run_on_a_backup_and_its_files_check(cli, mongo_uri, db):
    generate(db, GenerateOptions(users=30, seed=3, secondary=False))
    db.users.update_one({}, {"$set": {"createdAt": "2026-01-01"}})  # one finding to carry over
    # S4: a full backup is checked on its files right after it is taken, unless told not to
    taken = cli("backup", "run", "--uri", mongo_uri, "--db", db.name, "--oplog-probe", "clock", "--json")
    assert taken.code == 0, taken.stderr
    out = taken.json()
    assert out["files_check"]["verdict"] == "pass" and out["files_check"]["problems"] == []
    assert {"rule_id": "users.createdAt.type", "variant": "type", "count": 1} in out["files_check"]["integrity_findings"]
    unchecked = cli("backup", "run", "--uri", mongo_uri, "--db", db.name, "--oplog-probe", "clock", "--no-check",
                    "--json")
    assert unchecked.code == 0 and unchecked.json()["files_check"] is None
    listed = {b["id"]: b for b in cli("backup", "list", "--json").json()}
    assert listed[out["id"]]["status"] == "verified" and listed[out["id"]]["verification"]["verdict"] == "ok"
    assert listed[unchecked.json()["id"]]["verification"]["verdict"] == "never"

    live = cli("check", "run", "--uri", mongo_uri, "--db", db.name, "--json")
    back = cli("check", "run", "--backup", out["id"], "--uri", "mongodb://127.0.0.1:1/", "--json")  # no server used
    assert back.code == live.code == 1, back.stderr
    label = f"{db.name}@backup:{out['id']}"
    assert back.json()["database"] == label

    def found(res):
        return sorted((f["rule_id"], f["variant"], f["count"]) for f in res.json()["findings"])

    assert found(back) == found(live) and ("users.createdAt.type", "type", 1) in found(back)
    # the same files as a plain mongodump directory
    repo = Path(listed[out["id"]]["repo"])
    dump = cli("check", "run", "--dump-dir", str(repo / out["id"]), "--json")
    assert dump.code == 1 and found(dump) == found(back)
    assert any("users.count_drop: not evaluable on this dump" in w for w in dump.json()["warnings"])

    # a damaged file: refused naming the file and the offset, recorded as a failed run only
    path = repo / out["id"] / db.name / "messages.bson.zst"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    bad = cli("check", "run", "--backup", out["id"], "--json")
    assert bad.code == 2
    err = bad.json()["error"]
    assert str(path) in err and "at byte" in err, err
    runs = [r for r in cli("check", "history", "--json").json() if r["database"] == label]
    assert [r["status"] for r in runs] == ["failed", "complete"]
