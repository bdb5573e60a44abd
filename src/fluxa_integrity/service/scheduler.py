"""The service process: APScheduler drives the runner on each job's grid; leases kept alive.

Shape: ``Service(ctx, jobs, ...)``; ``start()`` registers this process in the state store,
marks orphaned runs interrupted, and starts a BackgroundScheduler with
- one interval job per periodic job on its grid (clock.py: the trigger starts at the grid's
  anchor, so every process fires at the same instants), started at once when the job is behind
  (never run, or occurrences missed while no service ran: they run once, coalesced);
- one job per continuous job (the archiver) in an executor of its own, so it never starves the pool;
- a poll for run-now requests (REQUEST_POLL_S);
- with ``dynamic``, a sync of the jobs that come and go (enhanced monitoring after an incident:
  enhanced.py) every SYNC_EVERY_S: new ones are scheduled like any periodic job, ended ones dropped;
and a keeper thread that renews this holder's leases and heartbeat every ``lease_ttl / 3``.
``stop(grace)`` sets the stop event (the archiver closes its slice; job loops end), stops the
scheduler, waits up to ``grace`` seconds for running jobs, marks the rest interrupted (their
occurrences run again at the next start), releases the leases and records the stop.

Every run is in-process: the runner calls the domain functions directly, never a subprocess.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta
from typing import Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import clock, history, leases
from .jobs import JobDef
from .runner import Runner
from .tasks import TaskContext

REQUEST_POLL_S = 0.5
SYNC_EVERY_S = 2.0  # dynamic jobs (enhanced monitoring) appear within this of an incident resolving
POOL_THREADS = 6  # jobs wait on the server and the disk; the server is the bottleneck, not the CPU


class Service:
    def __init__(self, ctx: TaskContext, jobs: list[JobDef], *, holder: str | None = None, time_scale: float = 1.0,
                 lease_ttl: float = 30.0, log: Callable[[str, str], None] = lambda level, msg: None,
                 dynamic: Callable[[], list[JobDef]] | None = None):
        self.ctx, self.jobs, self.log = ctx, jobs, log
        # jobs that come and go while serving (enhanced.py), asked for every enhanced.SYNC_EVERY_S
        self.dynamic, self._dynamic_names, self._static_names = dynamic, set(), [j.name for j in jobs]
        self.holder = holder or leases.new_holder()
        self.time_scale, self.lease_ttl = time_scale, lease_ttl
        self.runner = Runner(ctx, jobs, self.holder, time_scale=time_scale, lease_ttl=lease_ttl, log=log,
                             schedule_retry=self._schedule_retry)
        self.scheduler: BackgroundScheduler | None = None
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()

    # -- start ------------------------------------------------------------------------------------

    def start(self) -> int:
        store = self.ctx.store
        orphans = history.sweep_orphans(store)
        if orphans:
            self.log("warning", f"runs {', '.join(map(str, orphans))} were left running by a process that is gone: "
                                "marked interrupted; their occurrences run again")
        history.register(store, holder=self.holder, pid=os.getpid(), host=socket.gethostname(), db=self.ctx.db,
                         time_scale=self.time_scale, lease_seconds=self.lease_ttl, jobs=[j.name for j in self.jobs])
        self._keeper = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
        self._keeper.start()
        continuous = [j for j in self.jobs if j.continuous]
        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(POOL_THREADS),
                       "continuous": ThreadPoolExecutor(max(1, len(continuous))),
                       "control": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}, timezone="UTC")
        now = history.now()
        for job in self.jobs:
            if job.continuous:
                sched.add_job(self.runner.run_continuous, DateTrigger(now), args=[job.name], id=job.name,
                              executor="continuous")
                continue
            self._add_periodic(sched, job, now)
        sched.add_job(self._poll_requests, IntervalTrigger(seconds=REQUEST_POLL_S), id="__requests__",
                      executor="control")
        if self.dynamic is not None:
            sched.add_job(self._sync_dynamic, IntervalTrigger(seconds=SYNC_EVERY_S), id="__dynamic__",
                          executor="control", next_run_time=now)
        self.scheduler = sched  # before start: the first dynamic sync may fire at once
        sched.start()
        return len(self.jobs)

    def _add_periodic(self, sched: BackgroundScheduler, job: JobDef, now) -> None:
        step = self.runner.interval(job)
        trigger = IntervalTrigger(seconds=step.total_seconds(), start_date=clock.ANCHOR, end_date=job.until,
                                  timezone="UTC")
        extra = {"next_run_time": now} if self.runner.behind(job, now) else {}
        sched.add_job(self.runner.fire, trigger, args=[job.name], id=job.name, **extra)

    def _sync_dynamic(self) -> None:
        """Schedule the dynamic jobs that appeared, drop those that ended (their history stays)."""
        try:
            wanted = {j.name: j for j in self.dynamic()}
        except Exception as exc:  # noqa: BLE001 - the store may be briefly busy: keep what runs, retry
            self.log("warning", f"dynamic jobs: {exc}")
            return
        before = set(self._dynamic_names)
        for name, job in wanted.items():
            if name not in self._dynamic_names:
                self.runner.add_job(job)
                self._add_periodic(self.scheduler, job, history.now())
                self._dynamic_names.add(name)
                self.log("info", f"job {name} scheduled: {job.title}, {job.cadence}")
        for name in sorted(self._dynamic_names - set(wanted)):
            try:
                self.scheduler.remove_job(name)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self._dynamic_names.discard(name)
            self.log("info", f"job {name} ended: its period is over")
        if self._dynamic_names != before:  # `jobs list` shows what this serve runs now
            history.set_jobs(self.ctx.store, self.holder, self._static_names + sorted(self._dynamic_names))

    def _schedule_retry(self, name: str, due, attempt: int, delay: float) -> None:
        if self.scheduler is not None and not self.ctx.stop.is_set():
            self.scheduler.add_job(self.runner.retry, DateTrigger(history.now() + timedelta(seconds=delay)),
                                   args=[name, due, attempt])

    def _poll_requests(self) -> None:
        try:
            for req in history.take_requests(self.ctx.store, self.holder, {j.name for j in self.jobs}):
                self.log("info", f"run-now request {req.id}: {req.job} (by {req.requested_by})")
                self.scheduler.add_job(self._run_request, DateTrigger(history.now()), args=[req.id, req.job],
                                       executor="continuous" if any(j.continuous and j.name == req.job
                                                                    for j in self.jobs) else "default")
        except Exception as exc:  # noqa: BLE001 - the store may be briefly busy; the next poll retries
            self.log("warning", f"run-now poll failed: {exc}")

    def _run_request(self, request_id: int, name: str) -> None:
        run_id = None
        try:
            run_id = self.runner.run_manual(name, request_id)
        finally:
            history.complete_request(self.ctx.store, request_id, run_id)

    def _keep(self) -> None:
        every = max(self.lease_ttl / 3, 0.2)
        while not self._keeper_stop.wait(every):
            try:
                leases.renew(self.ctx.store, self.holder, self.lease_ttl)
                history.heartbeat(self.ctx.store, self.holder)
            except Exception as exc:  # noqa: BLE001 - a busy store: the next beat retries, within the ttl
                self.log("warning", f"lease renewal failed: {exc}")

    # -- stop -------------------------------------------------------------------------------------

    def stop(self, grace: float) -> list[int]:
        """Stop; the ids of the runs that did not finish within ``grace`` seconds (interrupted)."""
        self.ctx.stop.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + grace
        while self.runner.active and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.runner._active_lock:
            left = dict(self.runner.active)
        history.mark_interrupted(self.ctx.store, list(left), "the service stopped before the job finished")
        self._keeper_stop.set()
        leases.release_all(self.ctx.store, self.holder)
        history.stopped(self.ctx.store, self.holder)
        for run_id, job in left.items():
            self.log("warning", f"job {job} run {run_id} interrupted by the stop (did not finish within {grace:.0f}s)")
        return list(left)
