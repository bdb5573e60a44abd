"""Point-in-time restore: snapshot + oplog replay equals a copy of the database taken at that
moment - from the live oplog alone, from archived slices plus the live oplog, from an incremental
backup - and refusals for a broken window (slice lost, oplog rolled) and a damaged slice.

Each test has its own FerretDB (private_server): its oplog is clean and small, where the shared
server's grows with the whole suite and every oplog read is a full scan on FerretDB.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pymongo
import pytest

from backup_helpers import hashes, make_data
from fluxa_integrity.backup import archive_catalog as ac
from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
from fluxa_integrity.backup.incremental import run_incremental
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.policy import default_policy
from fluxa_integrity.restore.pitr import parse_point, restore_to_point
from fluxa_integrity.restore.verification import verify_backup
from fluxa_integrity.store import open_store

UTC = timezone.utc
ONCE = ArchiveOptions(once=True, poll_ms=200)


def phase(db, n: int) -> None:
    """Inserts, updates (a field removed, a nested field set, a replacement) and deletes."""
    users = list(db.users.find({}, {"_id": 1}).sort("_id", 1).limit(12))
    db.users.update_one({"_id": users[n]["_id"]}, {"$unset": {"email": ""}, "$set": {"phase": n}})
    db.users.update_one({"_id": users[n + 4]["_id"]}, {"$set": {"profile.nested": {"n": n}}})
    db.users.replace_one({"_id": users[n + 8]["_id"]}, {"replaced": n})
    db.messages.delete_many({"_id": {"$in": [m["_id"] for m in db.messages.find({}, {"_id": 1}).limit(3)]}})
    db.notes.insert_many([{"_id": f"p{n}-{i}", "phase": n, "i": i} for i in range(5)])
    db.notes.update_many({"phase": n}, {"$set": {"seen": True}})
    db.notes.delete_one({"_id": f"p{n}-0"})


def mark(db) -> tuple[dict, str]:
    """A copy (hashes) of the database and the moment it shows, then wait so later writes are later."""
    time.sleep(0.05)
    copy, at = hashes(db), datetime.now(UTC).isoformat()
    time.sleep(1.1)
    return copy, at


@pytest.fixture()
def setup(private_server, tmp_path):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client.app
    make_data(db, users=40)
    store = open_store()
    backup = run_backup(uri, "app", store, BackupOptions(repo=tmp_path / "repo", oplog_probe="exact"))
    time.sleep(1.1)
    yield uri, client, db, store, tmp_path / "repo", backup
    client.close()


def test_point_in_time_from_live_oplog_then_from_slices_plus_live(setup):
    uri, client, db, store, repo, _ = setup
    phase(db, 0)
    copy_a, at_a = mark(db)
    phase(db, 1)
    # no archiver ran: everything after the snapshot comes from the live oplog
    res = restore_to_point(uri, store, "app", "at_a", at_a)
    assert hashes(client.at_a) == copy_a
    assert [s["kind"] for s in res["sources"]] == ["live"] and res["inclusive"] is True
    assert res["replay"]["upserts"] > 0 and res["replay"]["deletes"] > 0

    archive_oplog(uri, store, repo, ONCE)  # the archive now holds phases 0-1
    phase(db, 2)
    copy_b, at_b = mark(db)
    phase(db, 3)
    res = restore_to_point(uri, store, "app", "at_b", at_b)
    assert hashes(client.at_b) == copy_b
    assert [s["kind"] for s in res["sources"]] == ["slice", "live"]
    run = res["restore_id"]
    from fluxa_integrity.store.backup_models import RestoreRun

    with store.session() as s:
        assert s.get(RestoreRun, run).pitr["at"] == at_b

    # a BSON timestamp, exclusive: stop just before the first entry of phase 3
    first_p3 = client.local["oplog.rs"].find_one({"ns": "app.notes", "o._id": "p3-0", "op": "i"})
    res = restore_to_point(uri, store, "app", "at_ts", f"{first_p3['ts'].time}:{first_p3['ts'].inc}", inclusive=False)
    # phase 3 starts with user updates, so the notes insert is not the first entry: compare notes only
    assert "p3-1" not in {d["_id"] for d in client.at_ts.notes.find({}, {"_id": 1})}
    assert hashes(client.at_ts)["notes"] == copy_b["notes"]


def test_slice_lost_and_oplog_rolled_refuses_naming_the_gap(setup, cli):
    uri, client, db, store, repo, _ = setup
    archive_oplog(uri, store, repo, ONCE)
    phase(db, 0)
    _, at_gap = mark(db)
    lost = archive_oplog(uri, store, repo, ONCE).slices[0]
    phase(db, 1)
    _, at_after = mark(db)
    archive_oplog(uri, store, repo, ONCE)
    # the slice holding phase 0 is deleted and the oplog no longer reaches back to it
    from pathlib import Path

    Path(lost["path"]).unlink()
    windows, gaps = ac.coverage(store)
    assert len(windows) == 2 and gaps and lost["path"].endswith(gaps[0]["file"])
    client.local["oplog.rs"].delete_many({"ts": {"$lte": ac_ts(lost["last"])}})
    with pytest.raises(FluxaError, match="window is broken") as err:
        restore_to_point(uri, store, "app", "t1", at_gap)
    assert lost["first"] in str(err.value.message) or lost["last"] in str(err.value.message) or "missing" in str(err.value.message)
    assert "t1" not in client.list_database_names()  # refused before anything was written
    out = cli("backup", "oplog-status", "--json")
    assert out.code == 1 and out.json()["broken"] is True
    rpo = cli("rpo", "status", "--db", "app")
    assert "oplog archive gap" in rpo.stderr


def ac_ts(text: str):
    from bson.timestamp import Timestamp

    t, i = text.split(":")
    return Timestamp(int(t), int(i))


def test_damaged_slice_refused_naming_the_file(setup):
    uri, client, db, store, repo, _ = setup
    phase(db, 0)
    _, at = mark(db)
    sl = archive_oplog(uri, store, repo, ONCE).slices[0]
    with open(sl["path"], "r+b") as f:
        f.seek(20)
        b = f.read(1)
        f.seek(20)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(FluxaError, match="failed its checksum") as err:
        restore_to_point(uri, store, "app", "t2", at)
    assert sl["path"] in err.value.message


def test_incremental_backup_and_restore_from_it(setup):
    uri, client, db, store, repo, full = setup
    phase(db, 0)
    copy, _ = mark(db)
    # a t:i point (the last entry): a wall time after the archive's last entry would need the live
    # oplog to prove nothing else was written before it (see docs/backup.md)
    last = next(client.local["oplog.rs"].find({}, {"ts": 1}).sort("$natural", -1).limit(1))["ts"]
    at = f"{last.time}:{last.inc}"
    inc = run_incremental(uri, "app", store, repo)
    m = inc.manifest
    assert m["kind"] == "incremental" and m["based_on"] == full.id and m["entries"] > 0
    assert m["oplog"]["start"] == full.manifest["oplog"]["start"]  # from the snapshot's start: see incremental.py
    again = run_incremental(uri, "app", store, repo)  # nothing new for app: an empty increment, chained
    assert again.manifest["based_on"] == inc.id and again.manifest["entries"] == 0
    verdicts = {b.id: verify_backup(uri, store, b.id, default_policy()) for b in (inc, again)}
    assert {k: v["verdict"] for k, v in verdicts.items()} == {inc.id: "pass", again.id: "pass"}
    assert verdicts[inc.id]["entries"] == m["entries"] > 0
    # the slices are gone (point-in-time retention is shorter) and so is the live oplog: the increment remains
    for row in ac.slices(store):
        ac.slice_path(row).unlink()
    client.local["oplog.rs"].delete_many({})
    res = restore_to_point(uri, store, "app", "t3", at)
    assert hashes(client.t3) == copy and "incremental" in [s["kind"] for s in res["sources"]]
    oplog_file = inc.directory / "oplog.bson.zst"  # a flipped byte fails verification, naming the file
    data = bytearray(oplog_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    oplog_file.write_bytes(bytes(data))
    bad = verify_backup(uri, store, inc.id, default_policy())
    assert bad["verdict"] == "fail" and any("oplog.bson.zst" in p for p in bad["problems"])


def test_parse_point():
    assert parse_point("1795643032:7").ts.inc == 7
    assert parse_point("2026-11-25T21:40:00Z").wall == datetime(2026, 11, 25, 21, 40, tzinfo=UTC)
    assert parse_point("2026-11-25T21:40:00").wall.tzinfo is not None  # naive means UTC
    with pytest.raises(FluxaError, match="neither"):
        parse_point("yesterday")



def test_replay_is_idempotent_on_documents_the_snapshot_holds(db):
    """Entries written while the snapshot ran may already be in it: replaying them changes nothing."""
    from fluxa_integrity.restore.replay import Replayer

    db.c.insert_many([{"_id": 1, "v": "new"}, {"_id": 3, "v": 3}])  # the snapshot already saw these writes
    r = Replayer(db, "src", None)
    entries = [{"op": "i", "ns": "src.c", "o": {"_id": 1, "v": "new"}}, {"op": "i", "ns": "src.c", "o": {"_id": 2, "v": 2}},
               {"op": "u", "ns": "src.c", "o": {"$v": 2, "diff": {"u": {"v": 33}}}, "o2": {"_id": 3}},
               {"op": "d", "ns": "src.c", "o": {"_id": 9}}, {"op": "i", "ns": "other.c", "o": {"_id": 5}}]
    for _ in range(2):
        for e in entries:
            r.apply(e)
        r.flush()
        assert list(db.c.find().sort("_id", 1)) == [{"_id": 1, "v": "new"}, {"_id": 2, "v": 2}, {"_id": 3, "v": 33}]


def test_prune_drops_only_slices_no_point_in_the_window_needs(setup, cli):
    """72 h point-in-time retention: slices ending before the newest full backup older than the
    window go; the window still restores exactly, and coverage shows no gap where they were."""
    from datetime import timedelta

    uri, client, db, store, repo, b1 = setup
    phase(db, 0)
    old = archive_oplog(uri, store, repo, ONCE).slices  # entries before and after b1
    b2 = run_backup(uri, "app", store, BackupOptions(repo=repo, oplog_probe="exact"))
    time.sleep(1.1)
    phase(db, 1)
    new = archive_oplog(uri, store, repo, ONCE).slices
    copy, at = mark(db)
    fmt = "%Y-%m-%dT%H:%M:%S"

    soon = cli("backup", "prune", "--dry-run", "--json", "--now", (datetime.now(UTC) + timedelta(hours=1)).strftime(fmt))
    assert {s["action"] for s in soon.json()["oplog_slices"]} == {"keep"}  # b1 is the base: all needed

    later = (datetime.now(UTC) + timedelta(hours=80)).strftime(fmt)  # both backups older than 72 h: b2 is the base
    dry = cli("backup", "prune", "--dry-run", "--json", "--now", later).json()
    plan = {s["id"]: s["action"] for s in dry["oplog_slices"]}
    assert plan == {**{f"slice:{s['id']}": "delete" for s in old}, **{f"slice:{s['id']}": "keep" for s in new}}
    assert all(repo.joinpath(s["path"]).exists() for s in old)  # a dry run deletes nothing

    done = cli("backup", "prune", "--json", "--now", later).json()
    assert sorted(done["deleted"]) == sorted(f"slice:{s['id']}" for s in old)
    assert not any(repo.joinpath(s["path"]).exists() for s in old)
    windows, gaps = ac.coverage(store)
    assert len(windows) == 1 and gaps == []
    res = restore_to_point(uri, store, "app", "after_prune", at)
    assert res["backup_id"] == b2.id and hashes(client.after_prune) == copy


def test_idle_archiver_keeps_the_recovery_point_fresh(setup):
    """RPO of an idle database: once the archiver has polled and found nothing newer, every write
    before that poll is archived, so the recoverable point moves past the newest entry's time -
    and never past a write the archive does not hold."""
    from datetime import timedelta

    from fluxa_integrity.backup.objectives import rpo_status

    uri, client, db, store, repo, _ = setup
    phase(db, 0)
    archive_oplog(uri, store, repo, ONCE)
    newest_entry = ac.coverage(store)[0][-1].last_wall
    time.sleep(1.5)
    archive_oplog(uri, store, repo, ONCE)  # nothing new: it records that it is caught up
    point = {r["data_class"]: r for r in rpo_status(store, default_policy(), "app")}["chat_history"]
    assert point["source"] == "oplog archive"
    assert point["recoverable_point"] >= newest_entry + timedelta(seconds=1.4)

    db.notes.insert_one({"_id": "late"})  # written but not archived yet
    written = datetime.now(UTC)
    again = {r["data_class"]: r for r in rpo_status(store, default_policy(), "app")}["chat_history"]
    assert again["recoverable_point"] == point["recoverable_point"] < written


def test_caught_up_archive_restores_a_later_moment_without_the_live_oplog(setup):
    """A wall-clock point after the archive's last entry: once the archiver recorded that nothing
    newer came until past that point, the archive alone proves it - the live oplog (lost with the
    server in a disaster) is not needed."""
    uri, client, db, store, repo, _ = setup
    phase(db, 0)
    copy, at = mark(db)  # `at` is after every write of phase 0
    archive_oplog(uri, store, repo, ONCE)
    time.sleep(2.5)  # idle: nothing is written
    archive_oplog(uri, store, repo, ONCE)  # finds nothing new: records being caught up, > at + 2 s
    client.local["oplog.rs"].delete_many({})  # the live oplog is gone
    res = restore_to_point(uri, store, "app", "from_archive", at)
    assert hashes(client.from_archive) == copy and [s["kind"] for s in res["sources"]] == ["slice"]


def test_server_errors_during_planning_or_replay_say_rerun_and_the_rerun_completes(setup, monkeypatch):
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

    from fluxa_integrity.restore import pitr

    uri, client, db, store, repo, _ = setup
    phase(db, 0)
    copy, at = mark(db)

    def unreachable(*a, **k):
        raise ServerSelectionTimeoutError("localhost:1: [Errno 111] Connection refused")

    with monkeypatch.context() as m:
        m.setattr(pitr, "plan_chain", unreachable)  # the server is gone before the chain is planned
        with pytest.raises(FluxaError, match="planning the point-in-time restore") as e:
            restore_to_point(uri, store, "app", "rerun", at)
        assert "rerun the same command" in e.value.hint and "rerun" not in client.list_database_names()

    def dies(self, entry):
        raise AutoReconnect("connection closed")

    with monkeypatch.context() as m:
        m.setattr(pitr.Replayer, "apply", dies)  # the server goes away mid-replay
        with pytest.raises(FluxaError, match="failed during the replay: connection closed") as e:
            restore_to_point(uri, store, "app", "rerun", at)
        assert "rerun the same command" in e.value.hint
    res = restore_to_point(uri, store, "app", "rerun", at)  # as the hint says
    assert hashes(client.rerun) == copy and res["replay"]["upserts"] > 0


def test_a_damaged_duplicate_slice_is_passed_over_for_its_intact_twin(setup):
    import shutil

    from fluxa_integrity.backup.files import file_sha256

    uri, client, db, store, repo, _ = setup
    phase(db, 0)
    copy, at = mark(db)
    sl = archive_oplog(uri, store, repo, ONCE).slices[0]
    row = ac.slices(store)[-1]
    original = ac.slice_path(row)
    assert str(original) == sl["path"]
    twin = original.with_name("twin-" + original.name)  # two archivers once wrote the same range
    shutil.copyfile(original, twin)
    ac.add_slice(store, repo, twin, first=ac.first_ts(row), last=ac.last_ts(row), prev=ac.prev_ts(row),
                 first_wall=row.first_wall, last_wall=row.last_wall, count=row.count, size=row.size,
                 raw_bytes=row.raw_bytes, sha256=row.sha256)
    good = original.read_bytes()
    for n, (bad, intact) in enumerate(((original, twin), (twin, original))):  # whichever one is preferred
        bad.write_bytes(good[:20] + bytes([good[20] ^ 0xFF]) + good[21:])
        assert file_sha256(bad) != row.sha256 and file_sha256(intact) == row.sha256
        res = restore_to_point(uri, store, "app", f"dup{n}", at)
        assert hashes(client[f"dup{n}"]) == copy
        assert str(intact) in [s["source"] for s in res["sources"]]
        assert str(bad) not in [s["source"] for s in res["sources"]]
        bad.write_bytes(good)
    # both damaged: refused, naming them
    for p in (original, twin):
        p.write_bytes(good[:20] + bytes([good[20] ^ 0xFF]) + good[21:])
    with pytest.raises(FluxaError, match="failed its checksum") as err:
        restore_to_point(uri, store, "app", "dup_none", at)
    assert str(original) in err.value.message and str(twin) in err.value.message
