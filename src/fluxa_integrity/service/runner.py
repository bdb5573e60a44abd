"""Running one occurrence of a job end to end: lease, claim, task, outcome, retry.

Shape: a ``Runner`` per process holds the job definitions, the task context and its holder id.
``fire(job)`` is what the scheduler calls on the job's grid (clock.py); it works out the latest
due occurrence itself, so a late, doubled or skipped firing changes nothing:

1. take the job's lease (leases.py) - another live holder runs it: return;
2. the occurrence is settled in the history (a row running, ok, failed or skipped at or after it):
   return - so no occurrence runs twice, whichever process fired;
3. claim it (a unique key insert; history.py) - lost the race: return;
4. run the task; record ok / skipped / failed with duration, summary and error;
5. failed: a retry of the same occurrence after a backoff (RETRY_BASE_S doubling, at most
   MAX_ATTEMPTS, never past the next occurrence); unreachable server: the outage is raised.

Occurrences missed while no process ran (a stop, kill -9) are coalesced: the next firing runs
the latest due occurrence once and records how many it stands for (``missed``). An occurrence
whose run was interrupted is not settled, so it runs again. A per-job in-process lock keeps one
process from running a job twice at once (the lease only tells processes apart).

Continuous jobs (the archiver) run in ``run_continuous``: one history row per session, restarted
after a failure with exponential backoff (capped at CONTINUOUS_BACKOFF_MAX_S) until stopped.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable

from ..errors import FluxaError
from . import clock, history, leases
from .jobs import JobDef, find_job
from .tasks import TASKS, TaskContext, TaskResult
from .unreachable import Outage, is_unreachable

UTC = timezone.utc
RETRY_BASE_S = 2.0
RETRY_MAX_S = 300.0
MAX_ATTEMPTS = 3
CONTINUOUS_BACKOFF_MAX_S = 60.0
DB_FREE = {"tick", "retention", "rpo"}  # tasks that never talk to the application server


def error_text(exc: BaseException) -> str:
    if isinstance(exc, FluxaError):
        return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class Runner:
    def __init__(self, ctx: TaskContext, jobs: list[JobDef], holder: str, *, time_scale: float = 1.0,
                 lease_ttl: float = 30.0, log: Callable[[str, str], None] = lambda level, msg: None,
                 schedule_retry: Callable[[str, datetime, int, float], None] | None = None):
        self.ctx, self.jobs, self.holder = ctx, jobs, holder
        self.time_scale, self.lease_ttl, self.log = time_scale, lease_ttl, log
        self.schedule_retry = schedule_retry
        self.store = ctx.store
        self.outage = Outage(ctx.store, ctx.policy, ctx.db, lambda msg: log("warning", msg))
        self._locks = {j.name: threading.Lock() for j in jobs}
        self.active: dict[int, str] = {}  # run id -> job, while running here
        # called after each run with (job, run id, result, seconds): metrics, automatic incidents
        self.after_run: list[Callable[[JobDef, int, TaskResult, float], None]] = []
        self._active_lock = threading.Lock()

    def add_job(self, job: JobDef) -> None:
        """A job defined while serving (enhanced monitoring of a resolved incident's collections)."""
        self.jobs[:] = [j for j in self.jobs if j.name != job.name] + [job]  # a newer definition replaces
        self._locks.setdefault(job.name, threading.Lock())

    # -- the grid -------------------------------------------------------------------------------

    def interval(self, job: JobDef) -> timedelta:
        return clock.scaled(job.interval, self.time_scale)

    def behind(self, job: JobDef, at: datetime | None = None) -> bool:
        """Whether the job's latest due occurrence has not run yet (a start or restart runs it now)."""
        due = clock.floor(at or history.now(), self.interval(job))
        last = history.last_settled(self.store, job.name)
        return last is None or last < due

    # -- entry points -----------------------------------------------------------------------------

    def fire(self, name: str) -> None:
        """The scheduler's call for a periodic job: run its latest due occurrence unless settled."""
        job = find_job(self.jobs, name)
        step = self.interval(job)
        while not self.ctx.stop.is_set():
            due = clock.floor(history.now(), step)
            if job.until is not None and due > job.until:
                return  # the job has ended (enhanced monitoring past its period)
            with self._job_lease(job) as held:
                if not held:
                    return
                last = history.last_settled(self.store, job.name)
                if last is not None and last >= due:
                    return
                missed = 0 if last is None else max(0, clock.between(last, due, step) - 1)
                attempt = history.attempts_at(self.store, job.name, due) + 1
                self._attempt(job, due, attempt, "catch-up" if missed else "schedule", missed)
            if clock.floor(history.now(), step) == due:
                return  # else: the next occurrence came due while this one ran - run it (coalesced)

    def retry(self, name: str, due: datetime, attempt: int) -> None:
        job = find_job(self.jobs, name)
        if self.ctx.stop.is_set():
            return
        with self._job_lease(job) as held:
            if not held or history.done_at(self.store, job.name, due):
                return
            self._attempt(job, due, attempt, "retry", 0)

    def run_manual(self, name: str, request_id: int | None = None, ready: Callable[[], None] = lambda: None) -> int:
        """`jobs run-now`: run the job now, outside its grid (a continuous job once through).
        Returns the run id; a job already running records a skipped run saying where."""
        job = find_job(self.jobs, name)
        at = history.now()
        key = f"{job.name}@manual:{request_id if request_id is not None else uuid.uuid4().hex}"
        with self._job_lease(job) as held:
            if not held:
                where = leases.holder_of(self.store, job.name) or "this process"
                rid = history.claim(self.store, job=job.name, db=self.ctx.db, scheduled_for=at, attempt=1,
                                    trigger="manual", holder=self.holder, key=key)
                history.finish(self.store, rid, "skipped", f"already running ({where})")
                return rid
            return self._attempt(job, at, 1, "manual", 0, key=key, once=True, ready=ready)

    def run_continuous(self, name: str) -> None:
        job = find_job(self.jobs, name)
        failures = 0
        while not self.ctx.stop.is_set():
            with self._job_lease(job) as held:
                if held:
                    ok = self._attempt(job, history.now(), failures + 1, "continuous", 0,
                                       key=f"{job.name}@{history.now().isoformat()}#{uuid.uuid4().hex[:6]}",
                                       retry=False, outcome_only=True)
                    failures = 0 if ok in ("ok", "skipped") else failures + 1
            if self.ctx.stop.is_set():
                return
            if not held:  # another process runs it: take over if its lease lapses
                self.ctx.stop.wait(self.lease_ttl / 2)
                continue
            delay = min(RETRY_BASE_S * 2 ** max(failures - 1, 0), CONTINUOUS_BACKOFF_MAX_S) if failures else 1.0
            if failures:
                self.log("warning", f"{job.name}: restarting in {delay:.0f}s (failure {failures} in a row)")
            self.ctx.stop.wait(delay)

    # -- the work -----------------------------------------------------------------------------------

    def _job_lease(self, job: JobDef):
        runner = self

        class _Held:
            def __enter__(self_inner) -> bool:
                self_inner.local = runner._locks[job.name].acquire(blocking=False)
                if not self_inner.local:
                    self_inner.held = False
                    return False
                got = leases.take(runner.store, job.name, runner.holder, runner.lease_ttl)
                self_inner.held = got.ok
                if not got.ok:
                    runner._locks[job.name].release()
                    return False
                if got.took_over:
                    ids = history.interrupted_holder(runner.store, job.name, got.took_over)
                    runner.log("warning", f"{job.name}: took over the lease of {got.took_over}, which stopped renewing "
                                          f"it" + (f"; its run {', '.join(map(str, ids))} is marked interrupted" if ids else ""))
                return True

            def __exit__(self_inner, *exc) -> None:
                if self_inner.held:
                    try:
                        leases.release(runner.store, job.name, runner.holder)
                    finally:
                        runner._locks[job.name].release()

        return _Held()

    def _attempt(self, job: JobDef, due: datetime, attempt: int, trigger: str, missed: int, *,
                 key: str | None = None, once: bool = False, retry: bool = True, outcome_only: bool = False,
                 ready: Callable[[], None] = lambda: None):
        run_id = history.claim(self.store, job=job.name, db=self.ctx.db, scheduled_for=due, attempt=attempt,
                               trigger=trigger, holder=self.holder, missed=missed, key=key)
        if run_id is None:
            return None
        with self._active_lock:
            self.active[run_id] = job.name
        t0 = time.perf_counter()
        try:
            if job.task in ("archiver", "validation"):  # long-running: once through on a manual run
                result = TASKS[job.task](self.ctx, job, once=once, ready=ready)
            else:
                ready()
                result = TASKS[job.task](self.ctx, job)
            if job.task not in DB_FREE:
                self.outage.recovered(job.name)
        except Exception as exc:  # noqa: BLE001 - any failure is the job's outcome, never the service's end
            result = TaskResult("failed", f"failed: {error_text(exc)}"[:500], {}, error_text(exc))
            if not isinstance(exc, FluxaError):
                result.details["traceback"] = traceback.format_exc()[-4000:]
            if is_unreachable(exc):
                result.details["unreachable"] = True
                result.details["incident"] = self.outage.failed(job.name, error_text(exc))
        finally:
            with self._active_lock:
                self.active.pop(run_id, None)
        history.finish(self.store, run_id, result.outcome, result.summary, result.details, result.error)
        secs = time.perf_counter() - t0
        level = "info" if result.outcome in ("ok", "skipped") else "error"
        extra = f" (coalesced {missed} missed)" if missed else ""
        self.log(level, f"job {job.name} run {run_id} {result.outcome} in {secs:.1f}s [{trigger}, attempt {attempt}]"
                        f"{extra}: {result.summary}" + (f" - {result.error}" if result.error and
                                                       result.error not in result.summary else ""))
        for observer in self.after_run:
            try:
                observer(job, run_id, result, secs)
            except Exception as exc:  # noqa: BLE001 - an observer never changes the run's outcome
                self.log("warning", f"job {job.name} run {run_id}: {error_text(exc)}")
        if result.outcome == "failed" and retry and trigger != "manual":
            self._plan_retry(job, due, attempt)
        return result.outcome if outcome_only else run_id

    def _plan_retry(self, job: JobDef, due: datetime, attempt: int) -> None:
        if self.schedule_retry is None or attempt >= MAX_ATTEMPTS or self.ctx.stop.is_set():
            return
        delay = min(RETRY_BASE_S * 2 ** (attempt - 1), RETRY_MAX_S)
        if history.now() + timedelta(seconds=delay) >= clock.next_after(due, self.interval(job)):
            return  # the next occurrence comes first: it is the retry
        self.log("warning", f"job {job.name}: retry {attempt + 1}/{MAX_ATTEMPTS} in {delay:.0f}s")
        self.schedule_retry(job.name, due, attempt + 1, delay)
