"""Tables of the state store. Times are stored as timezone-aware UTC."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class CheckRun(Base):
    """One `check run`: what was evaluated, how it ended, and its statistics."""

    __tablename__ = "check_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))  # running | complete | failed
    rules: Mapped[list] = mapped_column(JSON)  # ids of the rules evaluated (closing needs them)
    collections: Mapped[list] = mapped_column(JSON)
    stats: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class Finding(Base):
    """One problem, identified by its fingerprint across runs; open until a run no longer sees it."""

    __tablename__ = "findings"
    __table_args__ = (UniqueConstraint("database", "fingerprint", name="uq_findings_db_fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(200))
    variant: Mapped[str] = mapped_column(String(100))
    collection: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(40))
    data_class: Mapped[str | None] = mapped_column(String(100))
    criticality: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # open | closed
    message: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer)
    affected_users: Mapped[int] = mapped_column(Integer, default=0)
    samples: Mapped[list] = mapped_column(JSON, default=list)  # [{"_id": ..., "value": ...}] as Extended JSON
    first_doc_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_doc_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_run_id: Mapped[int] = mapped_column(ForeignKey("check_runs.id"))
    last_run_id: Mapped[int] = mapped_column(ForeignKey("check_runs.id"))

    sightings: Mapped[list["Sighting"]] = relationship(back_populates="finding", order_by="Sighting.id")


class Sighting(Base):
    """A finding seen by one run, with the count at that time (growing or not: S14)."""

    __tablename__ = "sightings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("check_runs.id"))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(Integer)

    finding: Mapped[Finding] = relationship(back_populates="sightings")


class CollectionCount(Base):
    """Document counts per run: the baseline of the count-drop guard."""

    __tablename__ = "collection_counts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("check_runs.id"))
    database: Mapped[str] = mapped_column(String(200))
    collection: Mapped[str] = mapped_column(String(200))
    count: Mapped[int] = mapped_column(Integer)
    counted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Watermark(Base):
    """Where an incremental scan of a collection stopped (the max watermark value seen)."""

    __tablename__ = "watermarks"
    __table_args__ = (UniqueConstraint("database", "collection", name="uq_watermarks_db_coll"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database: Mapped[str] = mapped_column(String(200))
    collection: Mapped[str] = mapped_column(String(200))
    field: Mapped[str] = mapped_column(String(200))
    value: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int] = mapped_column(ForeignKey("check_runs.id"))
