"""Enhanced monitoring after an incident resolves (S32; issue 11, item 6).

When an incident resolves, the collections it touched get the policy's tighter schedule
(``enhanced_monitoring: {period: 7d, checks_every: 1h}``): every enabled rule of those collections
runs, as a full check run, every ``checks_every`` until ``period`` after the resolution; then the
job ends by itself. Nobody installs or removes anything.

Shape: ``windows(store, policy, db, time_scale)`` lists the ``Window``s open now - one per
resolved (or since closed) incident that is real (not a drill, not a duplicate) and names
collections - with the resolution time and the end; ``job_defs(...)`` turns each into a
``JobDef`` named ``enhanced-<incident>`` running the ``check`` task (tasks.py) with those rules,
so it runs, is leased, recorded and shown like any policy job (``jobs list`` lists it with its end;
``jobs show|run-now enhanced-7`` work while it lasts). ``serve`` asks for them every
``SYNC_EVERY_S`` (scheduler.py adds the new ones at once and drops the ended ones).

Time scale: like every schedule, the period is compressed by ``--time-scale`` (7 days at 43200
is 14 s), measured from the resolution time.

Findings of an enhanced run go through the automatic incidents like any check's: a finding the
resolved incident already holds stays its own (no new page); a new problem in those collections
opens a new incident.

Failure: a store that cannot be read raises (the caller logs it and keeps the jobs it has).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from ..policy.durations import format_duration
from ..policy.models import Policy
from ..store import Store
from ..store.incident_models import Incident
from .jobs import JobDef
from .leases import aware

UTC = timezone.utc
PREFIX = "enhanced-"
SYNC_EVERY_S = 2.0


@dataclass
class Window:
    incident_id: int
    database: str | None
    collections: list[str]
    resolved_at: datetime
    until: datetime


def windows(store: Store, policy: Policy, db: str | None = None, time_scale: float = 1.0,
            at: datetime | None = None) -> list[Window]:
    """The enhanced-monitoring windows open at ``at`` (of ``db``, or of every database)."""
    em = policy.enhanced_monitoring
    if not em.enabled:
        return []
    at = at or datetime.now(UTC)
    period = em.period_delta / time_scale
    with store.session() as s:
        q = select(Incident).where(Incident.status.in_(("resolved", "closed")), Incident.resolved_at.is_not(None),
                                   Incident.drill.is_(False),
                                   Incident.duplicate_of.is_(None)).order_by(Incident.id)
        if db is not None:
            q = q.where(Incident.database == db)
        out = []
        for inc in s.scalars(q):
            colls = [c for c in (inc.collections or []) if c in policy.collections]
            resolved = aware(inc.resolved_at)
            if colls and resolved + period > at:
                out.append(Window(inc.id, inc.database, colls, resolved, resolved + period))
        return out


def job_defs(store: Store, policy: Policy, db: str | None = None, time_scale: float = 1.0,
             at: datetime | None = None) -> list[JobDef]:
    every = policy.enhanced_monitoring.every_delta
    jobs = []
    for w in windows(store, policy, db, time_scale, at):
        rules = [r.id for c in w.collections for _, r in policy.iter_rules(c) if r.enabled]
        if not rules:
            continue
        jobs.append(JobDef(f"{PREFIX}{w.incident_id}", "check",
                           f"Enhanced monitoring after incident {w.incident_id}: {', '.join(w.collections)}",
                           every, f"every {format_duration(every)} until {w.until.isoformat(timespec='seconds')} "
                           f"(incident {w.incident_id} resolved {w.resolved_at.isoformat(timespec='seconds')})",
                           {"category": "enhanced", "rules": rules, "incremental": False, "incident": w.incident_id,
                            "collections": w.collections, "until": w.until.isoformat()}, until=w.until))
    return jobs


def is_enhanced(name: str) -> bool:
    return name.startswith(PREFIX)
