"""Who authorised a restore into a separate database, and the incident timeline it is recorded on.
(Promotions and their undo are recovery plans: the engine checks the incident, containment and
records them itself, recovery/apply.py.)

Shape: ``Authority(label, incident_id, recorder)``. ``label`` is stored with the action
("incident:12", or "unrecorded" without one). When an incident authorised it, the face
that starts the action (CLI today, web or scheduler later) builds the authority with
``Authority.for_incident(incidents, id)``: that checks the incident exists and is open BEFORE
anything is written. The domain function (restore_snapshot, restore_to_point) then calls
``record`` once the action has ended - applied, failed or partial - so
the timeline row is written by one code path whichever face started the action.

``incidents`` is any object with the incident engine's ``require_open(id)`` and
``record_recovery_action(id, action, ref, summary, counts, status)`` (incidents/api.py): this
package never imports the incident engine, the face hands it down.

Failure behaviour: an id that is not a number, unknown, or of a closed incident is a FluxaError
before any write. A failure to write the timeline row after the action is not allowed to turn a
done write into a reported failure: ``record`` returns what happened (``recorded`` or ``error``)
and the caller shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import FluxaError

Recorder = Callable[..., Any]  # (action, ref, summary, counts, status) -> anything


@dataclass(frozen=True)
class Authority:
    label: str
    incident_id: int | None = None
    recorder: Recorder | None = None

    @classmethod
    def none(cls) -> "Authority":
        """A write to a separate target database: no authorisation needed, nothing to record."""
        return cls("unrecorded")

    @classmethod
    def for_incident(cls, incidents, incident_id: int | str) -> "Authority":
        n = parse_incident_id(incident_id)
        incidents.require_open(n)  # raises FluxaError naming the id (unknown, or closed)

        def recorder(action, ref, summary, counts, status):
            return incidents.record_recovery_action(n, action, ref, summary, counts, status=status)

        return cls(f"incident:{n}", n, recorder)

    def record(self, action: str, ref: str | int, summary: str, counts: dict, status: str = "applied") -> dict | None:
        """Append the action to the incident's timeline; None when no incident authorised it."""
        if self.recorder is None:
            return None
        try:
            self.recorder(action, str(ref), summary, counts, status)
        except FluxaError as exc:
            return {"incident": self.incident_id, "recorded": False, "error": exc.message}
        except Exception as exc:  # noqa: BLE001 - the write is done; say the record failed, never hide the write
            return {"incident": self.incident_id, "recorded": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"incident": self.incident_id, "recorded": True, "status": status}


def parse_incident_id(value: int | str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise FluxaError(f"--incident {value!r} is not an incident id", "incident ids are numbers: "
                         "`fluxa-integrity incident list`") from None
