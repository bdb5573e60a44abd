"""Escalation for ``Incidents``, by hand and by the clocks: ``escalate`` changes severity and/or
notifies a role on the policy's escalation path; ``tick`` evaluates every live incident's SLA
clocks (warnings, breaches, overdue phases, each recorded once and notified), escalates on a
breach by the policy's triggers and then retries the notifications that are due. An escalation
other than the opening's is paged (PagerDuty trigger) on the clock it is about (the keys:
incidents/notifications.py). A mixin: ``Incidents`` in api.py supplies ``store``, ``policy``,
``_change``, ``_deliver``, ``_record``, ``_notify``, ``get``, and ``_states`` comes from the
checklist mixin.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from ..errors import FluxaError
from ..store.incident_models import ChecklistState, Incident
from . import clocks, notifications, timetravel
from .change import SYSTEM, Change
from .lifecycle import LIVE
from .severity import rank
from .timeutil import fmt_delta, iso, now, utc


class EscalationMixin:
    def escalate(self, incident_id: int, reason: str, severity: str | None = None, notify: str | None = None,
                 at: datetime | None = None, actor: str | None = None) -> dict:
        """Manual escalation or de-escalation: change severity and/or notify a role on the path."""
        if not (reason or "").strip():
            raise FluxaError("escalating needs a reason", "pass --reason")
        if severity is None and notify is None:
            raise FluxaError("nothing to escalate", "pass --severity LEVEL and/or --notify ROLE")
        if severity is not None and severity not in self.policy.severity.levels:
            raise FluxaError(f"unknown severity {severity!r}", f"levels: {', '.join(self.policy.severity.levels)}")
        if notify is not None and notify not in self.policy.escalation.path:
            raise FluxaError(f"{notify!r} is not on the escalation path",
                             f"path: {' -> '.join(self.policy.escalation.path)}")
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            if inc.status == "closed":
                raise FluxaError(f"incident {inc.id} is closed")
            if severity is not None and severity != inc.severity:
                old, inc.severity, inc.severity_manual = inc.severity, severity, True
                word = "escalated" if rank(self.policy, severity) < rank(self.policy, old) else "de-escalated"
                self._record(ch, "severity_changed", **{"from": old, "to": severity, "reason": reason, "manual": True})
                self._notify(ch, "severity", f"severity {word} {old} -> {severity}", f"Reason: {reason}")
            if notify is not None:
                self._escalate_to(ch, notify, reason)
        return self.get(incident_id)

    def _escalate_by_trigger(self, ch: Change, when: str, reason: str) -> None:
        for role in self.policy.escalation.triggered(when, ch.inc.severity):
            self._escalate_to(ch, role, reason, trigger=when)

    def _escalate_to(self, ch: Change, role: str, reason: str, trigger: str | None = None) -> None:
        inc = ch.inc
        if role not in (inc.escalated_to or []):
            inc.escalated_to = [*(inc.escalated_to or []), role]
        person = (inc.roles or {}).get(role)
        self._record(ch, "escalation", role=role, person=person, reason=reason, trigger=trigger)
        # paged on the clock it is about (a missed target's, else the running one); not at opening,
        # whose own page (on the acknowledge clock) already carries the first roles
        page = trigger != "opened" and inc.status in LIVE
        clock = trigger[:-len("_missed")] if trigger and trigger.endswith("_missed") else None
        self._notify(ch, "escalation", f"escalated to {role}" + (f" ({person})" if person else ""), f"Reason: {reason}",
                     pagerduty="trigger" if page else None, clock=clock)

    # -- clocks -----------------------------------------------------------------------------

    def clocks(self, incident_id: int, at: datetime | None = None) -> dict:
        """Each deadline with its state and time left, phase ends, and the next escalation
        (JSON-ready: times ISO 8601, durations in seconds)."""
        at = utc(at) or now()
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            done = {k: v.done_at is not None for k, v in self._states(s, inc.id).items()}
            return _jsonable({"incident": inc.id, **clocks.view(self.policy, inc, at, done)})

    def clocks_of_live(self, at: datetime | None = None) -> dict[int, dict]:
        """``clocks`` of every live incident at once (incident id -> the same view), in two
        queries: for dashboards, where one query per incident would not scale."""
        at = utc(at) or now()
        with self.store.session() as s:
            incs = list(s.scalars(select(Incident).where(Incident.status.in_(LIVE)).order_by(Incident.id)))
            done: dict[int, dict[str, bool]] = {i.id: {} for i in incs}
            ticked = select(ChecklistState.incident_id, ChecklistState.item_id).where(
                ChecklistState.incident_id.in_(list(done)), ChecklistState.done_at.is_not(None))
            for incident_id, item_id in s.execute(ticked):  # columns, not rows: 60 items an incident
                done[incident_id][item_id] = True
            return {i.id: _jsonable({"incident": i.id, **clocks.view(self.policy, i, at, done[i.id])}) for i in incs}

    def tick(self, at: datetime | None = None, simulate: bool = False) -> dict:
        """Evaluate every live incident's clocks at ``at``: warnings, breaches, escalation by
        clock, overdue phases (each recorded once), then retry due notifications. A future ``at``
        is a simulation: refused unless ``simulate``, and then only drill incidents move (their
        rows say ``simulated``); real incidents are left to the real clock."""
        at = utc(at) or now()
        future = timetravel.simulated(at)
        if future and not simulate:
            raise FluxaError(f"tick at {iso(at)[:19]}Z is in the future: it would record breaches and escalations "
                             "that have not happened", "add --simulate to move drill incidents only "
                             "(`incident open --drill`); real incidents follow the real clock")
        fired: list[dict] = []
        with self.store.session() as s:
            q = select(Incident.id).where(Incident.status != "closed").order_by(Incident.id)
            if future:
                skipped = list(s.scalars(q.where(Incident.drill.is_not(True))))
                q = q.where(Incident.drill.is_(True))
            else:
                skipped = []
            ids = list(s.scalars(q))
        for iid in ids:
            with self._change(iid, at, SYSTEM) as ch:
                states = self._states(ch.s, iid)
                done = {k: v.done_at is not None for k, v in states.items()}
                for ev in clocks.due(self.policy, ch.inc, at, done):
                    ch.inc.fired = [*(ch.inc.fired or []), ev.key]
                    self._record(ch, ev.kind, clock=ev.clock, due_at=ev.due_at)
                    fired.append({"incident": iid, "event": ev.kind, "clock": ev.clock, "due_at": iso(ev.due_at)})
                    if ev.kind == "clock_warning":
                        self._notify(ch, "clock", f"{ev.clock} due at {ev.due_at:%H:%M} UTC "
                                     f"(in {fmt_delta(ev.due_at - at)})")
                    elif ev.kind == "clock_breached":
                        self._notify(ch, "clock", f"{ev.clock} target missed (due {ev.due_at:%H:%M} UTC)")
                        self._escalate_by_trigger(ch, ev.escalate_when, reason=f"{ev.clock} target missed")
                    elif ev.kind == "phase_overdue":
                        name = next((p.name for p in self.policy.phases if p.id == ev.clock), ev.clock)
                        self._notify(ch, "phase", f"phase {name} overdue (window ended {ev.due_at:%H:%M} UTC)",
                                     "Its window ended with checklist items still open: "
                                     f"`fluxa-integrity incident phase {iid}`.")
        due = notifications.pending_ids(self.store, due_at=at, incident_ids=ids if future else None)
        retried = self._deliver(due, at)
        return {"at": iso(at), "simulated": future, "events": fired, "notifications_retried": retried,
                "skipped_real_incidents": skipped}


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, timedelta):
        return v.total_seconds()
    return v
