"""Putting a plan's apply, verify or undo on the authorising incident's timeline.

``record(incidents, incident_id, action, ref, summary, counts, status, actor)`` calls
``incidents.record_recovery_action`` (incidents/recovery.py) and returns what happened:
``{"incident", "recorded": True, "status"}``, ``{"incident", "recorded": False, "error"}``, or
None when no incident is involved. A failure to write the timeline row never turns a done
write into a reported failure: the caller shows the error beside the result.

Exactly once: apply and undo put the entry in the plan row (``result.pending_record``) in the same
statement that sets the plan's final status, then record it and drop it (``record_pending``). A
kill between the status and the record leaves the entry in the row; the next apply, undo or
verify of that plan records it first (``flush_pending``). So a killed run's change set is not
recorded twice by the rerun, nor lost.
"""

from __future__ import annotations

from ..errors import FluxaError


def counts_text(counts: dict) -> str:
    parts = []
    for name, c in counts.items():
        shown = ", ".join(f"{v} {k}" for k, v in c.items() if v)
        parts.append(f"{name} {shown or 'nothing'}")
    return "; ".join(parts) or "nothing"


def record(incidents, incident_id: int | None, action: str, ref: str, summary: str, counts: dict, status: str,
           actor: str | None = None) -> dict | None:
    if incident_id is None or incidents is None:
        return None
    try:
        incidents.record_recovery_action(incident_id, action, ref, summary, counts, status=status, actor=actor)
    except FluxaError as exc:
        return {"incident": incident_id, "recorded": False, "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - the write is done; say the record failed, never hide the write
        return {"incident": incident_id, "recorded": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"incident": incident_id, "recorded": True, "status": status}


PENDING = "pending_record"  # the plan row's result key holding a timeline entry not yet recorded


def pending(incident_id: int | None, action: str, ref: str, summary: str, counts: dict, status: str,
            actor: str | None) -> dict | None:
    """A timeline entry kept with the plan's status change, recorded right after it
    (``record_pending``): a kill in between leaves it for the next command on the plan
    (``flush_pending``), so a change set is recorded once - never twice, never lost."""
    if incident_id is None:
        return None
    return {"incident": incident_id, "action": action, "ref": ref, "summary": summary, "counts": counts,
            "status": status, "actor": actor}


def record_pending(store, incidents, plan_id: str) -> dict | None:
    """Record the plan's pending timeline entry, if any, then drop it from the row."""
    from .plans_store import drop_result, get_row

    entry = (get_row(store, plan_id)["result"] or {}).get(PENDING)
    if not entry:
        return None
    out = record(incidents, entry["incident"], entry["action"], entry["ref"], entry["summary"], entry["counts"],
                 entry["status"], entry.get("actor"))
    drop_result(store, plan_id, PENDING)  # a refused record is reported by the caller, not retried for ever
    return out

