"""Run history in the state store: findings keep their identity across runs (fingerprint),
gain a sighting per run that sees them, and close when a full run of their rule no longer does.

Everything a run writes goes in one transaction, so an interrupted write leaves nothing half
done; a run that failed is recorded as failed, with its error, and changes no finding.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from bson import json_util
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from ..store import Store
from ..store.models import CheckRun, CollectionCount, Finding, Sighting, Watermark
from .findings import fingerprint
from .runner import RunReport

UTC = timezone.utc


def _json(value):
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def record_run(store: Store, report: RunReport) -> dict:
    """Persist a finished run; returns its id and how many findings opened, stayed open, closed."""
    now = datetime.now(UTC)
    summary = {"opened": 0, "seen_again": 0, "reopened": 0, "closed": 0}
    with store.session() as s:
        run = CheckRun(database=report.database, started_at=report.started_at, finished_at=now, status="complete",
                       rules=report.rules, collections=report.collections,
                       stats=_json({"docs": report.docs, "seconds": round(report.seconds, 3),
                                    "warnings": report.warnings, "incremental": report.incremental,
                                    "missing_collections": report.missing, "changes": report.changes,
                                    "findings": len(report.findings)}))
        s.add(run)
        s.flush()
        seen = set()
        for f in report.findings:
            fp = fingerprint(report.database, f.rule_id, f.variant)
            seen.add(fp)
            row = s.scalar(select(Finding).where(Finding.database == report.database, Finding.fingerprint == fp))
            fields = dict(rule_id=f.rule_id, variant=f.variant, collection=f.collection, category=f.category,
                          data_class=f.data_class, criticality=f.criticality, message=f.message, count=f.count,
                          affected_users=f.affected_users, samples=_json(f.samples),
                          first_doc_time=f.first_doc_time, last_doc_time=f.last_doc_time, last_run_id=run.id)
            if row is None:
                row = Finding(database=report.database, fingerprint=fp, status="open", opened_at=now,
                              first_run_id=run.id, **fields)
                s.add(row)
                summary["opened"] += 1
            else:
                if row.status == "closed":
                    row.status, row.closed_at = "open", None
                    summary["reopened"] += 1
                else:
                    summary["seen_again"] += 1
                for k, v in fields.items():
                    setattr(row, k, v)
            s.flush()
            s.add(Sighting(finding_id=row.id, run_id=run.id, seen_at=now, count=f.count))
        if not report.incremental:  # only a run that read everything can say a problem is gone
            stale = s.scalars(select(Finding).where(Finding.database == report.database, Finding.status == "open",
                                                    Finding.rule_id.in_(report.rules)))
            for row in stale:
                if row.fingerprint not in seen:
                    row.status, row.closed_at, row.last_run_id = "closed", now, run.id
                    summary["closed"] += 1
        for coll, n in report.counts.items():
            s.add(CollectionCount(run_id=run.id, database=report.database, collection=coll, count=n, counted_at=now))
        for coll, (fld, value) in report.watermarks.items():
            wm = s.scalar(select(Watermark).where(Watermark.database == report.database, Watermark.collection == coll))
            if wm is None:
                s.add(Watermark(database=report.database, collection=coll, field=fld, value=value, run_id=run.id))
            else:
                wm.field, wm.value, wm.run_id = fld, value, run.id
        summary["run_id"] = run.id
    return summary


def record_failed_run(store: Store, database: str, started_at: datetime, error: str,
                      collections: list[str], rules: list[str]) -> int:
    with store.session() as s:
        run = CheckRun(database=database, started_at=started_at, finished_at=datetime.now(UTC), status="failed",
                       rules=rules, collections=collections, stats={}, error=error)
        s.add(run)
        s.flush()
        return run.id


def baselines(store: Store, database: str) -> dict[str, int]:
    """Counts from the most recent complete run that counted each collection."""
    with store.session() as s:
        latest = (select(CollectionCount.collection, func.max(CollectionCount.id).label("id"))
                  .where(CollectionCount.database == database).group_by(CollectionCount.collection).subquery())
        rows = s.execute(select(CollectionCount.collection, CollectionCount.count)
                         .join(latest, CollectionCount.id == latest.c.id)).all()
        return {c: n for c, n in rows}


def watermarks(store: Store, database: str) -> dict[str, datetime]:
    with store.session() as s:
        rows = s.scalars(select(Watermark).where(Watermark.database == database)).all()
        return {w.collection: (w.value if w.value.tzinfo else w.value.replace(tzinfo=UTC)) for w in rows}


def list_runs(store: Store, database: str | None = None, limit: int = 20) -> list[CheckRun]:
    with store.session() as s:
        q = select(CheckRun).order_by(CheckRun.id.desc()).limit(limit)
        if database:
            q = q.where(CheckRun.database == database)
        return list(s.scalars(q))


def list_findings(store: Store, database: str | None = None, status: str | None = "open") -> list[Finding]:
    with store.session() as s:
        q = (select(Finding).options(selectinload(Finding.sightings))
             .order_by(Finding.collection, Finding.rule_id, Finding.variant))
        if database:
            q = q.where(Finding.database == database)
        if status:
            q = q.where(Finding.status == status)
        return list(s.scalars(q))


def get_finding(store: Store, ref: str) -> tuple[Finding, list[Sighting]] | None:
    """By numeric id or fingerprint prefix."""
    with store.session() as s:
        if ref.isdigit():
            row = s.get(Finding, int(ref))
        else:
            rows = s.scalars(select(Finding).where(Finding.fingerprint.startswith(ref))).all()
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            return None
        return row, list(row.sightings)


def findings_per_run(store: Store, database: str, since: datetime, until: datetime,
                     monitor: bool = False) -> list[dict]:
    """What each complete run of ``database`` started from ``since`` to ``until`` saw, oldest
    first: ``{run_id, started_at, incremental, by_category: {category: {"findings": n,
    "documents": n}}, findings, documents}`` - the findings it sighted (open after it) and the
    documents they counted, from its sightings. ``monitor`` picks the monitor runs instead of the
    check runs (they share the table; ``stats.monitor`` tells them apart)."""
    with store.session() as s:
        runs = [r for r in s.scalars(select(CheckRun).where(CheckRun.database == database, CheckRun.status == "complete",
                                                            CheckRun.started_at >= since, CheckRun.started_at <= until)
                                     .order_by(CheckRun.started_at, CheckRun.id))
                if bool((r.stats or {}).get("monitor")) == monitor]
        ids = [r.id for r in runs]
        counts: dict[int, dict[str, dict[str, int]]] = {i: {} for i in ids}
        for k in range(0, len(ids), 500):
            q = (select(Sighting.run_id, Finding.category, func.count(Sighting.id), func.sum(Sighting.count))
                 .join(Finding, Finding.id == Sighting.finding_id).where(Sighting.run_id.in_(ids[k:k + 500]))
                 .group_by(Sighting.run_id, Finding.category))
            for run_id, category, n, docs in s.execute(q):
                counts[run_id][category] = {"findings": int(n), "documents": int(docs or 0)}
    out = []
    for r in runs:
        by = dict(sorted(counts[r.id].items()))
        started = r.started_at if r.started_at.tzinfo else r.started_at.replace(tzinfo=UTC)
        out.append({"run_id": r.id, "started_at": started, "incremental": bool((r.stats or {}).get("incremental")),
                    "by_category": by, "findings": sum(v["findings"] for v in by.values()),
                    "documents": sum(v["documents"] for v in by.values())})
    return out
