"""The phase checklists of one incident for ``Incidents``: the checklist view and ticking an item,
optionally carrying out its action first (a registered containment action, or publishing the
matching communication). An item with an action is ticked only when the action reported "done".
A mixin: ``Incidents`` in api.py supplies ``store``, ``policy``, ``_get``, ``_change``, ``_record``,
``get``/``get_in``, and ``publish`` comes from the publishing mixin.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import FluxaError
from ..store.incident_models import ChecklistState
from . import phases
from .actions import MANUAL, ActionContext, handler_for
from .timeutil import now, utc

# Checklist actions that are communications: carried out by publishing the named template
# rather than through the action registry.
COMMS_ACTIONS = {"first_communication": "initial", "progress_communication": "progress",
                 "resolution_communication": "resolution"}


class ChecklistMixin:
    def checklist(self, incident_id: int, at: datetime | None = None) -> list[dict]:
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            return phases.view(self.policy, inc, self._states(s, inc.id), utc(at) or now())

    def _states(self, s: Session, incident_id: int) -> dict[str, ChecklistState]:
        return {r.item_id: r for r in s.scalars(select(ChecklistState).where(ChecklistState.incident_id == incident_id))}

    def complete_item(self, incident_id: int, item_id: str, note: str | None = None, owner: str | None = None,
                      run: bool = False, params: dict | None = None, values: dict | None = None,
                      at: datetime | None = None, actor: str | None = None) -> dict:
        """Tick a checklist item (``run``: carry out its action first; the item is ticked only when
        the action succeeded). ``owner`` reassigns the item without ticking it."""
        phase, item = phases.find_item(self.policy, item_id)
        if item is None:
            raise FluxaError(f"no checklist item {item_id!r}", "see `fluxa-integrity incident phase ID`")
        if owner and owner not in self.policy.roles:
            raise FluxaError(f"unknown role {owner!r}", f"the policy's roles: {', '.join(self.policy.roles)}")
        if run and not item.action:
            raise FluxaError(f"item {item_id} has no action the tool can carry out", "tick it with --done")
        if run and item.action in MANUAL:
            raise FluxaError(f"item {item_id} is manual: {MANUAL[item.action]}",
                             f"tick it once done: `fluxa-integrity incident phase ID {item_id} --done --note ...`")
        if run and item.action in COMMS_ACTIONS:
            self.publish(incident_id, COMMS_ACTIONS[item.action], values or {}, at=at, actor=actor)
        result = None
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            if inc.status == "closed":
                raise FluxaError(f"incident {inc.id} is closed; its checklist is final")
            st = self._states(ch.s, inc.id)[item_id]
            if owner:
                st.owner = owner
                self._record(ch, "checklist_owner", phase=phase.id, item=item_id, owner=owner)
                if not run and note is None:
                    return self.get(incident_id)
            if run and item.action not in COMMS_ACTIONS:
                result = handler_for(item.action)(ActionContext(inc, item_id, ch.at, ch.actor, params or {},
                                                                self.policy, self.store))
                self._record(ch, "action", phase=phase.id, item=item_id, action=item.action, result=result)
                if result.get("status") != "done":  # the item stays open: nothing was carried out
                    return {**self.get_in(ch.s, inc), "action_result": result}
            newly = st.done_at is None
            st.done_at, st.done_by, st.note = ch.at, ch.actor, note
            self._record(ch, "checklist", phase=phase.id, item=item_id, text=item.text, note=note)
            states = self._states(ch.s, inc.id)
            if newly and all(states[i.id].done_at is not None for i in phase.items):  # its last item: a phase change
                self._notify(ch, "phase", f"phase {phase.name} done", f"Every item of phase {phase.name} is ticked.")
        out = self.get(incident_id)
        if result is not None:
            out["action_result"] = result
        return out
