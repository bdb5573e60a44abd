"""Tables of backups, their verifications, restores and promotions (issue 4).

Kept apart from store/models.py (shared with other areas) on the same ``Base``; the schema is
created by the migration 0002_backups, a branch of its own from 0001; the oplog archive's tables
(and ``restore_runs.pitr``) by 0004_oplog_archive on top of it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base

BACKUP_KINDS = ("full", "incremental", "schema")
BACKUP_STATUSES = ("running", "complete", "failed", "verified")
RESTORABLE = ("complete", "verified")


class Backup(Base):
    """One backup in the repository. Only ``complete``/``verified`` ones are ever restored."""

    __tablename__ = "backups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # 20261125T212524Z-1a2b3c: sorts by time
    kind: Mapped[str] = mapped_column(String(20))
    db: Mapped[str] = mapped_column(String(200))
    repo: Mapped[str] = mapped_column(Text)  # repository directory; files are under repo/id
    status: Mapped[str] = mapped_column(String(20))
    collections: Mapped[list] = mapped_column(JSON, default=list)
    size: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes on disk
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    oplog_start_t: Mapped[int | None] = mapped_column(BigInteger)
    oplog_start_i: Mapped[int | None] = mapped_column(BigInteger)
    oplog_end_t: Mapped[int | None] = mapped_column(BigInteger)
    oplog_end_i: Mapped[int | None] = mapped_column(BigInteger)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))  # schema backups: sha256 of schema.json
    pinned_by: Mapped[str | None] = mapped_column(Text)  # incident id or note; exempt from pruning
    error: Mapped[str | None] = mapped_column(Text)


class Verification(Base):
    """A restore drill of one backup: the verdict and the RTO evidence (seconds per data class)."""

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"))
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(20))  # pass | fail
    restore_seconds: Mapped[dict] = mapped_column(JSON, default=dict)  # data class -> seconds
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class RestoreRun(Base):
    """A restore into a target database; ``progress`` makes a killed restore resumable."""

    __tablename__ = "restore_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[str] = mapped_column(String(64))
    target_db: Mapped[str] = mapped_column(String(200))
    collections: Mapped[list] = mapped_column(JSON, default=list)
    filter: Mapped[dict | None] = mapped_column(JSON)  # Extended JSON text of --filter, as given
    status: Mapped[str] = mapped_column(String(20))  # running | complete | failed | dropped (target reused)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)  # collection -> file docs acknowledged
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    pitr: Mapped[dict | None] = mapped_column(JSON)  # point-in-time restores: {at, inclusive, replay sources, counts}


class OplogSlice(Base):
    """One archived, compressed run of oplog entries: ``<repo>/<path>``, every entry with
    first <= ts <= last. ``prev`` is the last ts of the slice it continues (None after a gap or
    for the first slice): following the links proves the archive is continuous."""

    __tablename__ = "oplog_slices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)  # relative to repo: oplog/<first>-<last>.bson.zst
    first_t: Mapped[int] = mapped_column(BigInteger)
    first_i: Mapped[int] = mapped_column(BigInteger)
    last_t: Mapped[int] = mapped_column(BigInteger)
    last_i: Mapped[int] = mapped_column(BigInteger)
    prev_t: Mapped[int | None] = mapped_column(BigInteger)
    prev_i: Mapped[int | None] = mapped_column(BigInteger)
    first_wall: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_wall: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)  # bytes on disk (compressed)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OplogArchiveState(Base):
    """The archiver's last proof of being caught up: at ``caught_up_at`` a poll found nothing
    newer than ``last`` and every entry up to ``last`` was in a closed slice. So every write made
    before that moment is archived, even when the newest entry is older (an idle database)."""

    __tablename__ = "oplog_archive_state"

    repo: Mapped[str] = mapped_column(Text, primary_key=True)
    caught_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_t: Mapped[int | None] = mapped_column(BigInteger)
    last_i: Mapped[int | None] = mapped_column(BigInteger)


class OplogGap(Base):
    """The oplog rolled past the archive: entries after ``after`` and before ``before`` are lost,
    so no point in time inside that range can be restored from the archive."""

    __tablename__ = "oplog_gaps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo: Mapped[str] = mapped_column(Text)
    after_t: Mapped[int | None] = mapped_column(BigInteger)  # last archived ts
    after_i: Mapped[int | None] = mapped_column(BigInteger)
    before_t: Mapped[int | None] = mapped_column(BigInteger)  # first entry the oplog still had
    before_i: Mapped[int | None] = mapped_column(BigInteger)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)


class Promotion(Base):
    """Documents brought back into the live database; the undo store makes it reversible."""

    __tablename__ = "promotions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_db: Mapped[str] = mapped_column(String(200))
    live_db: Mapped[str] = mapped_column(String(200))
    collections: Mapped[list] = mapped_column(JSON, default=list)
    authorized_by: Mapped[str] = mapped_column(Text)  # "incident:<id>" or "operator confirmation (--yes)"
    status: Mapped[str] = mapped_column(String(20))  # applying | applied | undone | failed
    undo_dir: Mapped[str] = mapped_column(Text)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)  # collection -> {overwritten, inserted, unchanged}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
