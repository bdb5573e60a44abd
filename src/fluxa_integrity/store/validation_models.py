"""Table of continuous validation (issue 11, S1): where each oplog watcher stopped.

Kept apart from store/models.py on the same ``Base``; created by the migration 0011_validation.

``validation_positions``: one row per watcher (``name``, e.g. ``validation:fluxa``) with the ``ts``
of the last oplog entry it evaluated and recorded (``ts_t``/``ts_i``: the BSON Timestamp's seconds
and increment), the change stream's resume token when the server has change streams, and
counters for people. A restarted watcher resumes right after ``ts``: an entry is evaluated again
only if the process died between recording its finding and moving the position (a sighting
counted twice, never a write missed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class ValidationPosition(Base):
    __tablename__ = "validation_positions"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    db: Mapped[str] = mapped_column(String(200))
    ts_t: Mapped[int | None] = mapped_column(BigInteger)
    ts_i: Mapped[int | None] = mapped_column(BigInteger)
    resume_token: Mapped[dict | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stats: Mapped[dict] = mapped_column(JSON, default=dict)  # entries, documents, violations so far
