"""The local server: lifecycle, data kept across restarts, oplog tailing, clear errors."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from datetime import datetime, timedelta, timezone

import pymongo
import pytest

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.mongo.devserver import DevServer, ferretdb_source_dir, free_port
from waiting import DEADLINE_S, wait_until

needs_own_server = pytest.mark.skipif(bool(os.environ.get("FLUXA_TEST_MONGODB_URI")),
                                      reason="needs the project's own FerretDB")


@needs_own_server
def test_start_stop_restart_keeps_data(private_server):
    st = private_server.status()
    assert st.running and st.uri.endswith(f":{st.port}/")
    c = pymongo.MongoClient(st.uri, serverSelectionTimeoutMS=3000)
    c.keep.things.insert_many([{"_id": i, "v": i * i} for i in range(100)])
    c.close()
    assert private_server.stop() is True
    assert private_server.status().running is False
    assert private_server.stop() is False  # stopping twice is harmless
    st2 = private_server.start()
    assert st2.port == st.port  # restarts on the port it had
    c = pymongo.MongoClient(st2.uri, serverSelectionTimeoutMS=3000)
    assert c.keep.things.count_documents({}) == 100
    assert c.keep.things.find_one({"_id": 7})["v"] == 49
    assert "oplog.rs" in c.local.list_collection_names()
    assert c.local.command("collStats", "oplog.rs").get("capped") is True
    c.close()


@needs_own_server
def test_start_twice_returns_running_server(private_server):
    again = private_server.start()
    assert again.pid == private_server.status().pid


@needs_own_server
def test_busy_port_is_a_clear_error(tmp_path, ferretdb_binary):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(FluxaError) as err:
            DevServer(tmp_path / "busy").start(port=port, progress=lambda m: None)
    assert f"port {port}" in err.value.message and "--port" in err.value.hint


def test_missing_go_is_a_clear_error(tmp_path, monkeypatch):
    src = tmp_path / "ferretdb-src"
    src.mkdir()
    for name in ("go.mod", "go.sum", "main.go"):
        shutil.copy(ferretdb_source_dir() / name, src / name)
    monkeypatch.setenv("FLUXA_FERRETDB_SRC", str(src))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(FluxaError) as err:
        DevServer(tmp_path / "h").start(port=free_port(), progress=lambda m: None)
    assert "Go toolchain" in err.value.message and "golang" in err.value.hint


def test_failed_build_is_a_clear_error(tmp_path, monkeypatch):
    src = tmp_path / "ferretdb-src"
    src.mkdir()
    for name in ("go.mod", "go.sum"):
        shutil.copy(ferretdb_source_dir() / name, src / name)
    (src / "main.go").write_text("package main\n\nfunc main() { this is not go }\n")
    monkeypatch.setenv("FLUXA_FERRETDB_SRC", str(src))
    with pytest.raises(FluxaError) as err:
        DevServer(tmp_path / "h").start(port=free_port(), progress=lambda m: None)
    assert "building the local server failed" in err.value.message
    assert "main.go" in err.value.message  # the compiler's complaint is shown
    assert not list((src / "bin").glob("ferretdb-*"))  # no half-written binary left behind


def test_oplog_records_insert_update_delete(client, db):
    """Every write is tailable: open a tailable cursor, write, read the three entries back."""
    oplog = client.local["oplog.rs"]
    last = next(oplog.find().sort("$natural", -1).limit(1), None)
    start = last["ts"] if last else None
    db.items.insert_one({"_id": "a", "n": 1})
    db.items.update_one({"_id": "a"}, {"$set": {"n": 2}})
    db.items.delete_one({"_id": "a"})
    flt = {"ns": f"{db.name}.items"}
    if start is not None:
        flt["ts"] = {"$gt": start}
    cursor = oplog.find(flt, cursor_type=pymongo.CursorType.TAILABLE_AWAIT).max_await_time_ms(500)
    ops, deadline = [], time.monotonic() + DEADLINE_S
    while len(ops) < 3 and cursor.alive and time.monotonic() < deadline:
        ops.extend(cursor)  # a tailable cursor stops at the end of what exists, and stays open
    assert [e["op"] for e in ops] == ["i", "u", "d"]
    assert ops[0]["o"] == {"_id": "a", "n": 1}
    assert ops[1]["o2"] == {"_id": "a"}
    # FerretDB writes {$v:1, $set: whole doc}; MongoDB 5+ writes {$v:2, diff: {u: {n: 2}}}
    assert ops[1]["o"].get("$set", {}).get("n") == 2 or ops[1]["o"].get("diff", {}).get("u") == {"n": 2}
    assert ops[2]["o"] == {"_id": "a"}
    assert ops[0]["ts"] < ops[1]["ts"] < ops[2]["ts"]


@needs_own_server
def test_server_trims_the_oplog_to_its_entry_cap(tmp_path, ferretdb_binary):
    """Embedded FerretDB never trims capped collections itself; our server does, keeping the newest."""
    server = DevServer(tmp_path / "trim-devdb")
    status = server.start(port=free_port(), oplog_entries=500, oplog_trim_s=0.5, progress=lambda msg: None)
    try:
        c = pymongo.MongoClient(status.uri)
        c.app.t.insert_many([{"_id": i} for i in range(3000)])
        oplog = c.local["oplog.rs"]
        wait_until(lambda: oplog.estimated_document_count() <= 500, "the trimmer to cut the oplog to 500 entries")
        ids = [e["o"]["_id"] for e in oplog.find({"ns": "app.t"})]
        assert len(ids) == 500 and ids == list(range(2500, 3000))
    finally:
        server.stop()


def _trim_and_wait(server: DevServer, pattern: str) -> str:
    """SIGUSR1 the server and wait for the line its requested trim prints; that line."""
    before = server.log_file.read_text().count("oplog trim (requested)")
    server.trim_oplog_now()
    lines = wait_until(lambda: (t := server.log_file.read_text()).count("oplog trim (requested)") > before and t,
                       "the requested trim to report", poll=0.1)
    last = [ln for ln in lines.splitlines() if "oplog trim (requested)" in ln][-1]
    assert re.search(pattern, last), last
    return last


@needs_own_server
def test_an_oplog_that_outgrew_its_cap_is_trimmed_to_it_at_once(tmp_path, ferretdb_binary):
    """FerretDB's compact deletes at most 32766 entries at once (an oplog that outgrew its cap by
    more could never be trimmed, and was recreated empty); the server now trims to the cap in one
    SQLite statement, keeping the newest entries."""
    server = DevServer(tmp_path / "overflow-devdb")
    # no trim by the clock: the test says when (SIGUSR1)
    status = server.start(port=free_port(), oplog_entries=100, oplog_trim_s=3600, progress=lambda msg: None)
    try:
        c = pymongo.MongoClient(status.uri)
        c.app.t.insert_many([{"_id": i} for i in range(40_000)])  # > 32766 over the cap
        _trim_and_wait(server, r"no guard holds the oplog; \d+ entries past its cap deleted")
        oplog = c.local["oplog.rs"]
        assert oplog.count_documents({}) == 100
        assert [e["o"]["_id"] for e in oplog.find({"ns": "app.t"})] == list(range(39_900, 40_000))
        assert "recreated it empty" not in server.log_file.read_text()
    finally:
        server.stop()


@needs_own_server
def test_guards_keep_what_the_archive_lacks_and_oplog_status_sees_a_gap_at_once(tmp_path, ferretdb_binary, cli):
    """Deliverable 8 of issue 11: more writes than the oplog cap between two archiver polls are all
    archived (the archiver's guard holds them); once archived the live oplog is trimmed short; and
    with no guard holding it, `backup oplog-status` reports the gap before any archiver runs."""
    from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
    from fluxa_integrity.mongo.oplog_guard import GUARDS, guards
    from fluxa_integrity.store import open_store

    server = DevServer(tmp_path / "guard-devdb")
    # the cheap-tail setting: what every reader has read is trimmed down to 5 entries
    status = server.start(port=free_port(), oplog_entries=200, oplog_trim_s=3600, oplog_keep=5,
                          progress=lambda msg: None)
    repo = tmp_path / "repo"
    try:
        c = pymongo.MongoClient(status.uri)
        oplog = c.local["oplog.rs"]
        c.app.t.insert_many([{"_id": i} for i in range(50)])
        first = archive_oplog(status.uri, open_store(), repo, ArchiveOptions(once=True, slice_seconds=0.1))
        assert first.entries >= 50 and not first.gaps
        held = [g for g in guards(c) if g["_id"] == f"archiver:{repo}"]
        assert held and held[0]["ts"] == first.last  # the guard sits on the last archived entry

        c.app.t.insert_many([{"_id": i} for i in range(50, 1050)])  # 5x the cap before the next poll
        _trim_and_wait(server, r"guards hold the oplog from")
        assert oplog.count_documents({"ns": "app.t", "o._id": {"$gte": 50}}) == 1000  # nothing unarchived trimmed
        r = cli("backup", "oplog-status", "--uri", status.uri, "--json")
        assert r.code == 0, r.stdout + r.stderr
        assert r.json()["live_checked"] == status.uri and not r.json()["gaps"]

        second = archive_oplog(status.uri, open_store(), repo, ArchiveOptions(once=True, slice_seconds=0.1))
        assert not second.gaps and second.entries == 1000  # every write, no gap, no duplicate
        _trim_and_wait(server, r"guards hold the oplog from")
        # archived entries go at once: the live oplog keeps the last archived entry and the newest 5
        assert oplog.count_documents({}) <= 5
        assert oplog.find_one({"ns": "app.t", "ts": second.last}) is not None

        # the archiver stops for good: its guard lapses (here: stale by an hour) and the cap applies
        c.local[GUARDS].update_many({"_id": {"$ne": "__settings__"}},
                                    {"$set": {"at": datetime.now(timezone.utc) - timedelta(hours=1)}})
        c.app.t.insert_many([{"_id": i} for i in range(1050, 1450)])
        _trim_and_wait(server, r"no guard holds the oplog")
        assert oplog.count_documents({}) == 200  # the cap
        r = cli("backup", "oplog-status", "--uri", status.uri, "--json")
        assert r.code == 1, r.stdout + r.stderr
        live = [g for g in r.json()["gaps"] if g.get("live")]
        assert len(live) == 1 and live[0]["after"] == f"{second.last.time}:{second.last.inc}"
        r = cli("backup", "oplog-status", "--uri", status.uri)
        assert r.code == 1 and "no longer reaches back to the archive" in r.stdout + r.stderr
    finally:
        server.stop()


@needs_own_server
def test_by_default_guards_only_extend_the_oplog(tmp_path, ferretdb_binary):
    """Without -oplog-keep the cap still says how much stays once every reader has read it: guards
    keep more (the unread entries), never less."""
    from fluxa_integrity.mongo.oplog_guard import OplogGuard

    server = DevServer(tmp_path / "keep-devdb")
    status = server.start(port=free_port(), oplog_entries=100, oplog_trim_s=3600, progress=lambda msg: None)
    try:
        c = pymongo.MongoClient(status.uri)
        oplog = c.local["oplog.rs"]
        c.app.t.insert_many([{"_id": i} for i in range(300)])
        guard = OplogGuard(c, "reader")
        guard.hold(oplog.find_one({"ns": "app.t", "o._id": 50})["ts"], force=True)
        _trim_and_wait(server, r"guards hold the oplog from")
        assert oplog.find_one({"ns": "app.t", "o._id": 49}) is None  # read by every reader and past the cap
        assert oplog.count_documents({"ns": "app.t"}) == 250  # unread: kept beyond the cap of 100
        guard.hold(oplog.find_one({"ns": "app.t", "o._id": 299})["ts"], force=True)
        _trim_and_wait(server, r"guards hold the oplog from")
        assert oplog.count_documents({}) == 100  # all read: the cap's worth stays
    finally:
        server.stop()


@needs_own_server
def test_a_server_tied_to_a_process_stops_when_that_process_is_killed(tmp_path, ferretdb_binary):
    """What keeps a SIGKILLed test run from leaving its FerretDB behind: the server watches the
    pid it was given and stops itself once that process is gone."""
    import subprocess

    owner = subprocess.Popen(["sleep", "600"])
    server = DevServer(tmp_path / "tied-devdb")
    status = server.start(port=free_port(), exit_with_pid=owner.pid, progress=lambda msg: None)
    try:
        pymongo.MongoClient(status.uri, serverSelectionTimeoutMS=3000).admin.command("ping")
        assert server.status().running
        owner.kill()  # not reaped: a zombie still answers kill -0, and must count as gone
        wait_until(lambda: not server.status().running, "the server to stop after its owner was killed")
        owner.wait()
        assert "is gone: stopping" in server.log_file.read_text()
    finally:
        owner.kill()
        server.stop()


def test_the_oplog_shows_entries_in_commit_order_under_concurrent_writers(client, db):
    """FerretDB stamps an oplog entry's ts and record id before it takes SQLite's write lock, so
    concurrent writers used to commit batches out of order: a batch with lower ts landed after a
    newer one, and a tailable cursor or a ``ts > position`` reader (the archiver, continuous
    validation) never saw it - the archive lost whole insert batches of a `fluxa generate` under
    `serve` (benchmarks/soak_serve_pitr.py). The server's trigger re-stamps each entry at commit."""
    import threading

    uri = client.address
    errors: list = []

    def writer(k: int) -> None:
        c = pymongo.MongoClient(*uri)
        try:
            for b in range(10):
                c[db.name].c.insert_many([{"_id": f"{k}-{b}-{i}", "k": k} for i in range(100)])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entries = list(client.local["oplog.rs"].find({"ns": f"{db.name}.c"}, {"ts": 1, "o._id": 1}))  # record order
    assert len(entries) == 8000 and {e["o"]["_id"] for e in entries} == {f"{k}-{b}-{i}" for k in range(8)
                                                                          for b in range(10) for i in range(100)}
    behind = [(a["ts"], b["ts"]) for a, b in zip(entries, entries[1:]) if b["ts"] <= a["ts"]]
    assert behind == [], f"{len(behind)} entries follow a newer one in record order, e.g. {behind[:3]}"
