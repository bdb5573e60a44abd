"""The append-only, hash-chained timeline of an incident.

Each row stores ``hash = sha256(prev_hash + canonical JSON of the row)``, where the row is
(incident id, seq, time, kind, actor, data) and ``prev_hash`` is the previous row's hash ("" for
the first). The incident keeps the head hash and the row count, so an edited row (its hash no
longer matches), a deleted row in the middle (the next row's prev_hash and the seq numbers
break) and a deleted last row (head and count disagree) are all detected by ``verify``.
This detects tampering by someone editing the database; it is not a signature.
A row written at a simulated (future) time, which only a drill allows, carries ``simulated: true``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.incident_models import Incident, IncidentEvent
from .timetravel import simulated
from .timeutil import iso


def _plain(value):
    """JSON-native data, so what is hashed is exactly what the store gives back."""
    return json.loads(json.dumps(value, default=lambda v: iso(v) if isinstance(v, datetime) else str(v)))


def row_hash(prev_hash: str, incident_id: int, seq: int, at: datetime, kind: str, actor: str, data: dict) -> str:
    canonical = json.dumps({"incident": incident_id, "seq": seq, "at": iso(at), "kind": kind, "actor": actor,
                            "data": data}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def append(s: Session, incident: Incident, kind: str, at: datetime, actor: str = "fluxa-integrity",
           **data) -> IncidentEvent:
    """Add one row at the end of the chain (the unique (incident, seq) refuses a forked chain)."""
    if simulated(at):  # only a drill gets here (timetravel.check): say so on the row itself
        data["simulated"] = True
    data = _plain(data)
    seq = incident.timeline_count + 1
    h = row_hash(incident.timeline_head, incident.id, seq, at, kind, actor, data)
    ev = IncidentEvent(incident_id=incident.id, seq=seq, at=at, kind=kind, actor=actor, data=data,
                       prev_hash=incident.timeline_head, hash=h)
    s.add(ev)
    incident.timeline_head, incident.timeline_count = h, seq
    s.flush()
    return ev


def events(s: Session, incident_id: int) -> list[IncidentEvent]:
    return list(s.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == incident_id)
                          .order_by(IncidentEvent.seq)))


@dataclass
class Verification:
    incident_id: int
    rows: int
    ok: bool
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"incident": self.incident_id, "rows": self.rows, "ok": self.ok, "problems": self.problems}


def verify(s: Session, incident: Incident) -> Verification:
    rows = events(s, incident.id)
    problems: list[str] = []
    prev = ""
    for expected_seq, ev in enumerate(rows, start=1):
        if ev.seq != expected_seq:
            problems.append(f"row {expected_seq} is missing (next row found: seq {ev.seq}): a row was deleted")
            expected_seq = ev.seq
        if ev.prev_hash != prev:
            problems.append(f"row {ev.seq} ({ev.kind}): does not follow the previous row (chain broken)")
        if row_hash(ev.prev_hash, ev.incident_id, ev.seq, ev.at, ev.kind, ev.actor, ev.data) != ev.hash:
            problems.append(f"row {ev.seq} ({ev.kind}): content does not match its hash (edited)")
        prev = ev.hash
    if len(rows) != incident.timeline_count or prev != incident.timeline_head:
        problems.append(f"the incident records {incident.timeline_count} rows ending in {incident.timeline_head[:12]}, "
                        f"the timeline has {len(rows)} ending in {prev[:12]}: rows were deleted or added")
    # one message per problem row is enough; keep order, drop duplicates
    problems = list(dict.fromkeys(problems))
    return Verification(incident.id, len(rows), not problems, problems)
