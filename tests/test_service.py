"""`fluxa-integrity serve` (issue 11, deliverable 1): jobs from the policy on a compressed clock,
the job history, leases between two real processes, kill -9 and restart (coalesced, nothing
doubled), and bad input (an impossible schedule, an unreachable server, a full disk).

Every serve here is a real subprocess on a private FerretDB; tests wait for its readiness line
and for history rows, never for fixed times. ``--time-scale 43200`` puts half a day of schedule in
each second: daily jobs every 2 s, hourly and shorter ones every second (the floor).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pymongo
import pytest
import yaml

from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.policy.loader import default_policy, default_policy_text
from fluxa_integrity.service import clock, history, leases
from fluxa_integrity.service.jobs import job_definitions, schedule_problems
from fluxa_integrity.store import open_store
from fluxa_integrity.store.service_models import JobRun
from waiting import StderrWatch, wait_until

SCALE = 43200
READY = r"serving: \d+ jobs scheduled"


@pytest.fixture()
def app(private_server):
    """A private server with a tiny Fluxa dataset in database ``app``."""
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    generate(client["app"], GenerateOptions(users=5, seed=3, secondary=False))
    yield uri, client
    client.close()


@pytest.fixture()
def serves(fluxa_home):
    """Start serve processes; every one still alive at the end is killed."""
    procs: list[subprocess.Popen] = []

    def start(uri: str, *args: str, db: str = "app") -> tuple[subprocess.Popen, StderrWatch]:
        proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "serve", "--uri", uri, "--db", db, *args],
                                env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        procs.append(proc)
        watch = StderrWatch(proc)
        watch.wait_for(READY)
        return proc, watch

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def rows(store, job: str | None = None) -> list[JobRun]:
    return sorted(history.runs(store, job, limit=10_000), key=lambda r: r.id)


def ok_runs(store, job: str) -> list[JobRun]:
    return [r for r in rows(store, job) if r.outcome == "ok"]


def stop(proc: subprocess.Popen, watch: StderrWatch) -> str:
    proc.send_signal(signal.SIGTERM)
    code, err = watch.finish()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    return err


def assert_nothing_doubled(store) -> None:
    """No occurrence of a job ran twice: scheduled runs (not retries, not interrupted) are distinct."""
    seen = Counter((r.job, r.scheduled_for, r.attempt) for r in rows(store)
                   if r.trigger in ("schedule", "catch-up", "retry") and r.outcome != "interrupted")
    assert [k for k, n in seen.items() if n > 1] == []


def test_grid_and_time_scale():
    day = timedelta(days=1)
    step = clock.scaled(day, 3600)
    assert step == timedelta(seconds=24)
    assert clock.scaled(timedelta(minutes=1), 3600) == timedelta(seconds=clock.MIN_INTERVAL_S)  # floored
    t = clock.ANCHOR + 5 * step + timedelta(seconds=3)
    assert clock.floor(t, step) == clock.ANCHOR + 5 * step
    assert clock.next_after(t, step) == clock.ANCHOR + 6 * step
    assert clock.floor(clock.ANCHOR + 6 * step, step) == clock.ANCHOR + 6 * step  # a grid point is its own floor
    assert clock.between(clock.ANCHOR + 2 * step, clock.ANCHOR + 6 * step, step) == 4
    with pytest.raises(ValueError):
        clock.scaled(day, 0)


def test_jobs_follow_the_default_policy():
    jobs = {j.name: j for j in job_definitions(default_policy())}
    assert jobs["check-schema"].params["incremental"] and jobs["check-schema"].interval == timedelta(minutes=5)
    assert jobs["check-referential"].interval == timedelta(days=1)
    assert jobs["check-consistency"].interval == timedelta(weeks=1)
    assert jobs["backup-full"].interval == timedelta(days=1)
    assert jobs["backup-incremental"].interval == timedelta(hours=1)
    assert jobs["backup-schema"].cadence.startswith("on change")
    assert jobs["oplog-archiver"].continuous
    assert jobs["verify-full"].interval == timedelta(weeks=1) and jobs["verify-full"].params == {"kind": "full"}
    assert jobs["verify-incremental"].interval == timedelta(days=1)
    assert jobs["incident-tick"].interval == timedelta(minutes=1)
    assert {"retention", "rpo-monitor"} <= set(jobs)
    assert schedule_problems(default_policy()) == []


def _policy_file(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(default_policy_text())
    change(data)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_an_impossible_schedule_is_refused_at_start(tmp_path, cli):
    def impossible(d):
        del d["backup"]["point_in_time"]  # hourly incrementals cannot meet a 15-minute RPO
        d["backup"]["full"]["retention"] = "12h"  # taken daily, kept half a day

    path = _policy_file(tmp_path, impossible)
    res = cli("serve", "--policy", str(path), "--uri", "mongodb://127.0.0.1:1", "--db", "app", "--json")
    assert res.code == 2, res.stderr
    err = res.json()
    assert "schedule that cannot work" in err["error"]
    assert "user_accounts" in err["error"] and "RPO 15m cannot be met" in err["error"]
    assert "backup.full.retention: kept 12h but taken daily" in err["error"]
    assert "Traceback" not in res.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, fluxa_home):
    """The state store on SQLite (default) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return open_store()
    import uuid

    from sqlalchemy import create_engine

    url = request.getfixturevalue("postgres_url")
    name = f"svc_{uuid.uuid4().hex[:8]}"
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    return open_store(url.rsplit("/", 1)[0] + "/" + name)


def test_leases_exclude_and_expire(any_store):
    store = any_store
    a, b = "host:1:a", "host:2:b"
    assert leases.take(store, "job", a, ttl=0.5).ok
    got = leases.take(store, "job", b, ttl=0.5)
    assert not got.ok and got.holder == a
    assert leases.take(store, "job", a, ttl=0.5).ok  # its own lease: renewed
    wait_until(lambda: leases.holder_of(store, "job") is None, "the lease to expire")
    got = leases.take(store, "job", b, ttl=30)
    assert got.ok and got.took_over == a
    assert not leases.take(store, "job", a, ttl=30).ok
    leases.release(store, "job", b)
    assert leases.take(store, "job", a, ttl=30).ok


def test_an_occurrence_is_claimed_once(any_store):
    store = any_store
    due = clock.ANCHOR + timedelta(days=900)
    first = history.claim(store, job="j", db="app", scheduled_for=due, attempt=1, trigger="schedule", holder="a")
    assert first is not None
    assert history.claim(store, job="j", db="app", scheduled_for=due, attempt=1, trigger="schedule", holder="b") is None
    history.mark_interrupted(store, [first], "test")  # an interrupted occurrence is free again
    assert history.last_settled(store, "j") is None
    assert history.claim(store, job="j", db="app", scheduled_for=due, attempt=2, trigger="schedule", holder="b")


# check-referential and the weekly categories are left out only to keep a 2-core machine responsive
E2E_JOBS = ["check-schema", "backup-full", "backup-incremental", "backup-schema", "oplog-archiver",
            "verify-full", "verify-incremental", "retention", "rpo-monitor", "incident-tick"]


def test_serve_runs_the_schedule_on_a_compressed_clock(app, serves, tmp_path, fluxa_home):
    uri, client = app

    proc, watch = serves(uri, "--time-scale", str(SCALE), "--lease-seconds", "5",
                         "--slice-seconds", "1", "--only", ",".join(E2E_JOBS))
    store = open_store()
    need = {"check-schema": 2, "backup-full": 2, "backup-incremental": 1, "verify-full": 1,
            "verify-incremental": 1, "retention": 2, "incident-tick": 3, "backup-schema": 2}
    wait_until(lambda: all(len(ok_runs(store, j)) >= n for j, n in need.items()),
               "every job to run ok on its cadence")
    assert len(rows(store, "verify-full")) >= 2  # skipped before the first backup existed, then a restore drill
    client["app"]["users"].insert_one({"_id": "late-write", "email": "late@example.com"})
    wait_until(lambda: _archived(store, "late-write"), "the archiver to put the new write in a cataloged slice",
               poll=0.5)
    assert proc.poll() is None
    err = stop(proc, watch)
    assert "stopping" in err and "stopped" in err

    defs = {j.name: j for j in job_definitions(default_policy())}
    for name in need:
        step = clock.scaled(defs[name].interval, SCALE)
        sched = [history.aware(r.scheduled_for) for r in rows(store, name) if r.trigger in ("schedule", "catch-up")]
        assert len(sched) == len(set(sched)), name  # never the same occurrence twice
        assert all((t - clock.ANCHOR) % step == timedelta(0) for t in sched), name  # on the grid
    assert_nothing_doubled(store)
    assert all(r.outcome != "running" for r in rows(store))
    archiver = rows(store, "oplog-archiver")
    assert archiver[-1].outcome == "ok" and archiver[-1].details["entries"] > 0
    from fluxa_integrity.backup import catalog

    verified = {r.details["backup_id"] for r in ok_runs(store, "verify-full")}
    assert verified and all(catalog.verifications(store, b) for b in verified)  # a restore drill on record
    assert "serving:" in (fluxa_home / "logs" / "serve.log").read_text()


def _archived(store, _id) -> bool:
    import bson

    from fluxa_integrity.backup import archive_catalog as ac
    from fluxa_integrity.backup.files import iter_raw_documents

    return any(bson.decode(raw).get("o", {}).get("_id") == _id
               for row in ac.slices(store) for raw in iter_raw_documents(ac.slice_path(row), "zstd"))


CHEAP = "incident-tick,retention,rpo-monitor,oplog-archiver"


def test_two_serves_never_run_an_occurrence_twice(app, serves):
    uri, client = app
    a, wa = serves(uri, "--time-scale", str(SCALE), "--lease-seconds", "1.5", "--only", CHEAP)
    b, wb = serves(uri, "--time-scale", str(SCALE), "--lease-seconds", "1.5", "--only", CHEAP)
    store = open_store()
    wait_until(lambda: len(ok_runs(store, "incident-tick")) >= 6, "six ticks between the two serves")
    holders = {r.holder for r in rows(store, "oplog-archiver")}
    assert len(holders) == 1  # one archiver; the other serve waits for its lease
    first = rows(store, "oplog-archiver")[0]
    owner, other = (a, b) if str(a.pid) in first.holder else (b, a)
    owner_watch, other_watch = (wa, wb) if owner is a else (wb, wa)
    owner.kill()  # kill -9: no cleanup, its lease must expire
    owner.wait()
    wait_until(lambda: any(r.holder != first.holder and r.outcome == "running" for r in rows(store, "oplog-archiver")),
               "the other serve to take the archiver over")
    wait_until(lambda: rows(store, "oplog-archiver")[0].outcome == "interrupted",
               "the dead serve's archiver run to be marked interrupted")
    n = len(ok_runs(store, "incident-tick"))
    wait_until(lambda: len(ok_runs(store, "incident-tick")) >= n + 2, "the survivor to keep ticking")
    stop(other, other_watch)
    assert_nothing_doubled(store)
    ticks = [r.scheduled_for for r in rows(store, "incident-tick") if r.outcome == "ok"]
    assert len(ticks) == len(set(ticks))


def test_a_killed_serve_restarted_runs_missed_occurrences_once(app, serves):
    uri, client = app
    step = clock.scaled(timedelta(minutes=1), SCALE)
    proc, watch = serves(uri, "--time-scale", str(SCALE), "--lease-seconds", "1.5", "--only", CHEAP)
    store = open_store()
    wait_until(lambda: len(ok_runs(store, "incident-tick")) >= 2, "two ticks")
    proc.kill()
    proc.wait()
    last = history.last_settled(store, "incident-tick")
    wait_until(lambda: history.now() >= last + 4 * step, "four tick occurrences to pass with no serve", poll=0.1)
    again, watch2 = serves(uri, "--time-scale", str(SCALE), "--lease-seconds", "1.5", "--only", CHEAP)
    wait_until(lambda: any(r.holder.split(":")[1] == str(again.pid) for r in ok_runs(store, "incident-tick")),
               "the restarted serve's first tick")
    after = [r for r in rows(store, "incident-tick") if history.aware(r.scheduled_for) > last]
    catch_up = after[0]
    due = history.aware(catch_up.scheduled_for)
    assert catch_up.trigger == "catch-up" and catch_up.outcome == "ok"
    assert catch_up.missed == clock.between(last, due, step) - 1 >= 3  # the missed ones, coalesced into one run
    assert (due - clock.ANCHOR) % step == timedelta(0)
    wait_until(lambda: rows(store, "oplog-archiver")[0].outcome == "interrupted",
               "the killed serve's archiver run marked interrupted")
    stop(again, watch2)
    assert_nothing_doubled(store)
    archiver = rows(store, "oplog-archiver")
    assert archiver[-1].outcome == "ok" and str(again.pid) in archiver[-1].holder  # resumed after the kill


def test_an_unreachable_server_is_retried_and_raised_once(serves, fluxa_home):
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.mongo.devserver import free_port

    dead = f"mongodb://127.0.0.1:{free_port()}/"
    proc, watch = serves(dead, "--time-scale", str(SCALE), "--lease-seconds", "5",
                         "--only", "oplog-archiver,backup-schema,incident-tick")
    store = open_store()
    wait_until(lambda: len([r for r in rows(store, "oplog-archiver") if r.outcome == "failed"]) >= 2,
               "two failed archiver attempts")
    watch.wait_for(r"oplog-archiver: restarting in 4s")  # backoff doubles: 2 s, then 4 s
    assert proc.poll() is None  # the service stays up
    assert len(ok_runs(store, "incident-tick")) >= 1  # and runs what needs no database
    failed = [r for r in rows(store) if r.outcome == "failed"]
    assert all("cannot reach MongoDB" in r.error for r in failed)
    assert all(r.details.get("unreachable") for r in failed)
    stop(proc, watch)
    incidents = [i for i in Incidents.from_environment().list() if i["source_kind"] == "database_unreachable"]
    assert len(incidents) == 1 and incidents[0]["database"] == "app"  # one outage, one incident


def test_a_full_disk_fails_the_backup_and_the_service_stays_up(app, tmp_path, fluxa_home):
    """The repository is a 256 KiB tmpfs in a private mount namespace (root and unshare, as in
    test_archive_faults); the database holds ~600 KB of incompressible bytes."""
    uri, client = app
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("mounting a small tmpfs needs root and unshare")
    client["app"]["blobs"].insert_many([{"_id": i, "pad": os.urandom(3000)} for i in range(200)])
    repo = tmp_path / "small"
    repo.mkdir()
    script = 'repo=$1; shift; mount -t tmpfs -o size=256k tmpfs "$repo" || exit 99; exec "$@"'
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script, "sh", str(repo), sys.executable, "-m",
                             "fluxa_integrity", "serve", "--uri", uri, "--db", "app", "--repo", str(repo),
                             "--time-scale", str(SCALE), "--only", "backup-full,incident-tick"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stderr=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        watch.wait_for(READY)
    except BaseException:
        if proc.poll() == 99:
            pytest.skip("cannot mount a tmpfs here")
        raise
    try:
        store = open_store()
        wait_until(lambda: [r for r in rows(store, "backup-full") if r.outcome == "failed"], "a failed full backup")
        n = len(ok_runs(store, "incident-tick"))
        wait_until(lambda: len(ok_runs(store, "incident-tick")) > n + 1, "ticks after the failure: the service is up")
        failed = [r for r in rows(store, "backup-full") if r.outcome == "failed"][0]
        assert "No space left on device" in failed.error
        assert proc.poll() is None
        from fluxa_integrity.backup import catalog

        assert [b for b in catalog.list_backups(store, "app", "full") if b.status == "complete"] == []
        stop(proc, watch)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_job_running_at_sigterm_is_recorded_interrupted_and_rerun(app, serves, cli):
    """--grace-seconds 0: the verification restore running when SIGTERM arrives does not hold the
    exit; its run is interrupted, and the next start runs that same occurrence again."""
    uri, client = app
    assert cli("jobs", "run-now", "backup-full", "--uri", uri, "--db", "app").code == 0
    proc, watch = serves(uri, "--only", "verify-full", "--grace-seconds", "0")
    store = open_store()
    wait_until(lambda: [r for r in rows(store, "verify-full") if r.outcome == "running"], "a verification running")
    stop(proc, watch)
    first = rows(store, "verify-full")[0]
    assert first.outcome == "interrupted" and "stopped before the job finished" in first.error
    assert first.occurrence_key is None
    again, watch2 = serves(uri, "--only", "verify-full", "--grace-seconds", "60")
    wait_until(lambda: len(ok_runs(store, "verify-full")) == 1, "the interrupted occurrence to run again")
    rerun = ok_runs(store, "verify-full")[0]
    assert rerun.scheduled_for == first.scheduled_for and rerun.attempt == 2  # the same occurrence, once more
    stop(again, watch2)
    assert_nothing_doubled(store)
