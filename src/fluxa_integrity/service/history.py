"""Job history, serve instances and run-now requests in the state store.

Shape (store/service_models.py): a run row is written ``running`` when an occurrence is claimed
and completed with its outcome (ok, failed, skipped), duration, summary, details and error. The
claim is the INSERT of a unique ``occurrence_key``: a second process claiming the same occurrence
gets None and runs nothing. A ``running`` row whose holder no longer holds the job's lease (it
died) is orphaned: ``sweep_orphans`` marks it ``interrupted`` and clears its key, so the
occurrence can be claimed again and is not lost.

An occurrence counts as done ("settled") once a row for it is running, ok, failed or skipped;
interrupted rows do not count. Failure: store errors propagate; nothing is half-written (each
function is one transaction).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..store import Store
from ..store.service_models import JobRun, RunRequest, ServeInstance
from . import leases
from .leases import aware

UTC = timezone.utc
SETTLED = ("running", "ok", "failed", "skipped")


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


def occurrence_key(job: str, scheduled_for: datetime, attempt: int) -> str:
    return f"{job}@{scheduled_for.astimezone(UTC).isoformat()}#{attempt}"


def claim(store: Store, *, job: str, db: str | None, scheduled_for: datetime, attempt: int, trigger: str,
          holder: str, missed: int = 0, key: str | None = None) -> int | None:
    """The new run's id, or None when another process already claimed this occurrence."""
    row = JobRun(job=job, occurrence_key=key or occurrence_key(job, scheduled_for, attempt), db=db, trigger=trigger,
                 attempt=attempt, missed=missed, scheduled_for=scheduled_for, started_at=now(), outcome="running",
                 summary="", details={}, holder=holder)
    try:
        with store.session() as s:
            s.add(row)
    except IntegrityError:
        return None
    return row.id


def finish(store: Store, run_id: int, outcome: str, summary: str = "", details: dict | None = None,
           error: str | None = None) -> JobRun:
    with store.session() as s:
        row = s.get(JobRun, run_id)
        if row.outcome != "running":  # declared interrupted meanwhile (a stop past its grace): it stays so,
            return row                # and its occurrence runs again - one story, not two
        row.finished_at = now()
        row.duration_s = round((row.finished_at - aware(row.started_at)).total_seconds(), 3)
        row.outcome, row.summary, row.details, row.error = outcome, summary, details or {}, error
        return row


def mark_interrupted(store: Store, run_ids: list[int], reason: str) -> None:
    """Running rows become interrupted; their occurrences are free to be claimed again."""
    if not run_ids:
        return
    with store.session() as s:
        for row in s.scalars(select(JobRun).where(JobRun.id.in_(run_ids), JobRun.outcome == "running")):
            row.outcome, row.occurrence_key, row.error = "interrupted", None, reason
            row.finished_at = now()
            row.duration_s = round((row.finished_at - aware(row.started_at)).total_seconds(), 3)


def sweep_orphans(store: Store, job: str | None = None) -> list[int]:
    """Mark interrupted the running rows whose holder no longer holds their job's lease."""
    held = leases.live(store)
    with store.session() as s:
        q = select(JobRun.id, JobRun.job, JobRun.holder).where(JobRun.outcome == "running")
        if job:
            q = q.where(JobRun.job == job)
        rows = list(s.execute(q))
    orphans = [r.id for r in rows if r.job not in held or held[r.job].holder != r.holder]
    mark_interrupted(store, orphans, "its process stopped renewing the job's lease (killed or crashed)")
    return orphans


def interrupted_holder(store: Store, job: str, holder: str) -> list[int]:
    """The running rows of ``job`` by ``holder`` (whose lease was just taken over): interrupted."""
    with store.session() as s:
        ids = list(s.scalars(select(JobRun.id).where(JobRun.job == job, JobRun.holder == holder,
                                                    JobRun.outcome == "running")))
    mark_interrupted(store, ids, f"its holder {holder} stopped renewing the lease (killed or crashed)")
    return ids


def last_settled(store: Store, job: str) -> datetime | None:
    with store.session() as s:
        return aware(s.scalar(select(func.max(JobRun.scheduled_for))
                              .where(JobRun.job == job, JobRun.outcome.in_(SETTLED))))


def attempts_at(store: Store, job: str, scheduled_for: datetime) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(JobRun)
                        .where(JobRun.job == job, JobRun.scheduled_for == scheduled_for)) or 0


def done_at(store: Store, job: str, scheduled_for: datetime) -> bool:
    """Whether the occurrence already succeeded (ok or skipped), or a later one was claimed."""
    with store.session() as s:
        return bool(s.scalar(select(func.count()).select_from(JobRun).where(
            JobRun.job == job, ((JobRun.scheduled_for == scheduled_for) & JobRun.outcome.in_(("ok", "skipped", "running")))
            | ((JobRun.scheduled_for > scheduled_for) & JobRun.outcome.in_(SETTLED)))))


def runs(store: Store, job: str | None = None, limit: int = 50) -> list[JobRun]:
    with store.session() as s:
        q = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
        if job:
            q = q.where(JobRun.job == job)
        return list(s.scalars(q))


def get_run(store: Store, run_id: int) -> JobRun | None:
    with store.session() as s:
        return s.get(JobRun, run_id)


def latest_by_job(store: Store) -> dict[str, JobRun]:
    """Each job's newest run (running included)."""
    with store.session() as s:
        newest = select(func.max(JobRun.id)).group_by(JobRun.job)
        return {r.job: r for r in s.scalars(select(JobRun).where(JobRun.id.in_(newest)))}


def latest_finished_by_job(store: Store) -> dict[str, JobRun]:
    with store.session() as s:
        newest = select(func.max(JobRun.id)).where(JobRun.outcome != "running").group_by(JobRun.job)
        return {r.job: r for r in s.scalars(select(JobRun).where(JobRun.id.in_(newest)))}


def as_dict(r: JobRun) -> dict:
    return {"id": r.id, "job": r.job, "db": r.db, "trigger": r.trigger, "attempt": r.attempt, "missed": r.missed,
            "scheduled_for": iso(r.scheduled_for), "started_at": iso(r.started_at), "finished_at": iso(r.finished_at),
            "outcome": r.outcome, "duration_s": r.duration_s, "summary": r.summary, "details": r.details,
            "error": r.error, "holder": r.holder}


# -- serve instances ----------------------------------------------------------------------------

def register(store: Store, *, holder: str, pid: int, host: str, db: str, time_scale: float, lease_seconds: float,
             jobs: list[str]) -> None:
    t = now()
    with store.session() as s:
        s.add(ServeInstance(holder=holder, pid=pid, host=host, db=db, time_scale=time_scale,
                            lease_seconds=lease_seconds, jobs=jobs, started_at=t, heartbeat_at=t, stopped_at=None))


def heartbeat(store: Store, holder: str) -> None:
    with store.session() as s:
        s.execute(update(ServeInstance).where(ServeInstance.holder == holder).values(heartbeat_at=now()))


def set_jobs(store: Store, holder: str, jobs: list[str]) -> None:
    """The jobs a serve runs now (jobs come and go while it serves: enhanced monitoring)."""
    with store.session() as s:
        s.execute(update(ServeInstance).where(ServeInstance.holder == holder).values(jobs=jobs))


def stopped(store: Store, holder: str) -> None:
    with store.session() as s:
        s.execute(update(ServeInstance).where(ServeInstance.holder == holder).values(stopped_at=now()))


def live_instances(store: Store) -> list[ServeInstance]:
    """Serve processes that have not stopped and beat within their lease time (they beat every third)."""
    t = now()
    with store.session() as s:
        rows = s.scalars(select(ServeInstance).where(ServeInstance.stopped_at.is_(None))
                         .order_by(ServeInstance.started_at.desc()))
        return [r for r in rows if aware(r.heartbeat_at) >= t - timedelta(seconds=r.lease_seconds)]


# -- run-now requests ---------------------------------------------------------------------------

def request_run(store: Store, job: str, by: str) -> int:
    with store.session() as s:
        row = RunRequest(job=job, requested_at=now(), requested_by=by, status="pending")
        s.add(row)
        s.flush()
        return row.id


def take_requests(store: Store, holder: str, jobs: set[str]) -> list[RunRequest]:
    """Pending requests for jobs this serve runs, each taken by exactly one serve."""
    with store.session() as s:
        pending = list(s.scalars(select(RunRequest).where(RunRequest.status == "pending", RunRequest.job.in_(jobs))
                                 .order_by(RunRequest.id)))
    taken = []
    for req in pending:
        with store.session() as s:
            res = s.execute(update(RunRequest).where(RunRequest.id == req.id, RunRequest.status == "pending")
                            .values(status="taken", taken_by=holder, taken_at=now()))
        if res.rowcount == 1:
            taken.append(req)
    return taken


def complete_request(store: Store, request_id: int, run_id: int | None) -> None:
    with store.session() as s:
        s.execute(update(RunRequest).where(RunRequest.id == request_id).values(status="done", run_id=run_id))


def get_request(store: Store, request_id: int) -> RunRequest | None:
    with store.session() as s:
        return s.get(RunRequest, request_id)
