"""Escalation for ``Incidents``, by hand and by the clocks: ``escalate`` changes severity and/or
notifies a role on the policy's escalation path; ``tick`` evaluates every live incident's SLA
clocks (warnings, breaches, overdue phases, each recorded once), escalates on a breach by the
policy's triggers and then retries the notifications that are due. A mixin: ``Incidents`` in
api.py supplies ``store``, ``policy``, ``_change``, ``_deliver``, ``_record``, ``_notify``, ``get``,
and ``_states`` comes from the checklist mixin.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ..errors import FluxaError
from ..store.incident_models import Incident
from . import clocks, notifications
from .change import SYSTEM, Change
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
        self._notify(ch, "escalation", f"escalated to {role}" + (f" ({person})" if person else ""), f"Reason: {reason}")

    # -- clocks -----------------------------------------------------------------------------

    def tick(self, at: datetime | None = None) -> dict:
        """Evaluate every live incident's clocks at ``at``: warnings, breaches, escalation by
        clock, overdue phases (each recorded once), then retry due notifications."""
        at = utc(at) or now()
        fired: list[dict] = []
        with self.store.session() as s:
            ids = list(s.scalars(select(Incident.id).where(Incident.status != "closed").order_by(Incident.id)))
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
        retried = self._deliver(notifications.pending_ids(self.store, due_at=at), at)
        return {"at": iso(at), "events": fired, "notifications_retried": retried}
