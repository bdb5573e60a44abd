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


def recovery_points(store: Store, policy: Policy, db: str) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """When each recoverable point became restorable, per data class: ``[(known_at, point, source)]``
    sorted by ``known_at``, over the catalog as it stands (the backups and slices ``rpo_status``
    counts). A full backup's point is its start, known once it finished. An archived slice's point
    is its newest entry's wall time, known once it and the slices before it in its window were
    closed (the archiver closes them in order) and a backup whose oplog start the window covers,
    started before the slice's end, had finished. The archiver's proof of being caught up counts
    from its own time. So ``rpo_status(now)``'s point is the newest one known by ``now``.
    Linear in backups + slices per class."""
    from bson.timestamp import Timestamp

    from .archive_catalog import caught_up, coverage

    backups = [b for b in list_backups(store, db, "full") if b.status in ("complete", "verified")]
    windows, _ = coverage(store)
    proofs = caught_up(store)
    # per window, its slices as plain tuples once: ((last t, i), closed at, newest entry's wall time)
    chains = [(w, [((r.last_t, r.last_i), aware(r.created_at), aware(r.last_wall)) for r in w.slices]) for w in windows]
    out: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for dc in policy.data_classes:
        need = {c.collection for c in dc.covers}
        mine = [b for b in backups if need <= set(b.collections)]
        events = [(aware(b.finished_at or b.started_at), aware(b.started_at), "snapshot start") for b in mine]
        starts = sorted((Timestamp(b.oplog_start_t, b.oplog_start_i), aware(b.finished_at or b.started_at))
                        for b in mine if b.oplog_start_t is not None)
        for w, chain in chains:
            covered = [((st.time, st.inc), done) for st, done in starts if w.covers_from(st)]
            if not covered:
                continue
            k, first_done, closed = 0, None, None  # sweep: backups started by this slice's end
            for last, created, wall in chain:
                closed = created if closed is None or created > closed else closed
                while k < len(covered) and covered[k][0] <= last:
                    first_done = covered[k][1] if first_done is None else min(first_done, covered[k][1])
                    k += 1
                if first_done is not None and wall is not None:
                    events.append((max(closed, first_done, wall), wall, "oplog archive"))
            proof = proofs.get(w.last)
            if proof is not None and first_done is not None:
                events.append((max(closed, first_done, proof), proof, "oplog archive"))
        events.sort()
        out[dc.name] = events
    return out


def rpo_series(store: Store, policy: Policy, db: str, since: datetime, until: datetime) -> list[dict]:
    """The age of the newest recoverable point per data class from ``since`` to ``until``. The age
    grows a second a second and drops when a newer point becomes restorable, so the series is exact
    at its breakpoints: ``since``, just before and at each such moment, ``until`` (``None`` while no
    point exists). Per class: ``{data_class, rpo, rpo_seconds, points: [(t, age seconds or None)],
    latest}``; ``latest`` is ``rpo_status(now=until)``'s age."""
    known = recovery_points(store, policy, db)

    def age(t: datetime, point: datetime | None) -> float | None:
        return round((t - point).total_seconds(), 1) if point is not None else None

    out = []
    for dc in policy.data_classes:
        events = [e for e in known[dc.name] if e[0] <= until]
        point = None
        k = 0
        while k < len(events) and events[k][0] <= since:
            point = max(filter(None, (point, events[k][1])))
            k += 1
        points = [(since, age(since, point))]
        while k < len(events):
            at, newer = events[k][0], point
            while k < len(events) and events[k][0] == at:
                newer = max(filter(None, (newer, events[k][1])))
                k += 1
            if newer != point:
                points += [(at, age(at, point)), (at, age(at, newer))]
                point = newer
        if points[-1][0] != until:
            points.append((until, age(until, point)))
        out.append({"data_class": dc.name, "rpo": dc.rpo, "rpo_seconds": dc.rpo_delta.total_seconds(),
                    "points": points, "latest": points[-1][1]})
    return out
