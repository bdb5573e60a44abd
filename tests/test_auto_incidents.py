"""Automatic incidents (issue 11, deliverable 5) and the service's metrics and JSON logs (7), end
to end: `serve` on a tiny dataset with a compressed clock; faults from the injector become findings,
the findings an incident, the incident a notification to a local HTTP receiver; a second fault in
the same data class joins that incident; the metrics endpoint is scraped and parsed with
prometheus_client's parser. The candidate rules (threshold, handled findings, a closed incident's
findings re-paged only when seen again after the close, findings closed by verification) are
tested in-process on the state store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy.loader import default_policy, default_policy_text
from fluxa_integrity.policy.models import Policy
from fluxa_integrity.service.auto_incidents import AutoIncidents, candidates
from fluxa_integrity.store import open_store
from fluxa_integrity.store.models import CheckRun, Finding, Sighting
from test_comms import HttpReceiver
from waiting import StderrWatch, wait_until

UTC = timezone.utc
SCALE = 43200


def policy_file(tmp_path, change=None):
    d = yaml.safe_load(default_policy_text())
    d["check_schedule"]["schema"]["frequency"] = "hourly"  # full runs (every second at this scale)
    if change:
        change(d)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float | None:
    want = set(labels.items())
    hits = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    return sum(hits) if hits else None


def _complete_runs(store) -> int:
    with store.session() as s:
        return s.query(CheckRun).filter_by(status="complete").count()


@pytest.fixture()
def app(private_server):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    generate(client["app"], GenerateOptions(users=20, seed=5, secondary=False))
    yield uri, client
    client.close()


def test_a_fault_opens_one_incident_notifies_and_a_second_joins_it(app, fluxa_home, tmp_path):
    uri, client = app
    hook = HttpReceiver()
    fluxa_home.mkdir(parents=True, exist_ok=True)
    (fluxa_home / "config.yaml").write_text(yaml.safe_dump(
        {"notifications": [{"name": "hook", "type": "webhook", "url": f"{hook.url}/hook"}]}))
    pol = policy_file(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "serve", "--uri", uri, "--db", "app",
                             "--policy", str(pol), "--time-scale", str(SCALE), "--lease-seconds", "5",
                             "--only", "check-schema,incident-tick", "--metrics-port", "0"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)}, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        port = int(watch.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        watch.wait_for(r"serving: \d+ jobs scheduled")
        store = open_store()
        api = Incidents(store, default_policy())
        wait_until(lambda: _complete_runs(store) >= 1, "a first clean check run")
        assert api.list() == []  # the generated data is clean: nothing opened

        manifest = Manifest(tmp_path / "manifest.json", "app")
        first = inject(client["app"], manifest, "wrong-type-createdat", 3, seed=2)
        wait_until(lambda: api.list(), "the bad writes to become an incident")
        [inc] = api.list()
        with store.session() as s:
            found = {f.id: (f.rule_id, f.collection, f.count) for f in s.query(Finding).filter_by(status="open")}
        assert sorted(found) == inc["findings"] and inc["database"] == "app"
        assert [(r, c, n) for r, c, n in found.values()] == [("users.createdAt.type", first[0].collection,
                                                               len(first[0].ids))]
        assert inc["data_classes"] == ["user_accounts"] and inc["source"] == "finding"
        wait_until(lambda: any(b["incident_id"] == str(inc["id"]) and b["event"] == "opened"
                               for b in hook.at("/hook")), "the opening notification at the receiver")

        # a second problem in the same data class joins the live incident: one problem, one incident
        second = inject(client["app"], manifest, "malformed-email", 2, seed=3)
        wait_until(lambda: len(api.get(inc["id"])["findings"]) == 2, "the second finding to join the incident")
        assert len(api.list()) == 1
        with store.session() as s:
            rules = {f.rule_id: f.count for f in s.query(Finding).filter_by(status="open")}
        assert rules == {"users.createdAt.type": len(first[0].ids), "users.email.format": len(second[0].ids)}
        opened = [b for b in hook.at("/hook") if b["event"] == "opened"]
        assert len(opened) == 1  # paged once, not per finding

        # metrics, scraped and parsed while serving; the counters move after the incident-tick's commit,
        # so wait for the attach to reach them rather than racing the tick that wrote it
        wait_until(lambda: value(scrape(port), "fluxa_auto_incidents_total", action="attached") == 1,
                   "the attach to reach the metrics")
        m = scrape(port)
        assert value(m, "fluxa_job_runs_total", job="check-schema", outcome="ok") >= 2
        assert value(m, "fluxa_check_duration_seconds_count", job="check-schema") >= 2
        assert value(m, "fluxa_open_findings", data_class="user_accounts", category="schema") == 2
        assert value(m, "fluxa_open_finding_documents", data_class="user_accounts") == \
            len(first[0].ids) + len(second[0].ids)
        assert value(m, "fluxa_auto_incidents_total", action="opened") == 1
        assert value(m, "fluxa_auto_incidents_total", action="attached") == 1
        assert value(m, "fluxa_live_incidents", severity=inc["severity"]) == 1
        for dc in default_policy().data_classes:
            assert value(m, "fluxa_rpo_target_seconds", data_class=dc.name) == dc.rpo_delta.total_seconds()
            assert value(m, "fluxa_rpo_breached", data_class=dc.name) == 1  # no backup at all yet
        assert value(m, "fluxa_archiver_lag_seconds") is not None
        assert value(m, "fluxa_scrape_errors_total") in (None, 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = watch.finish()
        hook.close()
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert "auto-incidents: opened incident" in err
    events = [json.loads(line) for line in (fluxa_home / "logs" / "serve.json.log").read_text().splitlines()]
    runs = [e for e in events if e["event"] == "job_run" and e["job"] == "check-schema"]
    assert runs and {"run_id", "outcome", "duration_s", "timestamp", "level"} <= set(runs[0])
    assert any(e["event"] == "auto_incidents" and e["opened"] == [inc["id"]] for e in events)


# -- the candidate rules, in-process ---------------------------------------------------------------

def _finding(s, run, rule, criticality, count=3, data_class="user_accounts", collection="users"):
    f = Finding(database="app", fingerprint=rule, rule_id=rule, variant="-", collection=collection, category="schema",
                data_class=data_class, criticality=criticality, status="open", message=rule, count=count,
                samples=[], opened_at=run.started_at, first_run_id=run.id, last_run_id=run.id)
    s.add(f)
    s.flush()
    s.add(Sighting(finding_id=f.id, run_id=run.id, seen_at=run.finished_at, count=count))
    return f.id


def _run(s, at):
    run = CheckRun(database="app", started_at=at, finished_at=at + timedelta(seconds=1), status="complete",
                   rules=[], collections=[], stats={})
    s.add(run)
    s.flush()
    return run


def test_threshold_and_closed_incidents(fluxa_home):
    store = open_store()
    d = yaml.safe_load(default_policy_text())
    d["auto_incidents"] = {"min_criticality": "high", "min_count": 2, "unclassified_as": "low"}
    policy = Policy.model_validate(d)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    with store.session() as s:
        run = _run(s, t0)
        crit = _finding(s, run, "users.email.type", "critical")
        low = _finding(s, run, "analytics.x", "low", data_class="usage_analytics", collection="analytics")
        few = _finding(s, run, "users.name.type", "critical", count=1)
        unclassified = _finding(s, run, "other.x", None, data_class=None, collection="messages")
    assert candidates(store, policy, "app") == [crit]  # low, too few, unclassified-as-low: recorded, not paged

    api = Incidents(store, policy)
    auto = AutoIncidents(store, policy, "app", "test-holder", api_factory=lambda st, p: api)
    res = auto.sweep()
    assert len(res["opened"]) == 1 and auto.sweep() is None  # taken in once; then handled
    inc = res["opened"][0]
    # closed while the finding is still open: a run that read the data before the close does not re-page
    api.acknowledge(inc, at=t0 + timedelta(minutes=10))
    api.resolve(inc, "fixed", at=t0 + timedelta(minutes=20))
    api.review(inc, root_cause="a bad deploy", at=t0 + timedelta(minutes=25))
    api.close(inc, at=t0 + timedelta(minutes=30))
    with store.session() as s:
        stale = _run(s, t0 + timedelta(minutes=29))  # started before the close, finished after
        s.add(Sighting(finding_id=crit, run_id=stale.id, seen_at=t0 + timedelta(minutes=31), count=3))
    assert candidates(store, policy, "app") == []
    # seen again by a run that started after the close: the problem is back, a new incident
    with store.session() as s:
        fresh = _run(s, t0 + timedelta(minutes=40))
        s.add(Sighting(finding_id=crit, run_id=fresh.id, seen_at=fresh.finished_at, count=3))
    assert candidates(store, policy, "app") == [crit]
    again = auto.sweep()
    assert again["opened"] and again["opened"] != [inc]
    assert (low, few, unclassified) and all(f not in api.get(again["opened"][0])["findings"] for f in (low, few))


def test_a_finding_closed_by_verification_is_not_paged(fluxa_home):
    """The recovery path: verification records a check run that no longer sees the finding, which
    closes it (checks/history.record_run); a closed finding is never a candidate."""
    from fluxa_integrity.checks.history import record_run
    from fluxa_integrity.checks.runner import RunReport

    store = open_store()
    policy = default_policy()
    with store.session() as s:
        run = _run(s, datetime.now(UTC) - timedelta(minutes=5))
        fid = _finding(s, run, "users.email.type", "critical")
    assert candidates(store, policy, "app") == [fid]
    report = RunReport(database="app", started_at=datetime.now(UTC), seconds=0.1, collections=["users"],
                       rules=["users.email.type"], docs={"users": 20}, findings=[])
    record_run(store, report)  # the verification's run: the rule no longer finds anything
    with store.session() as s:
        assert s.get(Finding, fid).status == "closed"
    assert candidates(store, policy, "app") == []
