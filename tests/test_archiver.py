"""The oplog archiver: slices append without duplicates or overlap, gaps are detected and
recorded, size-bounded slices, the CLI (--once, oplog-status) and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pymongo
import pytest

from fluxa_integrity.backup import archive_catalog as ac
from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
from fluxa_integrity.backup.files import iter_raw_documents
from fluxa_integrity.mongo.oplog_guard import GUARD_NS
from fluxa_integrity.store import open_store

ONCE = ArchiveOptions(once=True, poll_ms=200)


@pytest.fixture()
def server(private_server):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    yield uri, client
    client.close()


def archived_ts(store) -> list:
    import bson

    out = []
    for row in ac.slices(store):
        out += [bson.decode(raw)["ts"] for raw in iter_raw_documents(ac.slice_path(row), "zstd")]
    return out


def test_once_twice_appends_without_duplicates(server, tmp_path):
    uri, client = server
    store = open_store()
    client.app.c.insert_many([{"_id": i} for i in range(50)])
    first = archive_oplog(uri, store, tmp_path / "repo", ONCE)
    assert first.entries == 50 and len(first.slices) == 1 and not first.gaps
    again = archive_oplog(uri, store, tmp_path / "repo", ONCE)  # nothing new: no empty slice
    assert again.entries == 0 and again.slices == []
    client.app.c.update_many({}, {"$set": {"x": 1}})
    client.app.c.delete_many({"_id": {"$lt": 10}})
    second = archive_oplog(uri, store, tmp_path / "repo", ONCE)
    assert second.entries == 60
    rows = ac.slices(store)
    assert len(rows) == 2 and ac.prev_ts(rows[1]) == ac.last_ts(rows[0])  # chained, no overlap
    # the archiver's oplog guard notes (mongo/oplog_guard.py) are not archived
    live = [e["ts"] for e in client.local["oplog.rs"].find({"ns": {"$ne": GUARD_NS}}, {"ts": 1})]
    assert archived_ts(store) == live  # every entry exactly once, in order
    windows, gaps = ac.coverage(store)
    assert len(windows) == 1 and windows[0].entries == 110 and gaps == []


def test_size_bound_closes_slices(server, tmp_path):
    uri, client = server
    store = open_store()
    client.app.c.insert_many([{"_id": i, "pad": "x" * 1000} for i in range(60)])
    rep = archive_oplog(uri, store, tmp_path / "repo", ArchiveOptions(once=True, poll_ms=200, max_slice_bytes=20_000))
    assert len(rep.slices) >= 3 and sum(s["count"] for s in rep.slices) == 60
    assert len(ac.coverage(store)[0]) == 1


def test_oplog_rolled_past_the_archive_is_a_recorded_gap(server, tmp_path, cli):
    uri, client = server
    store = open_store()
    client.app.c.insert_many([{"_id": i} for i in range(20)])
    archive_oplog(uri, store, tmp_path / "repo", ONCE)
    client.app.c.insert_many([{"_id": i} for i in range(20, 40)])
    # simulate the capped oplog rolling over: everything up to _id 30 is gone, the archive's last entry too
    client.local["oplog.rs"].delete_many({"o._id": {"$lt": 30}})
    rep = archive_oplog(uri, store, tmp_path / "repo", ONCE)
    assert len(rep.gaps) == 1 and "rolled past" in rep.gaps[0]["reason"]
    # what is left (FerretDB logs the deletes too), but the guard notes
    assert rep.entries == client.local["oplog.rs"].count_documents({"ns": {"$ne": GUARD_NS}})
    windows, gaps = ac.coverage(store)
    assert len(windows) == 2 and len(gaps) == 1 and "rolled past" in gaps[0]["reason"]
    out = cli("backup", "oplog-status", "--repo", str(tmp_path / "repo"), "--json")
    assert out.code == 1 and out.json()["broken"] and out.json()["gaps"][0]["after"] == rep.gaps[0]["after"]
    human = cli("backup", "oplog-status", "--repo", str(tmp_path / "repo"))
    assert "GAP after" in human.stderr and "broken" in human.stderr


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """Read the process's stderr until a line containing ``text`` (the readiness signal); the
    rest of stderr keeps being drained by a thread so the process never blocks on a full pipe."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    def pump():
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if text in line:
            proc._rest_of_stderr = lines  # type: ignore[attr-defined]
            return seen
    proc.kill()
    raise AssertionError(f"no {text!r} on stderr: {''.join(seen)}")


def test_cli_once_and_sigterm_closes_the_slice(server, tmp_path, cli, fluxa_home):
    """The follower says on stderr when its SIGTERM handler is installed and it follows the oplog;
    the test waits for that line (never a sleep), writes, and stops it: every write made before
    the signal is archived and the open slice closed. Checked passing with both cores kept busy
    by two `python3 -c 'while True: pass'` processes."""
    uri, client = server
    client.app.c.insert_many([{"_id": i} for i in range(5)])
    out = cli("backup", "archive-oplog", "--once", "--repo", str(tmp_path / "repo"), "--uri", uri, "--json")
    assert out.code == 0, out.stderr
    assert out.json()["entries"] == 5 and len(out.json()["slices"]) == 1
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "backup", "archive-oplog", "--repo",
                             str(tmp_path / "repo"), "--uri", uri, "--slice-seconds", "600", "--json"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_line(proc, "archiver ready")
    client.app.c.insert_many([{"_id": i} for i in range(5, 12)])  # acknowledged before the signal
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout
    assert __import__("json").loads(stdout)["entries"] == 7  # the open slice was closed, not lost
    store = open_store()
    assert [r.count for r in ac.slices(store)] == [5, 7] and not list((tmp_path / "repo" / "oplog").glob(".writing-*"))
