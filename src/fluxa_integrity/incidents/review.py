"""Looking back on an incident for ``Incidents``: the root-cause review (root cause, contributing
factors, lessons, action items), the postmortem (numbers and Markdown, incidents/postmortem.py)
and the hash-chained timeline with its verification. A mixin: ``Incidents`` in api.py supplies
``store``, ``policy``, ``_get``, ``_change``, ``_record``, ``get``, and ``_states`` comes from the
checklist mixin.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ..store.incident_models import Incident, Publication
from . import intake, phases, postmortem, timeline
from .timeutil import iso, now, utc


class ReviewMixin:
    def review(self, incident_id: int, root_cause: str | None = None, factors: list[str] | None = None,
               lessons: list[str] | None = None, action_items: list[str] | None = None,
               at: datetime | None = None, actor: str | None = None) -> dict:
        """Fill the root-cause review (appends factors, lessons and action items)."""
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            if root_cause is not None:
                inc.root_cause = root_cause.strip() or None
            inc.contributing_factors = [*(inc.contributing_factors or []), *(factors or [])]
            inc.lessons = [*(inc.lessons or []), *(lessons or [])]
            inc.action_items = [*(inc.action_items or []), *(action_items or [])]
            self._record(ch, "review", root_cause=root_cause, factors=factors, lessons=lessons,
                         action_items=action_items)
        return self.get(incident_id)

    def postmortem(self, incident_id: int, at: datetime | None = None) -> dict:
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            evs = timeline.events(s, inc.id)
            found = intake.linked_findings(s, inc.id)
            pubs = list(s.scalars(select(Publication).where(Publication.incident_id == inc.id).order_by(Publication.id)))
            view = phases.view(self.policy, inc, self._states(s, inc.id), utc(at) or now())
            md = postmortem.render(self.policy, inc, evs, found, pubs, view)
            return {"incident": inc.id, "numbers": postmortem.numbers_json(postmortem.numbers(self.policy, inc)),
                    "markdown": md}

    # -- timeline ---------------------------------------------------------------------------

    def verify_timeline(self, incident_id: int | None = None) -> list[dict]:
        with self.store.session() as s:
            if incident_id is not None:
                incs = [self._get(s, incident_id, lock=False)]
            else:
                incs = list(s.scalars(select(Incident).order_by(Incident.id)))
            return [timeline.verify(s, i).as_dict() for i in incs]

    def timeline(self, incident_id: int) -> list[dict]:
        with self.store.session() as s:
            self._get(s, incident_id, lock=False)
            return [{"seq": e.seq, "at": iso(e.at), "kind": e.kind, "actor": e.actor, "data": e.data,
                     "hash": e.hash} for e in timeline.events(s, incident_id)]
