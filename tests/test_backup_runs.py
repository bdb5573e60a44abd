"""Backup runs and their verdicts (issue 9, items 5 and 6): a run killed with SIGKILL leaves no
partial folder behind once the next backup, list or prune sweeps it (live writers untouched, a
reused pid not mistaken for the writer); `backup list|show` show each backup's latest
verification (ok / failed and why / never, and when); `--db` on the backup commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from backup_helpers import make_data
from fluxa_integrity.backup import catalog
from fluxa_integrity.backup.repository import write_pid
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.store import open_store

STALL = """
import sys, time
from fluxa_integrity.backup.snapshot import BackupOptions, Progress, run_backup
from fluxa_integrity.store import open_store

class Stall(Progress):  # the readiness signal: the first batch is on disk, then it hangs until killed
    def advance(self, collection, n):
        print("dumping", flush=True)
        time.sleep(600)

run_backup(sys.argv[1], sys.argv[2], open_store(), BackupOptions(repo=sys.argv[3], oplog_probe="clock", workers=1,
           batch_size=10, schema=False), Stall())
"""


def test_sigkilled_run_is_swept_by_the_next_list_prune_and_run(mongo_uri, db, tmp_path, cli):
    make_data(db, users=5)
    repo = tmp_path / "repo"
    proc = subprocess.Popen([sys.executable, "-c", STALL, mongo_uri, db.name, str(repo)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "dumping"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [dead] = list(repo.glob(".partial-*"))
    killed_id = dead.name[len(".partial-"):]
    assert list(dead.glob(f"{db.name}/*.bson.zst"))  # it died mid-write
    # ground truth beside it: a live writer's folder (this process) and a reused pid (this pid, another start time)
    live = repo / ".partial-20260101T000000Z-aaaaaa"
    live.mkdir()
    write_pid(live)
    reused = repo / ".partial-20260101T000000Z-bbbbbb"
    reused.mkdir()
    (reused / ".pid").write_text(f"{os.getpid()} 12345.000")

    dry = cli("backup", "prune", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert {s["id"] for s in dry.json()["swept_dead_runs"]} == {killed_id, "20260101T000000Z-bbbbbb"}
    assert dead.exists() and reused.exists()  # a dry run deletes nothing

    out = cli("backup", "list", "--json")
    assert out.code == 0, out.stderr
    row = next(b for b in out.json() if b["id"] == killed_id)
    assert row["status"] == "failed" and "interrupted" in row["error"]
    assert not dead.exists() and not reused.exists() and live.exists()  # the live writer's folder is kept

    (repo / dead.name).mkdir()  # another dead run, no catalog row: the next backup run sweeps it
    (repo / dead.name / ".pid").write_text("999999999 1.0")
    ok = cli("backup", "run", "--uri", mongo_uri, "--db", db.name, "--repo", str(repo), "--oplog-probe", "clock",
             "--json")
    assert ok.code == 0, ok.stderr
    assert sorted(p.name for p in repo.glob(".partial-*")) == [live.name]


def test_kill_is_swept_by_prune_too(mongo_uri, db, tmp_path, cli, fluxa_home):
    make_data(db, users=3)
    repo = fluxa_home / "backups"  # the configured (default) repository
    proc = subprocess.Popen([sys.executable, "-c", STALL, mongo_uri, db.name, str(repo)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "dumping"
    proc.kill()
    proc.wait()
    [dead] = list(repo.glob(".partial-*"))
    out = cli("backup", "prune", "--json")
    assert out.code == 0, out.stderr
    swept = out.json()["swept_dead_runs"]
    assert [s["id"] for s in swept] == [dead.name[len(".partial-"):]] and swept[0]["row"] and swept[0]["folder"]
    assert not dead.exists()
    assert catalog.get_backup(open_store(), swept[0]["id"]).status == "failed"


def test_list_and_show_carry_the_verification_verdict(mongo_uri, db, cli):
    make_data(db, users=5)

    def backup() -> str:
        # what `backup run --no-check` does, in-process (its CLI has its own tests in test_backup.py):
        # not even checked on its files (S4, which `backup run` does by default)
        return run_backup(mongo_uri, db.name, open_store(), BackupOptions(oplog_probe="clock")).id

    never, checked = backup(), backup()

    def listed() -> dict:
        return {b["id"]: b for b in cli("backup", "list", "--json").json()}

    assert listed()[never]["verification"]["verdict"] == "never"
    wrong_db = cli("backup", "verify", checked, "--uri", mongo_uri, "--db", "someotherdb", "--json")
    assert wrong_db.code == 2 and "is a backup of" in wrong_db.json()["error"]
    ok = cli("backup", "verify", checked, "--uri", mongo_uri, "--db", db.name, "--json")
    assert ok.code == 0, ok.stderr
    row = listed()[checked]
    assert row["status"] == "verified" and row["verification"]["verdict"] == "ok" and row["verification"]["at"]

    shown = cli("backup", "show", checked, "--json").json()
    path = Path(shown["repo"]) / checked / db.name / "messages.bson.zst"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    bad = cli("backup", "verify", checked, "--uri", mongo_uri, "--json")
    assert bad.code == 1
    row = listed()[checked]
    assert row["status"] == "complete"  # no longer "verified": the latest drill failed
    assert row["verification"]["verdict"] == "failed" and "messages.bson.zst" in row["verification"]["reason"]
    human = cli("backup", "list")
    assert "FAILED" in human.stderr and "never" in human.stderr and checked in human.stderr
    show = cli("backup", "show", checked)
    assert "verification FAILED" in show.stderr and "messages.bson.zst" in show.stderr
    assert "never verified" in cli("backup", "show", never).stderr
    assert cli("backup", "show", never, "--db", "someotherdb", "--json").code == 2
    assert cli("backup", "pin", never, "--reason", "INC-1", "--db", "someotherdb", "--json").code == 2


def test_sweep_never_takes_a_young_folder_or_a_sealed_backup_for_dead(tmp_path):
    import time
    from datetime import datetime, timezone

    from fluxa_integrity.backup.repository import backup_dir, partial_dir

    repo, store = tmp_path / "repo", open_store()
    # a writer between creating .pid and writing its content (how write_text used to show it)
    young = partial_dir(repo, "young")
    young.mkdir(parents=True)
    (young / ".pid").write_text("")
    old = partial_dir(repo, "old")  # the same, from a writer that died long ago
    old.mkdir()
    (old / ".pid").write_text("")
    past = time.time() - 3600
    os.utime(old / ".pid", (past, past))
    os.utime(old, (past, past))
    # a backup sealed (folder renamed) whose row is not yet marked complete
    catalog.start_backup(store, "sealed", "full", "app", repo, ["users"], datetime.now(timezone.utc))
    backup_dir(repo, "sealed").mkdir()
    swept = catalog.sweep_dead_runs(store, [repo])
    assert young.is_dir() and not old.exists()
    assert [s["id"] for s in swept] == ["old"]
    assert catalog.get_backup(store, "sealed").status == "running"  # its finish_backup is on its way
    # write_pid never leaves a partial .pid: it appears whole
    write_pid(young)
    assert (young / ".pid").read_text().split()[0] == str(os.getpid()) and not (young / ".pid.tmp").exists()
