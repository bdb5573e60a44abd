"""Enhanced monitoring after an incident resolves (issue 11, deliverable 6; S32): the resolved
incident's collections get the policy's tighter schedule for its period, the job shows in
`jobs list`, runs their rules on that cadence, and ends by itself.

The end-to-end test runs `serve` at --time-scale 43200 with ``period: 5d`` (10 s) and
``checks_every: 1h`` (every second, the floor); it waits for history rows and log lines, never
for fixed times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
import yaml

from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy.loader import default_policy_text
from fluxa_integrity.policy.models import Policy
from fluxa_integrity.service import enhanced, history
from fluxa_integrity.store import open_store
from waiting import StderrWatch, wait_until

UTC = timezone.utc
SCALE = 43200


def _policy(period="5d", every="1h") -> dict:
    d = yaml.safe_load(default_policy_text())
    d["enhanced_monitoring"] = {"period": period, "checks_every": every}
    return d


def test_windows_follow_resolution_and_end(fluxa_home):
    store = open_store()
    policy = Policy.model_validate(_policy())
    api = Incidents(store, policy)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    inc = api.open("Bad emails", collections=["users", "messages"], database="app", at=t0)["id"]
    other = api.open("Elsewhere", collections=["users"], database="other", at=t0)["id"]
    assert enhanced.job_defs(store, policy, "app") == []  # live incidents get no enhanced schedule
    api.acknowledge(inc, at=t0 + timedelta(minutes=1))
    api.resolve(inc, "fixed", at=t0 + timedelta(minutes=2))
    [job] = enhanced.job_defs(store, policy, "app")
    assert job.name == f"enhanced-{inc}" and job.task == "check" and job.interval == timedelta(hours=1)
    want = {r.id for c in ("users", "messages") for _, r in policy.iter_rules(c) if r.enabled}
    assert set(job.params["rules"]) == want and not job.params["incremental"]
    assert "until" in job.cadence
    until = t0 + timedelta(minutes=2) + timedelta(days=5)
    assert enhanced.job_defs(store, policy, "app", at=until - timedelta(seconds=1))
    assert enhanced.job_defs(store, policy, "app", at=until + timedelta(seconds=1)) == []  # ends by itself
    # a compressed clock compresses the period too: 5 days at 43200 is 10 s after the resolution
    assert enhanced.job_defs(store, policy, "app", SCALE) == []
    assert [j.name for j in enhanced.job_defs(store, policy, None)] == [f"enhanced-{inc}"]  # not `other` (live)
    assert other
    off = _policy()
    off["enhanced_monitoring"]["enabled"] = False
    assert enhanced.job_defs(store, Policy.model_validate(off), "app") == []


@pytest.fixture()
def app(private_server):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    generate(client["app"], GenerateOptions(users=5, seed=3, secondary=False))
    yield uri, client
    client.close()


def test_a_resolved_incident_gets_an_enhanced_schedule_that_ends(app, fluxa_home, tmp_path, cli):
    uri, _ = app
    pol = tmp_path / "policy.yaml"
    d = _policy()
    d["check_schedule"]["schema"]["frequency"] = "weekly"  # the regular check runs seldom
    pol.write_text(yaml.safe_dump(d))
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "serve", "--uri", uri, "--db", "app",
                             "--policy", str(pol), "--time-scale", str(SCALE), "--lease-seconds", "5",
                             "--only", "check-schema,incident-tick"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        watch.wait_for(r"serving: \d+ jobs scheduled")
        store = open_store()
        api = Incidents(store, Policy.model_validate(d))
        inc = api.open("Preferences corrupted", collections=["users"], database="app")["id"]
        api.acknowledge(inc)
        resolved = datetime.now(UTC)
        api.resolve(inc, "restored")
        name = f"enhanced-{inc}"
        watch.wait_for(rf"job {name} scheduled")

        listed = cli("jobs", "list", "--policy", str(pol), "--json")
        rows = {r["job"]: r for r in json.loads(listed.stdout)["jobs"]}
        if name in rows:  # unless the 10 s period already ended on a slow machine
            assert rows[name]["served"] and "until" in rows[name]["cadence"]
            assert rows[name]["interval_seconds"] == 3600

        watch.wait_for(rf"job {name} ended")
        runs = [r for r in history.runs(store, name, 1000) if r.outcome == "ok"]
        assert len(runs) >= 2  # the tighter cadence ran (every second for 10 s)
        until = resolved + timedelta(days=5) / SCALE
        assert all(history.aware(r.scheduled_for) <= until + timedelta(seconds=1) for r in runs)
        assert all(r.details["documents"] > 0 and r.details["findings"] == 0 for r in runs)
        # it ended by itself: `jobs list` no longer has it, its history stays
        listed = cli("jobs", "list", "--policy", str(pol), "--json")
        assert name not in {r["job"] for r in json.loads(listed.stdout)["jobs"]}
        n = len(history.runs(store, name, 1000))
        assert proc.poll() is None  # the service keeps serving
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = watch.finish()
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert len(history.runs(store, name, 1000)) <= n + 1  # nothing scheduled after the end (one may have been running)
