"""A monitor run: measure each closed interval not yet measured, judge it against its baseline,
store the interval rows and record the findings in the same findings store as the checks.

Shape: ``run_monitors`` walks the grid of ``monitors.interval`` (aligned on the Unix epoch, so
5m intervals start at :00, :05, ...) from the interval after the newest row of the database (at
most ``max_catch_up`` of them; the first run measures only the last closed one), and for each:
the oplog's writes per collection (volume.py), the document count when the interval just closed
(a count taken later says nothing about that interval), the field statistics of the written
sample (field_stats.py) and the classified log errors (log_errors.py). ``evaluate`` is the pure
judging step the service, the CLI and the benchmark share.

Findings (rule ids, variants, categories - docs/monitors.md):
- ``monitor.volume.<coll>.<inserts|updates|deletes|count>`` spike/drop (``count`` is the change of
  the document count over the interval that the oplog's inserts and deletes do not explain);
- ``monitor.fields.<coll>.<path>.<missing|null>`` spike/drop against the rate's history, or the
  learned profile while the history is short; ``monitor.fields.<coll>.<path>.type`` variant
  ``drift:<type>`` for a type the learned profile never held there;
- ``monitor.logs.<class>`` variant ``<scope>``: the threshold passed or a jump against baseline.
They go through checks/history.record_run as one check run per monitor run (``stats.monitor``),
so fingerprints dedup them across intervals and incidents; a rule judged clean closes its open
finding, a rule that could not be judged (no baseline, an incomplete interval) leaves it alone.

Failure behaviour: findings are recorded first, then the interval rows in one transaction; a run
killed in between re-measures those intervals next time and sights the same findings again
(same fingerprints), nothing doubles. An interval the oplog no longer covers is stored
``complete=False`` and judged on nothing but its logs.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bson import json_util
from sqlalchemy import select

from ..checks.findings import FindingResult
from ..checks.history import record_run
from ..checks.runner import RunReport
from ..mongo.connection import fast_count
from ..policy.models import Policy
from ..policy.monitors import LogValidation, Monitors
from ..store import Store
from ..store.models import CheckRun
from ..store.monitor_models import MonitorInterval, MonitorProfile
from .baseline import Baseline, judge, learn, share_floor
from .field_stats import field_metrics, learn_profile, type_drift
from .log_errors import read_logs
from .volume import read_interval

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LOGS = "$logs"  # the pseudo-collection of the log rows
VOLUME = ("inserts", "updates", "deletes")
DATA_LOSS = {("deletes", "spike"), ("count", "drop"), ("missing", "spike"), ("null", "spike")}


def floor(at: datetime, interval: timedelta) -> datetime:
    return EPOCH + ((at - EPOCH) // interval) * interval


@dataclass
class Row:
    """An interval row as the judge sees it (the table's row, or one just measured)."""

    collection: str
    start: datetime
    complete: bool
    metrics: dict


def unexplained(m: dict) -> float | None:
    """The change of the document count the interval's oplog inserts and deletes do not explain
    (a collection dropped or restored, writes that bypass the oplog); None without two counts."""
    if m.get("count_change") is None:
        return None
    return m["count_change"] - (m.get("inserts", 0) - m.get("deletes", 0))


def _start(r: Row) -> datetime:
    return r.start


@dataclass
class MonitorReport:
    database: str
    intervals: list[dict] = field(default_factory=list)
    findings: list[FindingResult] = field(default_factory=list)
    judged: list[str] = field(default_factory=list)  # rule ids judged (their findings can close)
    warnings: list[str] = field(default_factory=list)
    run_id: int | None = None
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0


# --- judging (pure) ---------------------------------------------------------------------------

class Judge:
    """Judges intervals of one database against history rows, collecting findings by rule and
    variant (the same anomaly in several intervals of one run is one finding, its count summed)."""

    def __init__(self, policy: Policy, database: str, profiles: dict[str, dict]):
        self.policy, self.m, self.lv = policy, policy.monitors, policy.log_validation
        self.database = database
        self.profiles = profiles
        self.found: dict[tuple[str, str], FindingResult] = {}
        self.judged: set[str] = set()

    # history points of one metric
    def _points(self, history: list[Row], at: datetime, get) -> list[tuple[datetime, float]]:
        lo = at - self.m.training_delta
        out = []
        # history is in start order: the window is a slice
        i, j = bisect_left(history, lo, key=_start), bisect_left(history, at, key=_start)
        for r in history[i:j]:
            if r.complete:
                v = get(r.metrics)
                if v is not None:
                    out.append((r.start, float(v)))
        return out

    def _baseline(self, history, at, get, kind="count", sample=0) -> Baseline | None:
        return learn(self._points(history, at, get), at, min_history=self.m.min_history,
                     seasonal_min_days=self.m.seasonal_min_days, kind=kind, sample=sample,
                     recent=self.m.recent_history)

    def _find(self, rule_id: str, variant: str, collection: str, category: str, message: str, count: int,
              sample: dict, start: datetime, end: datetime, field_path: str | None = None) -> None:
        key = (rule_id, variant)
        f = self.found.get(key)
        if f is None:
            f = self.found[key] = FindingResult(rule_id=rule_id, variant=variant, collection=collection,
                                                category=category, message=message)
            dc = self.policy.data_class_for(collection, field_path)
            if dc is not None:
                f.data_class, f.criticality = dc.name, dc.criticality
        f.message = message  # the newest interval's words
        f.count += int(count)
        if len(f.samples) < 20:
            f.samples.append({"_id": None, "value": sample, "interval": start.isoformat()})
        f.first_doc_time = min(f.first_doc_time or start, start)
        f.last_doc_time = max(f.last_doc_time or end, end)

    def collection(self, row: Row, end: datetime, history: list[Row]) -> list[str]:
        """Judge one data collection's interval; returns the rule ids it raised."""
        raised: list[str] = []
        if not row.complete:
            return raised
        coll, at, mt = row.collection, row.start, row.metrics
        z = self.m.z
        for metric in VOLUME + ("count",):
            get = (lambda m, k=metric: m.get(k, 0)) if metric in VOLUME else unexplained
            value = get(mt)
            if value is None:
                continue
            base = self._baseline(history, at, get)
            if base is None:
                continue
            rid = f"monitor.volume.{coll}.{metric}"
            self.judged.add(rid)
            v = judge(float(value), base, z, self.m.min_volume_change, self.m.silence_min)
            if v.direction:
                what = ("document count changed, beyond what the oplog's inserts and deletes explain, by"
                        if metric == "count" else metric)
                self._find(rid, v.direction, coll, "data_loss" if (metric, v.direction) in DATA_LOSS else "anomaly",
                           f"{coll}: {what} {v.value:g} in the {self.m.interval} from {at:%Y-%m-%d %H:%M}Z, expected "
                           f"{base.median:g} (band {base.median - v.threshold:g}..{base.median + v.threshold:g}, "
                           f"{'same hour of day, ' if base.seasonal else ''}{base.n} intervals of history)",
                           abs(v.value - base.median), v.as_dict(), at, end)
                raised.append(rid)
        n = mt.get("sampled", 0)
        fields = mt.get("fields", {})
        profile = self.profiles.get(coll)
        # rates need a sample worth the name; a type the field never had is news in any sample
        paths = set(fields) | {p for p, d in (profile or {}).items() if d["presence"] >= 0.5}
        for path in sorted(paths) if n >= self.m.min_sample else []:
            cur = fields.get(path, {"missing": 1.0, "null": 0.0})
            for rate in ("missing", "null"):
                def get(m, p=path, r=rate):
                    if m.get("sampled", 0) < self.m.min_sample:
                        return None
                    f = m.get("fields", {}).get(p)
                    return f[r] if f is not None else (1.0 if r == "missing" else 0.0)
                base = self._baseline(history, at, get, kind="share", sample=n)
                if base is None and profile is not None and path in profile:
                    pres = profile[path]["presence"]
                    p = 1 - pres if rate == "missing" else pres * profile[path]["types"].get("null", 0.0)
                    base = Baseline(0, p, share_floor(p, n), False, "profile")
                if base is None:
                    continue
                rid = f"monitor.fields.{coll}.{path}.{rate}"
                self.judged.add(rid)
                v = judge(cur[rate], base, z, self.m.min_rate_change)
                if v.direction:
                    self._find(rid, v.direction, coll, "data_loss" if (rate, v.direction) in DATA_LOSS else "anomaly",
                               f"{coll}.{path}: {rate} in {v.value:.1%} of the {n} sampled written documents, expected "
                               f"{base.median:.1%} ({'learned profile' if base.source == 'profile' else 'history'})",
                               round(abs(v.value - base.median) * n), v.as_dict(), at, end, path)
                    raised.append(rid)
        if profile is not None:
            for path, t, docs, share, known in type_drift(fields, profile, self.m.drift_min_share, self.m.drift_min_docs):
                rid = f"monitor.fields.{coll}.{path}.type"
                self._find(rid, f"drift:{t}", coll, "schema",
                           f"{coll}.{path}: {docs} of {n} sampled written documents hold a {t}; the learned profile "
                           f"has only {', '.join(known) or 'null'} there", docs,
                           {"type": t, "documents": docs, "share": round(share, 4), "profile_types": known}, at, end, path)
                raised.append(rid)
            # every profiled field was judged for drift: a drift finding on one no longer drifting closes
            self.judged.update(f"monitor.fields.{coll}.{p}.type" for p in fields if p in profile)
        return raised

    def logs(self, row: Row, end: datetime, history: list[Row]) -> list[str]:
        lv: LogValidation = self.lv
        raised: list[str] = []
        at, errors = row.start, row.metrics.get("errors", {})
        keys = set(errors) | {k for r in history for k in r.metrics.get("errors", {})}
        for key in sorted(keys):
            cls, scope = key.split("@", 1)
            value = errors.get(key, 0)
            rid = f"monitor.logs.{cls}"
            self.judged.add(rid)
            base = self._baseline(history, at, lambda m, k=key: m.get("errors", {}).get(k, 0))
            why = None
            if value >= lv.threshold:
                why = f"{value} in the {self.m.interval} from {at:%Y-%m-%d %H:%M}Z, at or over the threshold {lv.threshold}"
            elif base is not None and value >= lv.min_jump:
                v = judge(value, base, self.m.z, lv.min_jump)
                if v.direction == "spike":
                    why = (f"{value} in the {self.m.interval} from {at:%Y-%m-%d %H:%M}Z, a jump from the usual "
                           f"{base.median:g} (band up to {base.median + v.threshold:g})")
            if why:
                coll = scope if scope in self.policy.collections else (lv.collection or "logs")
                self._find(rid, scope, coll, "log_validation",
                           f"application logs: {cls.replace('_', ' ')} errors" +
                           (f" about {scope}" if scope in self.policy.collections else f" ({scope})") + f": {why}",
                           value, {"errors": value, "samples": row.metrics.get("samples", {}).get(key, [])}, at, end)
                raised.append(rid)
        return raised

    def results(self) -> list[FindingResult]:
        return sorted(self.found.values(), key=lambda f: (f.collection, f.rule_id, f.variant))


# --- measuring (reads the server) ----------------------------------------------------------------

def due_intervals(store: Store, database: str, m: Monitors, now: datetime) -> list[tuple[datetime, datetime]]:
    step = m.interval_delta
    last_closed = floor(now, step) - step
    with store.session() as s:
        newest = s.scalar(select(MonitorInterval.start).where(MonitorInterval.database == database)
                          .order_by(MonitorInterval.start.desc()).limit(1))
    first = last_closed if newest is None else _aware(newest) + step
    first = max(first, last_closed - step * (m.max_catch_up - 1))
    out = []
    t = first
    while t <= last_closed:
        out.append((t, t + step))
        t += step
    return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def load_history(store: Store, database: str, since: datetime, before: datetime) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    with store.session() as s:
        for r in s.scalars(select(MonitorInterval).where(MonitorInterval.database == database,
                                                         MonitorInterval.start >= since, MonitorInterval.start < before)
                           .order_by(MonitorInterval.start)):
            out[r.collection].append(Row(r.collection, _aware(r.start), r.complete, r.metrics))
    return out


def load_profiles(store: Store, database: str) -> dict[str, dict]:
    with store.session() as s:
        return {p.collection: p.fields for p in s.scalars(select(MonitorProfile).where(MonitorProfile.database == database))}


def save_profile(store: Store, database: str, collection: str, docs: int, fields: dict) -> None:
    with store.session() as s:
        row = s.scalar(select(MonitorProfile).where(MonitorProfile.database == database,
                                                    MonitorProfile.collection == collection))
        if row is None:
            s.add(MonitorProfile(database=database, collection=collection, learned_at=datetime.now(UTC), docs=docs,
                                 fields=fields))
        else:
            row.learned_at, row.docs, row.fields = datetime.now(UTC), docs, fields


def learn_profiles(db, store: Store, policy: Policy, collections: list[str] | None = None) -> dict[str, int]:
    """`schema infer` over each monitored collection: the profiles type drift is judged against."""
    out = {}
    existing = set(db.list_collection_names())
    for coll in collections or monitored(policy):
        if coll in existing:
            docs, prof = learn_profile(db, coll, policy.monitors.profile_sample)
            save_profile(store, db.name, coll, docs, prof)
            out[coll] = docs
    return out


def monitored(policy: Policy) -> list[str]:
    return list(policy.monitors.collections or policy.collections)


def _json(value):
    """Evidence (log samples with ObjectIds and dates) as relaxed Extended JSON, as findings keep it."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def save_rows(store: Store, database: str, rows: list[tuple[Row, datetime, list[str]]], run_id: int | None) -> None:
    now = datetime.now(UTC)
    with store.session() as s:
        for row, end, raised in rows:
            old = s.scalar(select(MonitorInterval).where(MonitorInterval.database == database,
                                                         MonitorInterval.collection == row.collection,
                                                         MonitorInterval.start == row.start))
            if old is None:
                old = MonitorInterval(database=database, collection=row.collection, start=row.start)
                s.add(old)
            old.end, old.hour, old.complete, old.metrics = end, row.start.hour, row.complete, _json(row.metrics)
            old.findings, old.evaluated_at, old.check_run_id = raised, now, run_id


def run_monitors(client, store: Store, database: str, policy: Policy, *, now: datetime | None = None,
                 intervals: list[tuple[datetime, datetime]] | None = None, log_files: list[Path] | None = None,
                 use_archive: bool = True) -> MonitorReport:
    """Measure and judge ``intervals`` (default: the due ones), record findings and rows."""
    began = time.perf_counter()
    m = policy.monitors
    now = now or datetime.now(UTC)
    intervals = intervals if intervals is not None else due_intervals(store, database, m, now)
    rep = MonitorReport(database)
    if not intervals:
        rep.seconds = time.perf_counter() - began
        return rep
    db = client[database]
    colls = monitored(policy) if m.enabled else []  # log validation alone: no collection rows
    existing = set(db.list_collection_names())
    profiles = load_profiles(store, database)
    missing_profiles = [c for c in colls if c in existing and c not in profiles]
    if missing_profiles:  # the first run learns what "normal" looks like from the data as it is
        learn_profiles(db, store, policy, missing_profiles)
        profiles = load_profiles(store, database)
        rep.warnings.append(f"learned the field profile of {', '.join(missing_profiles)} from the current data "
                            "(`monitor baseline --learn` refreshes it)")
    history = load_history(store, database, intervals[0][0] - m.training_delta, intervals[0][0])
    judge_ = Judge(policy, database, profiles)
    rows: list[tuple[Row, datetime, list[str]]] = []
    step = m.interval_delta
    for start, end in intervals:
        writes = read_interval(client, store if use_archive else None, database, start, end, set(colls), m.sample_size)
        fresh = now - end < step  # the count taken now belongs to this interval
        info = {"start": start.isoformat(), "end": end.isoformat(), "complete": writes.complete,
                "entries": writes.entries, "problem": writes.problem, "collections": {}, "findings": []}
        if not writes.complete:
            rep.warnings.append(f"{start:%Y-%m-%d %H:%M}Z: {writes.problem}")
        for coll in colls:
            if coll not in existing:
                continue
            c = writes.counts.get(coll, {})
            metrics = {k: int(c.get(k, 0)) for k in VOLUME}
            if fresh:
                metrics["count"] = fast_count(db, coll)
                prev = next((r for r in reversed(history.get(coll, [])) if r.start == start - step), None)
                if prev is not None and prev.metrics.get("count") is not None:
                    metrics["count_change"] = metrics["count"] - prev.metrics["count"]
            sample = writes.samples.get(coll, [])
            metrics["sampled"] = len(sample)
            metrics["fields"] = field_metrics(coll, sample)
            row = Row(coll, start, writes.complete, metrics)
            raised = judge_.collection(row, end, history.get(coll, []))
            history.setdefault(coll, []).append(row)
            rows.append((row, end, raised))
            info["collections"][coll] = {k: metrics.get(k) for k in (*VOLUME, "count", "count_change", "sampled")}
            info["findings"] += raised
        if policy.log_validation.enabled:
            lc = read_logs(db, policy.log_validation, start, end, log_files)
            lm = {"entries": lc.entries, "bad_lines": lc.bad_lines, "sources": lc.sources,
                  "errors": {f"{c}@{s}": n for (c, s), n in lc.counts.items()},
                  "samples": {f"{c}@{s}": v for (c, s), v in lc.samples.items()}}
            row = Row(LOGS, start, True, lm)
            raised = judge_.logs(row, end, history.get(LOGS, []))
            history.setdefault(LOGS, []).append(row)
            rows.append((row, end, raised))
            info["logs"] = {"entries": lc.entries, "errors": lm["errors"], "bad_lines": lc.bad_lines}
            info["findings"] += raised
            if lc.bad_lines:
                rep.warnings.append(f"{start:%Y-%m-%d %H:%M}Z: {lc.bad_lines} log lines unreadable (not JSON, or no time)")
        rep.intervals.append(info)
    rep.findings = judge_.results()
    rep.judged = sorted(judge_.judged | {f.rule_id for f in rep.findings})
    if rep.judged:
        report = RunReport(database=database, started_at=now, seconds=time.perf_counter() - began,
                           collections=sorted({r.collection for r, _, _ in rows}), rules=rep.judged,
                           docs={}, findings=rep.findings, warnings=rep.warnings)
        rep.summary = record_run(store, report)
        rep.run_id = rep.summary["run_id"]
        with store.session() as s:  # told apart from check runs by `check runs` readers and intake
            run = s.get(CheckRun, rep.run_id)
            run.stats = {**run.stats, "monitor": True, "intervals": len(rep.intervals)}
    save_rows(store, database, rows, rep.run_id)
    rep.seconds = time.perf_counter() - began
    return rep
