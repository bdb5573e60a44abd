"""Prometheus metrics of the service (issue 11, item 7): ``serve --metrics-port N`` serves them
over HTTP at ``/metrics`` (prometheus_client's own server, in a daemon thread).

Shape: ``Metrics(store, policy, db, uri)`` owns a registry of its own (never the process-wide
default, so tests and two services in one process do not collide) with
- counted as they happen, in this process: ``fluxa_job_runs_total{job,outcome}``,
  ``fluxa_job_failures_total{job}``, ``fluxa_job_duration_seconds{job}`` (histogram),
  ``fluxa_check_duration_seconds{job}`` (check and monitor jobs), ``fluxa_validation_latency_seconds``
  (write to recorded finding, from continuous validation's batches: ``observe_validation``),
  ``fluxa_auto_incidents_total{action}`` (opened / attached);
- read from the state store at each scrape (so they are true whichever serve did the work):
  ``fluxa_open_findings{database,data_class,category}`` (findings) and
  ``fluxa_open_finding_documents{...}`` (their document counts; unclassified: ``data_class=""``),
  ``fluxa_live_incidents{severity}``, ``fluxa_rpo_age_seconds{data_class}`` against
  ``fluxa_rpo_target_seconds{data_class}`` and ``fluxa_rpo_breached{data_class}`` (rpo status;
  no recoverable point: age is +Inf), ``fluxa_archive_gaps``;
- ``fluxa_archiver_lag_seconds``: the newest entry of the live oplog minus the newest archived
  one (0 when the archive holds it), asked of the server at most every LAG_CACHE_S.

Failure: a collector that cannot read the store or reach the server leaves its metrics out of that
scrape and counts ``fluxa_scrape_errors_total{part}``; a scrape never fails and never stops the
service. A port already in use is a FluxaError at start.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from ..errors import FluxaError
from ..policy.models import Policy
from ..store import Store

LAG_CACHE_S = 5.0
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
CHECK_TASKS = {"check", "monitor"}


class Metrics:
    def __init__(self, store: Store, policy: Policy, db: str, uri: str | None = None):
        self.store, self.policy, self.db, self.uri = store, policy, db, uri
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("fluxa_job_runs", "Job runs by outcome (ok, skipped, failed).", ["job", "outcome"],
                            registry=r)
        self.failures = Counter("fluxa_job_failures", "Job runs that failed.", ["job"], registry=r)
        self.duration = Histogram("fluxa_job_duration_seconds", "How long each job run took.", ["job"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.check_duration = Histogram("fluxa_check_duration_seconds", "How long each check (or monitor) run took.",
                                        ["job"], buckets=DURATION_BUCKETS, registry=r)
        self.validation_latency = Histogram("fluxa_validation_latency_seconds",
                                            "Continuous validation: a write's wait until its finding is recorded.",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.auto = Counter("fluxa_auto_incidents", "Incidents opened and findings attached automatically.",
                            ["action"], registry=r)
        self.scrape_errors: dict[str, int] = {}  # part -> count; emitted after the parts, so a scrape shows its own
        self._lag: tuple[float, float | None] = (float("-inf"), None)
        self._lag_lock = threading.Lock()
        r.register(_StoreCollector(self))
        self.server = None

    # -- fed by the service -------------------------------------------------------------------------

    def observe_run(self, job, run_id: int, result, seconds: float) -> None:
        """A runner's after_run observer."""
        self.runs.labels(job.name, result.outcome).inc()
        self.duration.labels(job.name).observe(seconds)
        if result.outcome == "failed":
            self.failures.labels(job.name).inc()
        if job.task in CHECK_TASKS and result.outcome != "skipped":
            self.check_duration.labels(job.name).observe(seconds)

    def observe_validation(self, records: Iterable) -> None:
        """Continuous validation's ``on_record`` callback (service/validation.py ``Recorded`` rows)."""
        for rec in records:
            if getattr(rec, "written", None) is not None:
                self.validation_latency.observe(max(0.0, (rec.recorded - rec.written).total_seconds()))

    def observe_auto(self, res: dict) -> None:
        """AutoIncidents' on_result: what a sweep opened and attached."""
        if res["opened"]:
            self.auto.labels("opened").inc(len(res["opened"]))
        n = sum(len(v) for v in res["attached"].values())
        if n:
            self.auto.labels("attached").inc(n)

    # -- HTTP -----------------------------------------------------------------------------------------

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics on ``port`` (0: any free port); the port it listens on."""
        try:
            self.server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise FluxaError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}",
                             "pick a free port with --metrics-port") from exc
        return self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # -- read at scrape time --------------------------------------------------------------------------

    def archiver_lag(self) -> float | None:
        now = time.monotonic()
        with self._lag_lock:
            at, value = self._lag
            if now - at < LAG_CACHE_S:
                return value
            value = self._measure_lag()
            self._lag = (now, value)
            return value

    def _measure_lag(self) -> float | None:
        from ..backup.archive_catalog import coverage
        from ..backup.oplog import newest_oplog_ts
        from ..mongo.connection import connect

        windows, _ = coverage(self.store)
        if self.uri is None:
            return None
        client = connect(self.uri)
        try:
            live, _, _ = newest_oplog_ts(client)
        finally:
            client.close()
        if live is None:
            return None
        if not windows:
            return math.inf
        archived = windows[-1].last
        return 0.0 if archived >= live else float(live.time - archived.time)


class _StoreCollector:
    def __init__(self, m: Metrics):
        self.m = m

    def _part(self, name: str, fn) -> list:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - one part unreadable: the rest of the scrape stands
            self.m.scrape_errors[name] = self.m.scrape_errors.get(name, 0) + 1
            return []

    def collect(self):
        yield from self._part("findings", self._findings)
        yield from self._part("incidents", self._incidents)
        yield from self._part("rpo", self._rpo)
        yield from self._part("archiver", self._archiver)
        errors = CounterMetricFamily("fluxa_scrape_errors", "Parts of a scrape that could not be read.", labels=["part"])
        for part, n in sorted(self.m.scrape_errors.items()):
            errors.add_metric([part], n)
        yield errors

    def _findings(self) -> list:
        from ..store.models import Finding

        labels = ["database", "data_class", "category"]
        n = GaugeMetricFamily("fluxa_open_findings", "Open findings by data class and category.", labels=labels)
        docs = GaugeMetricFamily("fluxa_open_finding_documents", "Documents counted by the open findings.",
                                 labels=labels)
        with self.m.store.session() as s:
            rows = s.execute(select(Finding.database, Finding.data_class, Finding.category, func.count(),
                                    func.sum(Finding.count)).where(Finding.status == "open")
                             .group_by(Finding.database, Finding.data_class, Finding.category)).all()
        seen = set()
        for db, dc, cat, count, total in rows:
            n.add_metric([db, dc or "", cat], count)
            docs.add_metric([db, dc or "", cat], total or 0)
            seen.add(dc)
        for dc in self.m.policy.data_classes:  # a class with nothing open reads 0, not "absent"
            if dc.name not in seen:
                n.add_metric([self.m.db, dc.name, ""], 0)
        return [n, docs]

    def _incidents(self) -> list:
        from ..incidents.lifecycle import LIVE
        from ..store.incident_models import Incident

        g = GaugeMetricFamily("fluxa_live_incidents", "Incidents not yet resolved, by severity.", labels=["severity"])
        with self.m.store.session() as s:
            rows = dict(s.execute(select(Incident.severity, func.count()).where(
                Incident.status.in_(LIVE), Incident.drill.is_(False)).group_by(Incident.severity)).all())
        for level in self.m.policy.severity.levels:
            g.add_metric([level], rows.get(level, 0))
        return [g]

    def _rpo(self) -> list:
        from ..backup.archive_catalog import coverage
        from ..backup.objectives import rpo_status

        age = GaugeMetricFamily("fluxa_rpo_age_seconds", "Age of the newest recoverable point per data class "
                                "(+Inf: none).", labels=["data_class"])
        target = GaugeMetricFamily("fluxa_rpo_target_seconds", "The policy's RPO per data class.", labels=["data_class"])
        breached = GaugeMetricFamily("fluxa_rpo_breached", "1 when the RPO is breached.", labels=["data_class"])
        for row in rpo_status(self.m.store, self.m.policy, self.m.db):
            dc = row["data_class"]
            age.add_metric([dc], math.inf if row["age_seconds"] is None else row["age_seconds"])
            target.add_metric([dc], row["rpo_seconds"])
            breached.add_metric([dc], 1 if row["status"] == "breached" else 0)
        _, gaps = coverage(self.m.store)
        g = GaugeMetricFamily("fluxa_archive_gaps", "Gaps in the oplog archive (point-in-time restore cannot cross).",
                              value=len(gaps))
        return [age, target, breached, g]

    def _archiver(self) -> list:
        lag = self.m.archiver_lag()
        if lag is None:
            return []
        return [GaugeMetricFamily("fluxa_archiver_lag_seconds", "Newest live oplog entry minus the newest archived "
                                  "one (+Inf: nothing archived).", value=lag)]
