"""Putting a plan's apply, verify or undo on the authorising incident's timeline.

``record(incidents, incident_id, action, ref, summary, counts, status, actor)`` calls
``incidents.record_recovery_action`` (incidents/recovery.py) and returns what happened:
``{"incident", "recorded": True, "status"}``, ``{"incident", "recorded": False, "error"}``, or
None when no incident is involved. A failure to write the timeline row never turns a done
write into a reported failure: the caller shows the error beside the result.
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
