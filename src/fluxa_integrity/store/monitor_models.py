"""Tables of the anomaly monitors (S10, S11, S12): one row per collection per interval, and the
learned field profile each collection's type drift is judged against.

Kept apart from store/models.py on the same ``Base``; created by the migration 0010_monitors.

- ``monitor_intervals``: ``(database, collection, start)`` is unique, so evaluating an interval
  twice replaces its row instead of doubling it in the baseline. ``metrics`` is a JSON object:
  ``inserts``/``updates``/``deletes`` (oplog entries of the interval), ``count`` and
  ``count_change`` (the document count at the end, and its change since the previous row),
  ``sampled`` and ``fields`` (``{path: {"missing": share, "null": share, "types": {type: share}}}``)
  for a data collection; ``log:<class>`` counts for the pseudo-collection ``log:<source>``.
  ``complete`` is false when the oplog did not cover the whole interval: such a row is kept for
  people but never enters a baseline nor is judged (a partial count would look like a drop).
- ``monitor_profiles``: per (database, collection) the field profile learned by `schema infer`
  (``{path: {"presence": share, "types": {type: share}}}``), replaced by each `monitor baseline --learn`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class MonitorInterval(Base):
    __tablename__ = "monitor_intervals"
    __table_args__ = (UniqueConstraint("database", "collection", "start", name="uq_monitor_intervals_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database: Mapped[str] = mapped_column(String(200))
    collection: Mapped[str] = mapped_column(String(200))
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    hour: Mapped[int] = mapped_column(Integer)  # UTC hour of day of ``start``: the seasonal baseline's key
    complete: Mapped[bool] = mapped_column(Boolean, default=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    findings: Mapped[list] = mapped_column(JSON, default=list)  # rule ids this interval raised
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    check_run_id: Mapped[int | None] = mapped_column(Integer)  # the run that recorded its findings


class MonitorProfile(Base):
    __tablename__ = "monitor_profiles"
    __table_args__ = (UniqueConstraint("database", "collection", name="uq_monitor_profiles_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database: Mapped[str] = mapped_column(String(200))
    collection: Mapped[str] = mapped_column(String(200))
    learned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    docs: Mapped[int] = mapped_column(Integer)
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
