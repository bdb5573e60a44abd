"""The five response phases (S18-S23) as checklists, with elapsed time against their windows."""

from __future__ import annotations

from datetime import datetime

from ..policy.models import Policy
from .actions import MANUAL
from .timeutil import iso, utc


def checklist_rows(policy: Policy):
    """(phase id, item id, default owner) for every item, to create an incident's checklist."""
    return [(phase.id, item.id, item.owner) for phase, item in policy.checklist()]


def view(policy: Policy, incident, states: dict, at: datetime) -> list[dict]:
    """Every phase with its window (absolute), state and items. ``states``: item id -> ChecklistState."""
    opened = utc(incident.opened_at)
    elapsed = at - opened
    out = []
    for phase in policy.phases:
        items = []
        for step in phase.steps:
            for item in step.items:
                st = states.get(item.id)
                items.append({"id": item.id, "step": step.title, "text": item.text,
                              "owner": st.owner if st else item.owner, "action": item.action,
                              "manual": item.action is None or item.action in MANUAL,
                              "done_at": iso(st.done_at) if st and st.done_at else None,
                              "done_by": st.done_by if st else None, "note": st.note if st else None})
        done = sum(1 for i in items if i["done_at"])
        if done == len(items):
            state = "done"
        elif elapsed >= phase.end_delta:
            state = "overdue"
        elif elapsed >= phase.start_delta:
            state = "in window"
        else:
            state = "upcoming"
        out.append({"id": phase.id, "name": phase.name, "window": [phase.start, phase.end],
                    "starts_at": iso(opened + phase.start_delta), "ends_at": iso(opened + phase.end_delta),
                    "state": state, "done": done, "total": len(items), "items": items})
    return out


def find_item(policy: Policy, item_id: str):
    for phase, item in policy.checklist():
        if item.id == item_id:
            return phase, item
    return None, None
