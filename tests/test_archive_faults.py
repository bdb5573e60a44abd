"""Oplog archiver faults (issue 9, items 3, 4, 7): a full disk, two archivers at once and the
duplicate rows they left, a dead archiver's lock, a moved repository, damaged slices found by
`oplog-status --deep`. Ground truth is the live oplog: the archive must hold each entry once."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys

import bson
import pytest

from fluxa_integrity.backup import archive_catalog as ac
from fluxa_integrity.backup.archive_lock import ArchiveLock, ArchiverBusy
from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
from fluxa_integrity.backup.files import _HashingSink, iter_raw_documents
from fluxa_integrity.backup.slices import SliceWriter
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.mongo.oplog_guard import GUARD_NS
from fluxa_integrity.store import open_store
from test_archiver import ONCE, server, wait_for_line  # noqa: F401 (server is a fixture)


def live_ts(client) -> list:
    # the archiver's oplog guard notes (mongo/oplog_guard.py) are not archived
    return [e["ts"] for e in client.local["oplog.rs"].find({"ns": {"$ne": GUARD_NS}}, {"ts": 1})]


def archived_ts(store) -> list:
    """Every archived entry's ts, each slice once (distinct files), in ts order."""
    seen, out = set(), []
    for row in ac.slices(store):
        if row.path not in seen:
            seen.add(row.path)
            out += [bson.decode(raw)["ts"] for raw in iter_raw_documents(ac.slice_path(row), "zstd")]
    return sorted(out)


# -- item 3: a full disk ------------------------------------------------------------------------

def test_full_disk_exits_2_with_no_partial_file_and_nothing_cataloged(server, tmp_path, fluxa_home):
    """A real full disk: the repository is a 128 KiB tmpfs mounted in a private mount namespace
    (`unshare -m`, needs root; skipped otherwise - the next test simulates ENOSPC instead). The
    oplog holds ~400 KB of incompressible entries, so the slice cannot fit."""
    uri, client = server
    client.app.c.insert_many([{"_id": i, "pad": os.urandom(2000)} for i in range(200)])
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("mounting a small tmpfs needs root and unshare")
    repo = tmp_path / "small"
    repo.mkdir()
    script = ('repo=$1; shift; mount -t tmpfs -o size=128k tmpfs "$repo" || exit 99; "$@"; rc=$?; '
              'echo "LEFT:$(ls -A "$repo/oplog" 2>/dev/null | tr "\\n" " ")" >&2; exit $rc')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(repo), sys.executable, "-m",
                           "fluxa_integrity", "backup", "archive-oplog", "--once", "--repo", str(repo), "--uri", uri,
                           "--json"], capture_output=True, text=True, env={**os.environ, "FLUXA_HOME": str(fluxa_home)},
                          timeout=300)
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    err = __import__("json").loads(proc.stdout)
    assert "No space left on device" in err["error"] and "free space" in err["hint"]
    left = proc.stderr.split("LEFT:")[1].split()
    assert left == [".archiver.lock"]  # no .writing-* file, no slice
    assert ac.slices(open_store()) == []  # nothing cataloged


def test_enospc_mid_archive_keeps_closed_slices_and_a_rerun_completes(server, tmp_path, monkeypatch):
    """Simulated ENOSPC at the write call (files._HashingSink.write raises it once a byte budget is
    spent), so slices closed before the disk filled exist: they stay cataloged and whole, the one
    being written is discarded, and a rerun with space again archives the rest exactly once."""
    uri, client = server
    client.app.c.insert_many([{"_id": i, "pad": os.urandom(1000)} for i in range(120)])
    store = open_store()
    repo = tmp_path / "repo"
    budget = {"left": 60_000}
    real_write = _HashingSink.write

    def full_disk_write(self, b):
        budget["left"] -= len(b)
        if budget["left"] < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.f.name))
        return real_write(self, b)

    monkeypatch.setattr(_HashingSink, "write", full_disk_write)
    with pytest.raises(FluxaError) as err:
        archive_oplog(uri, store, repo, ArchiveOptions(once=True, poll_ms=200, max_slice_bytes=20_000))
    assert "No space left on device" in err.value.message and "nothing of it is cataloged" in err.value.hint
    kept = ac.slices(store)
    assert kept, "slices closed before the disk filled stay"
    assert not list((repo / "oplog").glob(".writing-*"))
    assert sorted(p.name for p in (repo / "oplog").glob("*.bson.zst")) == sorted(r.path.split("/")[-1] for r in kept)
    assert ac.coverage(store, deep=True)[1] == []  # every cataloged slice is whole (sha256 checked)
    monkeypatch.setattr(_HashingSink, "write", real_write)  # space again
    archive_oplog(uri, store, repo, ONCE)
    assert archived_ts(store) == live_ts(client)  # each entry exactly once


# -- item 4: one archiver per repository ----------------------------------------------------------

def test_second_archiver_is_refused_naming_the_first(server, tmp_path, cli, fluxa_home):
    uri, client = server
    client.app.c.insert_many([{"_id": i} for i in range(20)])
    repo = tmp_path / "repo"
    follower = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "backup", "archive-oplog", "--repo", str(repo),
                                 "--uri", uri, "--slice-seconds", "600", "--json"],
                                env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(follower, "archiver ready")
        client.app.c.insert_many([{"_id": i} for i in range(20, 30)])
        once = cli("backup", "archive-oplog", "--once", "--repo", str(repo), "--uri", uri, "--json")
        assert once.code == 2, once.stdout + once.stderr
        assert "another oplog archiver" in once.json()["error"] and f"pid {follower.pid}" in once.json()["error"]
        assert "since" in once.json()["error"] and "only one archiver" in once.json()["hint"]
    finally:
        follower.send_signal(signal.SIGTERM)
        stdout, _ = follower.communicate(timeout=60)
    assert follower.returncode == 0
    store = open_store()
    rows = ac.slices(store)
    assert len({(r.first_t, r.first_i) for r in rows}) == len(rows)  # no duplicate rows
    assert archived_ts(store) == live_ts(client)
    again = cli("backup", "archive-oplog", "--once", "--repo", str(repo), "--uri", uri, "--json")
    assert again.code == 0, again.stderr  # the lock went with the follower


def test_a_dead_archivers_lock_is_taken_over(server, tmp_path):
    uri, client = server
    client.app.c.insert_many([{"_id": i} for i in range(5)])
    repo = tmp_path / "repo"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, pathlib\n"
                               "from fluxa_integrity.backup.archive_lock import ArchiveLock\n"
                               "lock = ArchiveLock(pathlib.Path(sys.argv[1])).acquire(); print('locked', flush=True)\n"
                               "time.sleep(600)", str(repo)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ArchiverBusy, match=f"pid {holder.pid}"):
        archive_oplog(uri, open_store(), repo, ONCE)
    holder.kill()  # SIGKILL: no cleanup, the label in the lock file still names it
    holder.wait()
    messages: list[str] = []
    rep = archive_oplog(uri, open_store(), repo, ONCE, log=messages.append)
    assert rep.entries == 5
    assert any(f"took over the archiver lock of pid {holder.pid}" in m and "is gone" in m for m in messages)


def test_two_archivers_in_one_process_exclude_each_other(tmp_path):
    with ArchiveLock(tmp_path):
        with pytest.raises(ArchiverBusy, match=f"pid {os.getpid()}"):
            ArchiveLock(tmp_path).acquire()
    with ArchiveLock(tmp_path):  # released: free again
        pass


def _write_slice(store, repo, entries, prev):
    w = SliceWriter(repo)
    for e in entries:
        w.add(e.raw, e["ts"], e.get("wall"))
    path, sha, size = w.close()
    return ac.add_slice(store, repo, path, first=w.first, last=w.last, prev=prev, first_wall=w.first_wall,
                        last_wall=w.last_wall, count=w.count, size=size, raw_bytes=w.raw_bytes, sha256=sha)


def test_duplicate_rows_already_written_are_not_a_gap(server, tmp_path, cli):
    """What two archivers at once wrote before the lock: one archived e1..e30 in one slice, the
    other e1..e15 and e16..e30 (same entries, other boundaries), plus a row cataloged twice. The
    old coverage reported a gap whose 'after' (e30) was later than its 'before' (e1)."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    uri, client = server
    client.app.c.insert_many([{"_id": i} for i in range(30)])
    store = open_store()
    repo = tmp_path / "repo"
    entries = list(client.local.get_collection("oplog.rs", CodecOptions(RawBSONDocument, tz_aware=True)).find())
    n = len(entries)
    _write_slice(store, repo, entries, None)
    _write_slice(store, repo, entries[: n // 2], None)
    _write_slice(store, repo, entries[n // 2:], entries[n // 2 - 1]["ts"])
    row = ac.slices(store)[0]
    ac.add_slice(store, repo, ac.slice_path(row), first=ac.first_ts(row), last=ac.last_ts(row), prev=None,
                 first_wall=row.first_wall, last_wall=row.last_wall, count=row.count, size=row.size,
                 raw_bytes=row.raw_bytes, sha256=row.sha256)
    windows, gaps = ac.coverage(store)
    assert gaps == [] and len(windows) == 1
    assert (windows[0].first, windows[0].last) == (entries[0]["ts"], entries[-1]["ts"])
    assert windows[0].entries == n and len(windows[0].duplicates) == 3
    out = cli("backup", "oplog-status", "--json")
    assert out.code == 0 and out.json()["gaps"] == [] and len(out.json()["windows"][0]["duplicate_slices"]) == 3
    # the archiver carries on after the newest of them, and a point-in-time replay reads each entry once
    client.app.c.insert_many([{"_id": i} for i in range(30, 40)])
    rep = archive_oplog(uri, store, repo, ONCE)
    assert rep.entries == 10 and ac.coverage(store)[1] == []
    from fluxa_integrity.backup.oplog_sources import plan_chain, read_chain

    chain = plan_chain(store, None, None, ac.just_before(entries[0]["ts"]), None)
    got = [e["ts"] for e in read_chain(chain, ac.just_before(entries[0]["ts"]), None, [])]
    assert got == live_ts(client)


# -- item 7: a moved repository, and --deep --------------------------------------------------------

def test_changing_backup_repo_reports_the_gap_at_once(server, tmp_path, cli, fluxa_home):
    uri, client = server
    store = open_store()
    client.app.c.insert_many([{"_id": i} for i in range(10)])
    archive_oplog(uri, store, tmp_path / "repo1", ONCE)
    client.app.c.insert_many([{"_id": i} for i in range(10, 20)])
    # the oplog still reaches back to repo1's last entry: the new archive continues it, no gap
    messages: list[str] = []
    rep = archive_oplog(uri, store, tmp_path / "repo2", ONCE, log=messages.append)
    assert rep.gaps == [] and any("continues without a gap" in m for m in messages)
    windows, gaps = ac.coverage(store)
    assert gaps == [] and len(windows) == 1 and windows[0].last == live_ts(client)[-1]
    # backup_repo changes again while the oplog rolled past repo2's last entry
    last2 = ac.last_ts(ac.last_archived(store, tmp_path / "repo2"))
    client.app.c.insert_many([{"_id": i} for i in range(20, 30)])
    # a roll-over takes the archivers' guard notes with it
    client.local["oplog.rs"].delete_many({"$or": [{"o._id": {"$lt": 25}}, {"ns": GUARD_NS}]})
    oldest = live_ts(client)[0]
    fluxa_home.mkdir(parents=True, exist_ok=True)
    (fluxa_home / "config.yaml").write_text(f"backup_repo: {tmp_path / 'repo3'}\n")
    out = cli("backup", "archive-oplog", "--once", "--uri", uri, "--json")
    assert out.code == 1, out.stderr
    gap = out.json()["gaps"][0]
    assert (gap["after"], gap["before"]) == (ac.ts_text(last2), ac.ts_text(oldest))
    assert "backup_repo changed" in gap["reason"] and str(tmp_path / "repo2") in gap["reason"]
    for args in ((), ("--repo", str(tmp_path / "repo3"))):  # the whole archive, and the new repository alone
        status = cli("backup", "oplog-status", "--json", *args)
        assert status.code == 1 and [(g["after"], g["before"]) for g in status.json()["gaps"]] == \
            [(ac.ts_text(last2), ac.ts_text(oldest))], args


def test_oplog_status_deep_checks_slice_checksums(server, tmp_path, cli):
    uri, client = server
    client.app.c.insert_many([{"_id": i, "pad": "x" * 200} for i in range(40)])
    store = open_store()
    repo = tmp_path / "repo"
    archive_oplog(uri, store, repo, ArchiveOptions(once=True, poll_ms=200, max_slice_bytes=4_000))
    rows = ac.slices(store)
    assert len(rows) >= 3
    victim = ac.slice_path(rows[1])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the checksum tells
    victim.write_bytes(bytes(data))
    shallow = cli("backup", "oplog-status", "--json")
    assert shallow.code == 0 and shallow.json()["deep"] is False
    deep = cli("backup", "oplog-status", "--deep", "--json")
    assert deep.code == 1 and deep.json()["broken"]
    gap = deep.json()["gaps"][0]
    assert gap["file"] == rows[1].path and "checksum" in gap["reason"]
    assert (gap["after"], gap["before"]) == (ac.ts_text(ac.last_ts(rows[0])), ac.ts_text(ac.first_ts(rows[2])))
    human = cli("backup", "oplog-status", "--deep")
    assert "GAP after" in human.stderr and "sha256" in human.stderr


def test_a_slice_the_catalog_refuses_is_removed_and_the_error_names_the_store(server, tmp_path, monkeypatch):
    uri, client = server
    client.app.c.insert_many([{"_id": i} for i in range(20)])
    store, repo = open_store(), tmp_path / "repo"

    def store_down(*args, **kwargs):
        raise RuntimeError("database is locked")

    with monkeypatch.context() as m:
        m.setattr(ac, "add_slice", store_down)
        with pytest.raises(FluxaError) as err:
            archive_oplog(uri, store, repo, ONCE)
    assert "could not be recorded in the catalog: database is locked" in err.value.message
    assert "rerun the archiver" in err.value.hint
    assert not list((repo / "oplog").glob("*.bson.zst")) and not list((repo / "oplog").glob(".writing-*"))
    # the store is back: the rerun archives everything exactly once
    archive_oplog(uri, store, repo, ONCE)
    assert archived_ts(store) == live_ts(client)


def test_one_repository_spelled_two_ways_is_one_archive(server, tmp_path, monkeypatch):
    from fluxa_integrity.backup.repository import resolve_repo

    uri, client = server
    client.app.c.insert_many([{"_id": i} for i in range(10)])
    store = open_store()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_repo("repo") == tmp_path / "repo" == resolve_repo(str(tmp_path / "elsewhere" / ".." / "repo"))
    first = archive_oplog(uri, store, "repo", ONCE)  # relative, as typed in a shell
    client.app.c.insert_many([{"_id": 100 + i} for i in range(10)])
    monkeypatch.chdir(tmp_path / "elsewhere")  # another cwd, the same repository spelled another way
    second = archive_oplog(uri, store, str(tmp_path / "elsewhere" / ".." / "repo"), ONCE)
    assert first.slices and second.slices and second.gaps == []
    assert {r.repo for r in ac.slices(store)} == {str(tmp_path / "repo")}
    assert archived_ts(store) == live_ts(client)  # each entry once: the second run continued the first
