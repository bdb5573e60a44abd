"""SLA clocks (S16) and escalation by clock (S17), evaluated at a given time.

``due(policy, incident, at)`` lists the clock events that are due at ``at`` and not yet fired
(``incident.fired`` keeps their keys, so ticking twice records each event once). A breach is a
fact even when the tick comes late: a clock is missed when its deadline passed before the
acknowledgement (or resolution) happened, whenever the tick runs.
``view(policy, incident, at, items_done)`` is what a responder reads (``incident show`` and
``incident clocks``): each deadline, its state and time left, each phase window's end, and the
next escalation the clocks will bring (when, to whom, why).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..policy.models import Policy
from .lifecycle import LIVE
from .timeutil import utc


@dataclass
class ClockEvent:
    key: str  # unique per incident: the idempotency key
    kind: str  # clock_warning | clock_breached | phase_overdue
    clock: str  # acknowledge | resolve | phase id
    due_at: datetime
    escalate_when: str | None = None  # the policy trigger name to escalate on (breaches)


def deadlines(policy: Policy, incident) -> dict[str, datetime]:
    opened = utc(incident.opened_at)
    return {"acknowledge": opened + policy.clocks.acknowledge_delta, "resolve": opened + policy.clocks.resolve_delta}


def due(policy: Policy, incident, at: datetime, items_done: dict[str, bool] | None = None) -> list[ClockEvent]:
    fired = set(incident.fired or [])
    warn = policy.clocks.warn_before_delta
    out: list[ClockEvent] = []
    stops = {"acknowledge": utc(incident.acknowledged_at), "resolve": utc(incident.resolved_at)}
    for clock, deadline in deadlines(policy, incident).items():
        stopped = stops[clock]
        if stopped is None and incident.status not in LIVE:
            continue  # closed without the clock stopping: nothing left to measure
        if stopped is None and at >= deadline - warn:
            out.append(ClockEvent(f"{clock}_warning", "clock_warning", clock, deadline))
        if at >= deadline and (stopped is None or stopped > deadline):
            out.append(ClockEvent(f"{clock}_missed", "clock_breached", clock, deadline, f"{clock}_missed"))
    if incident.status in LIVE and items_done is not None:
        opened = utc(incident.opened_at)
        for phase in policy.phases:
            end = opened + phase.end_delta
            if at >= end and not all(items_done.get(i.id, False) for i in phase.items):
                out.append(ClockEvent(f"phase_overdue:{phase.id}", "phase_overdue", phase.id, end))
    return [e for e in out if e.key not in fired]


def remaining(policy: Policy, incident, at: datetime) -> dict[str, timedelta | None]:
    """Time left on each running clock (negative: breached); None once stopped."""
    stops = {"acknowledge": incident.acknowledged_at, "resolve": incident.resolved_at}
    return {c: (None if stops[c] else d - at) for c, d in deadlines(policy, incident).items()}


def _state(deadline: datetime, stopped: datetime | None, live: bool, at: datetime) -> str:
    if stopped is not None:
        return "met" if stopped <= deadline else "missed"
    if not live:
        return "not measured"  # closed without the clock stopping (a duplicate)
    return "overdue" if at >= deadline else "running"


def view(policy: Policy, incident, at: datetime, items_done: dict[str, bool]) -> dict:
    live = incident.status in LIVE
    stops = {"acknowledge": utc(incident.acknowledged_at), "resolve": utc(incident.resolved_at)}
    out: dict = {"at": at, "clocks": [], "phases": [], "next_escalation": None}
    for clock, deadline in deadlines(policy, incident).items():
        stopped = stops[clock]
        out["clocks"].append({"clock": clock, "deadline": deadline, "state": _state(deadline, stopped, live, at),
                              "left": None if stopped or not live else deadline - at, "stopped_at": stopped,
                              "warn_at": deadline - policy.clocks.warn_before_delta})
    opened = utc(incident.opened_at)
    for phase in policy.phases:
        end = opened + phase.end_delta
        done = all(items_done.get(i.id, False) for i in phase.items)
        out["phases"].append({"phase": phase.id, "name": phase.name, "ends_at": end, "done": done,
                              "left": None if done or not live else end - at})
    if live:
        fired = set(incident.fired or [])
        upcoming = []
        for c in out["clocks"]:
            key = f"{c['clock']}_missed"
            if c["stopped_at"] is None and key not in fired:
                roles = [r for r in policy.escalation.triggered(key, incident.severity)]
                if roles:
                    upcoming.append({"at": c["deadline"], "in": c["deadline"] - at, "clock": c["clock"],
                                     "roles": roles, "reason": f"{c['clock']} target missed"})
        out["next_escalation"] = min(upcoming, key=lambda e: e["at"]) if upcoming else None
    return out
