"""The state store's record of recovery plans (issue 10): one row per plan a recipe made.

Kept apart from store/models.py on the same ``Base``; created by migration 0007_recovery_plans,
a branch of its own from 0001. The plan itself (its changes, as BSON) lives on disk under
``$FLUXA_HOME/plans/<id>/`` (recovery/plans_store.py); this row says where it is, what state it
is in and what happened to it, so ``recover list`` and the incident views need no file reads.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

# planned -> applying -> applied | failed (a failed or killed apply is resumed by applying again)
# applied | failed | applying -> undoing -> undone (a killed undo is resumed by undoing again)
PLAN_STATUSES = ("planned", "applying", "applied", "failed", "undoing", "undone")


class RecoveryPlan(Base):
    __tablename__ = "recovery_plans"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # 20261125T212524Z-<recipe>-1a2b3c
    recipe: Mapped[str] = mapped_column(String(100))
    database: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # relaxed Extended JSON
    counts: Mapped[dict] = mapped_column(JSON, default=dict)  # planned: collection -> {op: n}
    result: Mapped[dict] = mapped_column(JSON, default=dict)  # last apply/undo/verify outcome, by step
    summary: Mapped[str] = mapped_column(Text, default="")
    plan_dir: Mapped[str] = mapped_column(Text)
    changes_sha256: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[int | None] = mapped_column(Integer)  # the incident that authorised the apply
    actor: Mapped[str | None] = mapped_column(Text)  # who made the plan / applied it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
