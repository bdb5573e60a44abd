"""Tables of the incident engine (migrations 0003_incidents, 0006_incident_hardening, 0008_containment). Times are timezone-aware UTC.

Kept apart from store/models.py so feature areas add tables without editing each other's files;
they share ``Base`` so one metadata knows the whole schema.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class Incident(Base):
    """One data-integrity incident. Every transition has its own timestamp column; the
    timeline (IncidentEvent) is the full record and ``timeline_head`` its latest hash."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(40))  # finding | report | event | manual
    source_kind: Mapped[str | None] = mapped_column(String(60))  # user, support, failed_migration, ...
    database: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(20))
    severity_manual: Mapped[bool] = mapped_column(Boolean, default=False)  # findings no longer change it
    data_classes: Mapped[list] = mapped_column(JSON, default=list)
    collections: Mapped[list] = mapped_column(JSON, default=list)
    backup_ids: Mapped[list] = mapped_column(JSON, default=list)
    restore_ids: Mapped[list] = mapped_column(JSON, default=list)
    roles: Mapped[dict] = mapped_column(JSON, default=dict)  # role -> person
    escalated_to: Mapped[list] = mapped_column(JSON, default=list)  # roles notified so far, in order
    fired: Mapped[list] = mapped_column(JSON, default=list)  # clock events already fired (idempotent tick)
    scope: Mapped[dict] = mapped_column(JSON, default=dict)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)  # the app reads it (docs/incidents.md)
    paused_features: Mapped[list] = mapped_column(JSON, default=list)
    # 0008: what is enforced (incidents/containment.py): {"database", "read_only_collections",
    # "app_user": {"user", "db", "revoked", "granted"}}; read_only is true while collections are in it
    containment: Mapped[dict | None] = mapped_column(JSON, default=dict)
    # 0006: a drill takes simulated (future) times; a duplicate is closed into another incident;
    # places are the declared scope, "collection" or "collection.field" (severity as fine as the classes)
    drill: Mapped[bool] = mapped_column(Boolean, default=False)
    duplicate_of: Mapped[int | None] = mapped_column(Integer)
    places: Mapped[list | None] = mapped_column(JSON, default=list)
    issue_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    detected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recovery_point: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    investigating_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recovering_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[str | None] = mapped_column(Text)  # how it was resolved (brief, for comms)
    root_cause: Mapped[str | None] = mapped_column(Text)
    contributing_factors: Mapped[list] = mapped_column(JSON, default=list)
    lessons: Mapped[list] = mapped_column(JSON, default=list)
    action_items: Mapped[list] = mapped_column(JSON, default=list)
    timeline_head: Mapped[str] = mapped_column(String(64), default="")
    timeline_count: Mapped[int] = mapped_column(Integer, default=0)


class IncidentFinding(Base):
    """A check finding linked to an incident (dedup: one incident per finding while it is live)."""

    __tablename__ = "incident_findings"
    __table_args__ = (UniqueConstraint("incident_id", "finding_id", name="uq_incident_findings"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChecklistState(Base):
    """One phase checklist item of one incident: owner (reassignable), when done, a note."""

    __tablename__ = "incident_checklist"
    __table_args__ = (UniqueConstraint("incident_id", "item_id", name="uq_incident_checklist"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    phase_id: Mapped[str] = mapped_column(String(100))
    item_id: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(100))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_by: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)


class IncidentEvent(Base):
    """The append-only, hash-chained timeline: hash = sha256(prev_hash + canonical JSON of the row)."""

    __tablename__ = "incident_events"
    __table_args__ = (UniqueConstraint("incident_id", "seq", name="uq_incident_events_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per incident: a gap is a deleted row
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Publication(Base):
    """A status-page publication: the status page's history."""

    __tablename__ = "incident_publications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    template: Mapped[str] = mapped_column(String(40))  # initial | progress | resolution
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    values: Mapped[dict] = mapped_column(JSON, default=dict)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Notification(Base):
    """The outbox: one message for one channel, delivered after the incident change committed,
    retried until sent (a failing channel never blocks the incident)."""

    __tablename__ = "incident_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    channel: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(60))  # opened, status, escalation, communication, ...
    subject: Mapped[str] = mapped_column(String(400))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. PagerDuty event_action, severity
    status: Mapped[str] = mapped_column(String(20))  # pending | sent | failed (gave up)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
