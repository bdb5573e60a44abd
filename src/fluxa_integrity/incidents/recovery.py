"""Recovery actions on an incident's record, for ``Incidents`` (the restore engineer's contract):
``require_open`` validates an ``--incident ID`` before any write, ``record_recovery_action``
appends what a restore, promotion or undo did (with counts and status) to the hash-chained
timeline, where the postmortem's "Recovery actions" section reads it.

Shape: a mixin; ``Incidents`` in api.py supplies ``store``, ``_get``, ``_change``, ``_record``,
``_notify``, ``get``/``get_in``. Failure: FluxaError naming the incident id when it does not
exist, is resolved or closed, or when ``action``/``status`` is not one of the known words.
"""

from __future__ import annotations

from datetime import datetime

from ..errors import FluxaError
from .lifecycle import LIVE

RECOVERY_ACTIONS = ("restore", "promote", "undo", "recipe", "recipe-undo", "verify")
# closed / still-open: the outcome of a "verify" (the plan's rules ran again on the live data)
RECOVERY_STATUSES = ("applied", "failed", "partial", "closed", "still-open")


class RecoveryMixin:
    def require_open(self, incident_id: int) -> dict:
        """The incident dict when ``incident_id`` exists and is live (not resolved or closed)."""
        try:
            iid = int(incident_id)
        except (TypeError, ValueError):
            raise FluxaError(f"incident id {incident_id!r} is not a number",
                             "list them with `fluxa-integrity incident list`") from None
        with self.store.session() as s:
            inc = self._get(s, iid, lock=False)
            if inc.status not in LIVE:
                raise FluxaError(f"incident {iid} is {inc.status}: it authorises no more recovery work",
                                 f"open a new incident, or reopen it with `fluxa-integrity incident status {iid} "
                                 "investigating`" if inc.status == "resolved" else
                                 "open a new incident: `fluxa-integrity incident open --title ...`")
            return self.get_in(s, inc)

    def record_recovery_action(self, incident_id: int, action: str, ref: str, summary: str, counts: dict,
                               status: str = "applied", at: datetime | None = None,
                               actor: str | None = None) -> dict:
        """Append a ``recovery_action`` row {action, ref, summary, counts, status} to the timeline.
        Recorded even on a resolved incident (a restore that started while it was live may end
        later); a closed incident's record is final and refuses it."""
        if action not in RECOVERY_ACTIONS:
            raise FluxaError(f"unknown recovery action {action!r}", f"one of: {', '.join(RECOVERY_ACTIONS)}")
        if status not in RECOVERY_STATUSES:
            raise FluxaError(f"unknown recovery status {status!r}", f"one of: {', '.join(RECOVERY_STATUSES)}")
        with self._change(incident_id, at, actor) as ch:
            if ch.inc.status == "closed":
                raise FluxaError(f"incident {ch.inc.id} is closed; its record is final",
                                 "open a new incident for further recovery work")
            data = {"action": action, "ref": str(ref), "summary": summary, "counts": counts or {}, "status": status}
            self._record(ch, "recovery_action", **data)
            if action == "restore" and str(ref) not in (ch.inc.restore_ids or []):
                ch.inc.restore_ids = sorted({*(ch.inc.restore_ids or []), str(ref)})
            self._notify(ch, "recovery", f"{action} {ref} {status}", summary)
        return self.get(incident_id)
