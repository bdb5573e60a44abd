"""`fluxa-integrity jobs list|show|run-now` (issue 11): the policy's jobs with their next run and
last outcome, a job's history, and run-now - in this process when no serve runs, by a running
serve (a request row it takes) when one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.service import history
from fluxa_integrity.store import open_store
from waiting import StderrWatch, wait_until


@pytest.fixture()
def app_db(mongo_uri, db):
    generate(db, GenerateOptions(users=4, seed=5, secondary=False))
    return mongo_uri, db.name


def test_list_without_a_serve_shows_every_job_never_run(cli):
    res = cli("jobs", "list", "--json")
    assert res.code == 0, res.stderr
    data = res.json()
    assert data["serving"] == []
    names = [j["job"] for j in data["jobs"]]
    assert {"check-schema", "backup-full", "verify-full", "oplog-archiver", "incident-tick", "rpo-monitor"} <= set(names)
    assert all(j["last"] is None and j["next_run"] is None and not j["served"] for j in data["jobs"])
    human = cli("jobs", "list")
    assert human.code == 0 and "no serve is running" in human.stderr and "incident-tick" in human.stderr


def test_run_now_without_a_serve_runs_here_and_is_in_the_history(cli, app_db):
    uri, name = app_db
    res = cli("jobs", "run-now", "backup-full", "--uri", uri, "--db", name, "--json")
    assert res.code == 0, res.stderr
    run = res.json()["run"]
    assert run["outcome"] == "ok" and run["trigger"] == "manual" and run["details"]["backup_id"]
    assert "running backup-full here" in res.stderr
    from fluxa_integrity.backup import catalog

    # the full-backup job checks every new backup on its files (S4), so a good one is verified
    assert catalog.get_backup(open_store(), run["details"]["backup_id"]).status == "verified"
    shown = cli("jobs", "show", "backup-full", "--json").json()
    assert [r["id"] for r in shown["runs"]] == [run["id"]]
    assert shown["last"]["outcome"] == "ok"
    human = cli("jobs", "show", "backup-full")
    assert human.code == 0 and "manual" in human.stderr and run["details"]["backup_id"] in human.stderr


def test_a_failed_run_now_exits_1_and_list_says_so(cli):
    from fluxa_integrity.mongo.devserver import free_port

    dead = f"mongodb://127.0.0.1:{free_port()}/"
    res = cli("jobs", "run-now", "backup-schema", "--uri", dead, "--db", "app", "--json")
    assert res.code == 1, res.stderr
    run = res.json()["run"]
    assert run["outcome"] == "failed" and "cannot reach MongoDB" in run["error"]
    listed = cli("jobs", "list", "--json")
    assert listed.code == 1  # a job's last run failed
    row = next(j for j in listed.json()["jobs"] if j["job"] == "backup-schema")
    assert row["last"]["outcome"] == "failed"


def test_unknown_job_is_a_clear_error(cli):
    res = cli("jobs", "show", "nightly", "--json")
    assert res.code == 2
    err = res.json()
    assert "no job 'nightly'" in err["error"] and "incident-tick" in err["hint"]


def test_run_now_is_run_by_the_running_serve(cli, app_db, fluxa_home):
    uri, name = app_db
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "serve", "--uri", uri, "--db", name,
                             "--only", "retention,incident-tick"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        watch.wait_for(r"serving: 2 jobs scheduled")
        store = open_store()
        wait_until(lambda: len([r for r in history.runs(store) if r.outcome == "ok"]) >= 2,
                   "the start-up runs of both jobs")
        listed = cli("jobs", "list", "--json").json()
        serving = listed["serving"]
        assert len(serving) == 1 and serving[0]["pid"] == proc.pid
        tick = next(j for j in listed["jobs"] if j["job"] == "incident-tick")
        assert tick["served"] and tick["next_run"] and tick["last"]["outcome"] == "ok"
        assert not next(j for j in listed["jobs"] if j["job"] == "backup-full")["served"]  # not in --only
        res = cli("jobs", "run-now", "retention", "--json")
        assert res.code == 0, res.stderr
        run = res.json()["run"]
        assert run["trigger"] == "manual" and run["outcome"] == "ok"
        assert run["holder"] == serving[0]["holder"]  # the serve ran it, not the CLI
        assert f"asked serve pid {proc.pid}" in res.stderr
        proc.send_signal(signal.SIGTERM)
        code, err = watch.finish()
        assert code == 0, err
        assert cli("jobs", "list", "--json").json()["serving"] == []  # a stopped serve is not asked again
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
