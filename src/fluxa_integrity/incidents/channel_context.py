"""The incident as a channel message shows it, taken when the message is queued: severity,
status, the playbook phase the responders should be in, data classes, the two SLA clocks, whom
it was escalated to. The Slack incident channel's fields and PagerDuty's custom details read it
from ``msg.extra["incident"]`` (comms/slack_blocks.py, comms/pagerduty.py), so a message retried
an hour later still shows the incident as it was when it happened.

Shape (JSON-ready): ``{"id", "title", "database", "status", "severity", "severity_label",
"drill", "data_classes": [titles], "collections", "escalated_to", "at": ISO,
"phase": {"id", "name", "state": "in window"|"overdue"} | None (every phase done),
"clocks": [{"clock", "state", "deadline", "stopped_at", "left": seconds | None}]}``.
One query (the checklist's ticks) on top of the incident row already in the session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..policy.models import Policy
from ..store.incident_models import ChecklistState, Incident
from . import clocks, phases
from .timeutil import iso


def snapshot(s: Session, policy: Policy, inc: Incident, at: datetime) -> dict:
    states = {r.item_id: r for r in s.scalars(select(ChecklistState).where(ChecklistState.incident_id == inc.id))}
    done = {k: v.done_at is not None for k, v in states.items()}
    view = clocks.view(policy, inc, at, done)
    current = next((p for p in phases.view(policy, inc, states, at) if p["state"] in ("in window", "overdue")), None)
    titles = []
    for dc in inc.data_classes or []:
        try:
            titles.append(policy.data_class(dc).title)
        except KeyError:
            titles.append(dc)
    return {"id": inc.id, "title": inc.title, "database": inc.database, "status": inc.status,
            "severity": inc.severity, "severity_label": policy.severity.levels.get(inc.severity),
            "drill": bool(inc.drill), "data_classes": titles, "collections": list(inc.collections or []),
            "escalated_to": list(inc.escalated_to or []), "at": iso(at),
            "phase": {"id": current["id"], "name": current["name"], "state": current["state"]} if current else None,
            "clocks": [{"clock": c["clock"], "state": c["state"], "deadline": iso(c["deadline"]),
                        "stopped_at": iso(c["stopped_at"]),
                        "left": c["left"].total_seconds() if c["left"] is not None else None}
                       for c in view["clocks"]]}
