"""One change to one incident: the session, the locked incident row, the time, the actor and the
outbox of notification ids queued with it. ``Incidents._change`` opens one per write (one
transaction) and delivers the outbox after the commit; the mixins of the API (publishing,
checklist_ops, escalation, review) take it as ``ch``. It lives here, below api.py, so that they
can name it without importing api.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from ..store.incident_models import Incident

SYSTEM = "fluxa-integrity"  # the actor when nobody is named: the tool itself (tick, intake)


@dataclass
class Change:
    s: Session
    inc: Incident
    at: datetime
    actor: str
    outbox: list[int] = field(default_factory=list)
