"""The service's Prometheus metrics (issue 11, deliverable 7) in-process: the HTTP endpoint is
scraped and parsed with prometheus_client's own parser; the store-backed gauges agree with the
state store; a part that cannot be read is counted, never a failed scrape. The end-to-end scrape
of a running `serve` is in test_auto_incidents.py.
"""

from __future__ import annotations

import math
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.policy.loader import default_policy
from fluxa_integrity.service.jobs import JobDef
from fluxa_integrity.service.metrics import Metrics
from fluxa_integrity.service.tasks import TaskResult
from fluxa_integrity.service.validation import Recorded
from fluxa_integrity.store import open_store
from fluxa_integrity.store.models import CheckRun, Finding

UTC = timezone.utc


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def get(samples: dict, name: str, **labels):
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    return sum(hits) if hits else None


def test_metrics_endpoint(fluxa_home):
    store = open_store()
    policy = default_policy()
    now = datetime.now(UTC)
    with store.session() as s:
        run = CheckRun(database="app", started_at=now, finished_at=now, status="complete", rules=[], collections=[],
                       stats={})
        s.add(run)
        s.flush()
        for i, (dc, n, status) in enumerate([("user_accounts", 4, "open"), ("user_accounts", 3, "open"),
                                             ("chat_history", 2, "open"), ("chat_history", 9, "closed"),
                                             (None, 5, "open")]):
            s.add(Finding(database="app", fingerprint=f"fp{i}", rule_id=f"r{i}", variant="-", collection="users",
                          category="schema", data_class=dc, criticality=None, status=status, message="m", count=n,
                          samples=[], opened_at=now, first_run_id=run.id, last_run_id=run.id))
    m = Metrics(store, policy, "app", uri=None)
    check = JobDef("check-schema", "check", "t", timedelta(minutes=5), "5m")
    backup = JobDef("backup-full", "backup_full", "t", timedelta(days=1), "daily")
    m.observe_run(check, 1, TaskResult("ok", "fine"), 0.4)
    m.observe_run(check, 2, TaskResult("ok", "fine"), 0.6)
    m.observe_run(backup, 3, TaskResult("failed", "disk full", error="ENOSPC"), 2.0)
    m.observe_validation([Recorded("users", 1, "r", "-", now - timedelta(seconds=0.3), now),
                          Recorded("users", 2, "r", "-", None, now)])  # no wall time: not a latency
    m.observe_auto({"opened": [7], "attached": {7: [1, 2]}, "skipped": []})
    port = m.serve(0, "127.0.0.1")
    try:
        got = scrape(port)
        with pytest.raises(FluxaError, match="cannot serve metrics"):
            Metrics(store, policy, "app").serve(port, "127.0.0.1")  # the port is taken
    finally:
        m.close()
    assert get(got, "fluxa_job_runs_total", job="check-schema", outcome="ok") == 2
    assert get(got, "fluxa_job_runs_total", job="backup-full", outcome="failed") == 1
    assert get(got, "fluxa_job_failures_total", job="backup-full") == 1
    assert get(got, "fluxa_job_failures_total", job="check-schema") is None
    assert get(got, "fluxa_check_duration_seconds_count", job="check-schema") == 2
    assert get(got, "fluxa_check_duration_seconds_sum", job="check-schema") == pytest.approx(1.0)
    assert get(got, "fluxa_check_duration_seconds_count", job="backup-full") is None  # not a check
    assert get(got, "fluxa_validation_latency_seconds_count") == 1
    assert get(got, "fluxa_validation_latency_seconds_bucket", le="0.5") == 1
    assert get(got, "fluxa_auto_incidents_total", action="opened") == 1
    assert get(got, "fluxa_auto_incidents_total", action="attached") == 2
    # from the store: open findings by class (closed ones not counted), documents, classes with none
    assert get(got, "fluxa_open_findings", data_class="user_accounts") == 2
    assert get(got, "fluxa_open_finding_documents", data_class="user_accounts") == 7
    assert get(got, "fluxa_open_findings", data_class="chat_history") == 1
    assert get(got, "fluxa_open_finding_documents", data_class="chat_history") == 2
    assert get(got, "fluxa_open_findings", data_class="") == 1
    assert get(got, "fluxa_open_findings", data_class="usage_analytics") == 0
    for dc in policy.data_classes:
        assert get(got, "fluxa_rpo_target_seconds", data_class=dc.name) == dc.rpo_delta.total_seconds()
        assert math.isinf(get(got, "fluxa_rpo_age_seconds", data_class=dc.name))  # no backup yet
        assert get(got, "fluxa_rpo_breached", data_class=dc.name) == 1
    assert get(got, "fluxa_live_incidents") == 0
    assert get(got, "fluxa_archive_gaps") == 0
    assert get(got, "fluxa_archiver_lag_seconds") is None  # no server to ask
    assert get(got, "fluxa_scrape_errors_total") is None


def test_an_unreadable_part_is_counted_not_failed(fluxa_home):
    m = Metrics(open_store(), default_policy(), "app", uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
    port = m.serve(0, "127.0.0.1")
    try:
        got = scrape(port)
    finally:
        m.close()
    assert get(got, "fluxa_scrape_errors_total", part="archiver") == 1  # the server is unreachable
    assert get(got, "fluxa_archiver_lag_seconds") is None
    assert get(got, "fluxa_rpo_target_seconds") is not None  # the rest of the scrape stands
