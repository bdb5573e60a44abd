"""RPO and RTO per data class, from the catalog (S37, S38).

RPO: the newest recoverable point of a data class is the start of the newest ``complete`` or
``verified`` full backup holding every collection the class covers (a snapshot holds every write
made before it started; later ones only maybe) - or, when the oplog archive continuously covers
from such a snapshot's start, the wall time of the newest archived entry of that window (a
point-in-time restore reaches it), or later, the last time the archiver found nothing newer than
that entry (an idle database loses nothing written before then). Its age is compared with the class's RPO. The live oplog does
not count: it is lost with the server. Gaps in the archive are reported with every class.
RTO: the restore seconds the latest verification measured for the class (a restore drill, not
an estimate) against its RTO; a class never drilled is ``unmeasured``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ..policy.models import Policy
from ..store import Store
from .catalog import list_backups, verifications
from .retention import aware

UTC = timezone.utc


def class_collections(policy: Policy) -> dict[str, set[str]]:
    return {dc.name: {c.collection for c in dc.covers} for dc in policy.data_classes}


def rpo_status(store: Store, policy: Policy, db: str, now: datetime | None = None) -> list[dict]:
    now = now or datetime.now(UTC)
    from bson.timestamp import Timestamp

    from .archive_catalog import caught_up, coverage

    backups = [b for b in list_backups(store, db, "full") if b.status in ("complete", "verified")]
    windows, _ = coverage(store)
    proofs = caught_up(store)  # an archiver caught up at T with nothing newer: every write before T is archived
    out = []
    for dc in policy.data_classes:
        need = {c.collection for c in dc.covers}
        newest = next((b for b in backups if need <= set(b.collections)), None)
        point = aware(newest.started_at) if newest else None
        source = "snapshot start" if newest else None
        for b in (b for b in backups if need <= set(b.collections) and b.oplog_start_t is not None):
            start = Timestamp(b.oplog_start_t, b.oplog_start_i)
            for w in windows:
                reach = max(filter(None, (w.last_wall, proofs.get(w.last))), default=None)
                if w.covers_from(start) and reach and (point is None or reach > point):
                    point, newest, source = reach, b, "oplog archive"
        age = (now - point).total_seconds() if point else None
        out.append({"data_class": dc.name, "rpo": dc.rpo, "rpo_seconds": dc.rpo_delta.total_seconds(),
                    "backup_id": newest.id if newest else None, "recoverable_point": point, "source": source,
                    "age_seconds": round(age, 1) if age is not None else None,
                    "status": "breached" if age is None or age > dc.rpo_delta.total_seconds() else "ok"})
    return out


def rto_status(store: Store, policy: Policy, db: str | None = None) -> list[dict]:
    rows = verifications(store)
    if db:
        ids = {b.id for b in list_backups(store, db)}
        rows = [v for v in rows if v.backup_id in ids]
    out = []
    for dc in policy.data_classes:
        last = next((v for v in rows if dc.name in (v.restore_seconds or {})), None)
        secs = last.restore_seconds[dc.name] if last else None
        out.append({"data_class": dc.name, "rto": dc.rto, "rto_seconds": dc.rto_delta.total_seconds(),
                    "measured_seconds": secs, "backup_id": last.backup_id if last else None,
                    "verified_at": aware(last.verified_at) if last else None,
                    "status": "unmeasured" if secs is None else ("breached" if secs > dc.rto_delta.total_seconds() else "ok")})
    return out
