"""Tables of the always-on service (issue 11): job history, leases, serve instances, run-now requests.

Kept apart from store/models.py on the same ``Base``; created by the migration 0009_service.

- ``service_job_runs``: one row per attempt of a job occurrence. ``occurrence_key``
  (``job@<scheduled_for>#<attempt>``, or ``job@manual:<request>``) is unique: inserting it is how a
  process claims an occurrence, so two processes never run the same one. A run found orphaned (its
  holder died) becomes ``interrupted`` and its key is set to NULL, which frees the occurrence for
  the run that takes it over (NULLs never collide in a unique index, SQLite and PostgreSQL alike).
- ``service_leases``: one row per job, ``(job, holder, expires_at)``; taken with a conditional
  UPDATE (free or expired) or an INSERT, renewed while the holder lives, dead when it expires.
- ``service_instances``: each ``serve`` process with its heartbeat (what `jobs run-now` asks).
- ``service_requests``: a run-now request a live ``serve`` takes (conditional UPDATE) and runs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

OUTCOMES = ("running", "ok", "failed", "interrupted", "skipped")


class JobRun(Base):
    """One attempt at one occurrence of a scheduled job (or a manual run)."""

    __tablename__ = "service_job_runs"
    __table_args__ = (UniqueConstraint("occurrence_key", name="uq_service_job_runs_occurrence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(100), index=True)
    occurrence_key: Mapped[str | None] = mapped_column(String(300))
    db: Mapped[str | None] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | catch-up | retry | manual | continuous
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    missed: Mapped[int] = mapped_column(Integer, default=0)  # earlier occurrences coalesced into this run
    scheduled_for: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(20))  # OUTCOMES
    duration_s: Mapped[float | None] = mapped_column(Float)
    summary: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(String(200))


class Lease(Base):
    """Who runs a job right now; void once ``expires_at`` has passed."""

    __tablename__ = "service_leases"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ServeInstance(Base):
    """A ``serve`` process: alive while ``heartbeat_at`` is fresh and ``stopped_at`` is NULL."""

    __tablename__ = "service_instances"

    holder: Mapped[str] = mapped_column(String(200), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(200))
    db: Mapped[str] = mapped_column(String(200))
    time_scale: Mapped[float] = mapped_column(Float, default=1.0)
    lease_seconds: Mapped[float] = mapped_column(Float, default=30.0)  # it beats every third of this
    jobs: Mapped[list] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunRequest(Base):
    """`jobs run-now JOB` while a serve runs: pending until a serve takes it, then the run's id."""

    __tablename__ = "service_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    requested_by: Mapped[str] = mapped_column(String(200))
    taken_by: Mapped[str | None] = mapped_column(String(200))
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # pending | taken | done
