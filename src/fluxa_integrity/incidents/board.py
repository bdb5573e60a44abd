"""What a dashboard reads about incidents and findings, at any number of them: counted and
ordered by the store or from the incidents' own columns, never one query per incident or a
finding loaded to be counted.

- ``live_board(store, policy, at, limit)``: the live incidents, most urgent first (the earliest
  deadline still running: acknowledge until acknowledged, then resolve; then the newest), their
  count by severity and by status (one GROUP BY), and the first ``limit`` of them with what a
  card shows: title, severity, status, drill, data classes, the acknowledge and resolve clocks
  and the next escalation - ``Incidents.clocks`` without the phases (those need the checklist
  rows, 60 an incident; the incident page has them). Two SELECTs of ten columns, ``limit`` rows
  each (index ``ix_incidents_status_opened_at``, migration 0013).
- ``open_findings_by_class(store, database)``: {data class or None: open findings}, one GROUP BY
  (index ``ix_findings_status_data_class``, migration 0013).

Reads only; the results are JSON-ready (times ISO 8601, durations in seconds) as ``clocks`` is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from ..policy.models import Policy
from ..store import Store
from ..store.incident_models import Incident
from ..store.models import Finding
from .clocks import view
from .escalation import _jsonable
from .lifecycle import LIVE
from .timeutil import iso, now, utc

CARD_COLUMNS = (Incident.id, Incident.title, Incident.severity, Incident.status, Incident.drill,
                Incident.data_classes, Incident.opened_at, Incident.acknowledged_at, Incident.resolved_at,
                Incident.fired)


def live_board(store: Store, policy: Policy, at: datetime | None = None, limit: int | None = None) -> dict:
    at = utc(at) or now()
    live = Incident.status.in_(LIVE)
    # the earliest running deadline is opened_at + the acknowledge SLA until acknowledged, then
    # opened_at + the resolve SLA: in each of the two groups the order is opened_at's, so the
    # first ``limit`` of the merge are among the first ``limit`` of each group
    groups = (Incident.acknowledged_at.is_(None), Incident.acknowledged_at.is_not(None))
    with store.session() as s:
        counts = s.execute(select(Incident.severity, Incident.status, func.count()).where(live)
                           .group_by(Incident.severity, Incident.status)).all()
        rows = []
        for unacked in groups:
            q = select(*CARD_COLUMNS).where(live, unacked).order_by(Incident.opened_at, Incident.id.desc())
            rows += s.execute(q if limit is None else q.limit(limit)).all()
    by_severity: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for severity, status, n in counts:
        by_severity[severity] = by_severity.get(severity, 0) + n
        by_status[status] = by_status.get(status, 0) + n
    ack, resolve = policy.clocks.acknowledge_delta, policy.clocks.resolve_delta
    rows.sort(key=lambda r: (utc(r.opened_at) + (ack if r.acknowledged_at is None else resolve), -r.id))
    cards = []
    for r in rows if limit is None else rows[:limit]:
        v = view(policy, r, at, {})
        cards.append(_jsonable({"id": r.id, "title": r.title, "severity": r.severity, "status": r.status,
                                "drill": bool(r.drill), "data_classes": r.data_classes or [],
                                "clocks": v["clocks"], "next_escalation": v["next_escalation"]}))
    return {"at": iso(at), "total": sum(by_status.values()), "by_severity": by_severity, "by_status": by_status,
            "incidents": cards}


def open_findings_by_class(store: Store, database: str | None = None) -> dict[str | None, int]:
    q = select(Finding.data_class, func.count()).where(Finding.status == "open").group_by(Finding.data_class)
    if database:
        q = q.where(Finding.database == database)
    with store.session() as s:
        return {dc: n for dc, n in s.execute(q)}
