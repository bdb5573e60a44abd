"""Job definitions: the policy's schedules as the list of jobs ``serve`` runs.

Shape: ``job_definitions(policy)`` returns ``JobDef``s in a stable order - a name (what `jobs
show` and `jobs run-now` take), the task it runs (tasks.py), its policy cadence as an interval
(None: continuous) and the parameters of the task. Decisions where the policy is silent
(docs/service.md):

- a check category runs its enabled rules on its cadence (S39); ``continuous`` (schema) becomes an
  incremental run every CONTINUOUS_CHECK_EVERY, and - when any category is continuous - the
  ``validate-oplog`` job (service/validation.py) evaluates every write as it happens (S1); the
  incremental run stays as the net under it (writes made while no watcher ran, a trimmed oplog);
  a category without enabled rules is not scheduled;
- ``backup.full`` / ``backup.incremental`` on their frequency; ``backup.schema`` ``on_change``
  polls the schema every ON_CHANGE_EVERY (a schema backup is written only when it changed);
  ``backup.point_in_time`` ``continuous`` is the oplog archiver, a long-running job;
- verification by restore (S4): the newest full backup on ``check_schedule.backup_verification``
  (else ``backup.full.verification``), the newest incremental on ``backup.incremental.verification``;
- retention pruning hourly, RPO monitoring every RPO_EVERY, ``incident tick`` every minute;
- the anomaly and log-validation monitors (monitors/) every ``monitors.interval``;
- monthly = 30 days.

``schedule_problems(policy)`` lists schedules that cannot work (a full backup kept for less time
than between two runs, incrementals with no full backup, an RPO no backup cadence can meet);
``check_schedule`` raises them as one FluxaError so ``serve`` refuses to start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import FluxaError
from ..policy.durations import format_duration, parse_duration
from ..policy.models import Policy

FREQUENCY = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1),
             "monthly": timedelta(days=30)}
CONTINUOUS_CHECK_EVERY = timedelta(minutes=5)
ON_CHANGE_EVERY = timedelta(minutes=5)
TICK_EVERY = timedelta(minutes=1)
RPO_EVERY = timedelta(minutes=5)
RETENTION_EVERY = timedelta(hours=1)


@dataclass
class JobDef:
    name: str
    task: str  # a key of tasks.TASKS
    title: str
    interval: timedelta | None  # None: continuous (runs until the service stops)
    cadence: str  # how the policy says it, for people
    params: dict = field(default_factory=dict)
    until: datetime | None = None  # a job that ends by itself (enhanced monitoring): no occurrence after it

    @property
    def continuous(self) -> bool:
        return self.interval is None


def _every(delta: timedelta) -> str:
    return f"every {format_duration(delta)}"


def job_definitions(policy: Policy) -> list[JobDef]:
    jobs: list[JobDef] = []
    for category, sched in policy.check_schedule.items():
        if category == "backup_verification":
            continue  # the verify-full job below
        rules = [r.id for _, r in policy.iter_rules() if r.category == category and r.enabled]
        if not rules:
            continue
        name = "check-" + category.replace("_", "-")
        if sched.frequency == "continuous":
            jobs.append(JobDef(name, "check", f"{sched.title} (incremental)", CONTINUOUS_CHECK_EVERY,
                               f"continuous: incremental run {_every(CONTINUOUS_CHECK_EVERY)}",
                               {"category": category, "rules": rules, "incremental": True}))
        else:
            jobs.append(JobDef(name, "check", sched.title, FREQUENCY[sched.frequency], sched.frequency,
                               {"category": category, "rules": rules, "incremental": False}))
    if any(sched.frequency == "continuous" for sched in policy.check_schedule.values()):
        jobs.append(JobDef("validate-oplog", "validation", "Continuous validation of every write from the oplog (S1)",
                           None, "continuous: each write evaluated within seconds"))
    b = policy.backup
    if "full" in b and b["full"].frequency in FREQUENCY:
        jobs.append(JobDef("backup-full", "backup_full", b["full"].title, FREQUENCY[b["full"].frequency],
                           b["full"].frequency))
    if "incremental" in b and b["incremental"].frequency in FREQUENCY:
        jobs.append(JobDef("backup-incremental", "backup_incremental", b["incremental"].title,
                           FREQUENCY[b["incremental"].frequency], b["incremental"].frequency))
    if "schema" in b:
        f = b["schema"].frequency
        every = FREQUENCY.get(f, ON_CHANGE_EVERY)
        jobs.append(JobDef("backup-schema", "backup_schema", b["schema"].title, every,
                           f"on change: schema compared {_every(every)}" if f not in FREQUENCY else f))
    if "point_in_time" in b:
        f = b["point_in_time"].frequency
        jobs.append(JobDef("oplog-archiver", "archiver", b["point_in_time"].title, FREQUENCY.get(f),
                           "continuous" if f not in FREQUENCY else f"{f} (archives what the oplog holds, then stops)"))
    full_verify = policy.check_schedule.get("backup_verification")
    if "full" in b:
        freq = full_verify.frequency if full_verify else b["full"].verification
        if freq in FREQUENCY:
            jobs.append(JobDef("verify-full", "verify", "Backup verification by restore (full)", FREQUENCY[freq],
                               freq, {"kind": "full"}))
    if "incremental" in b and b["incremental"].verification in FREQUENCY:
        freq = b["incremental"].verification
        jobs.append(JobDef("verify-incremental", "verify", "Backup verification (incremental)", FREQUENCY[freq],
                           freq, {"kind": "incremental"}))
    mon, logv = policy.monitors, policy.log_validation
    if mon.enabled or logv.enabled:  # one job: the log rows share the monitors' interval grid (docs/monitors.md)
        what = " and ".join(w for w, on in (("volume/field anomalies", mon.enabled),
                                             ("log validation errors", logv.enabled)) if on)
        jobs.append(JobDef("monitors", "monitor", f"Anomaly monitors: {what} (S10-S12)", mon.interval_delta,
                           _every(mon.interval_delta)))
    jobs.append(JobDef("retention", "retention", "Retention pruning (backups and oplog slices)", RETENTION_EVERY,
                       _every(RETENTION_EVERY)))
    jobs.append(JobDef("rpo-monitor", "rpo", "RPO monitoring per data class", RPO_EVERY, _every(RPO_EVERY)))
    jobs.append(JobDef("incident-tick", "tick", "Incident clocks, escalation and notification retries", TICK_EVERY,
                       _every(TICK_EVERY)))
    return jobs


def find_job(jobs: list[JobDef], name: str) -> JobDef:
    for job in jobs:
        if job.name == name:
            return job
    raise FluxaError(f"no job {name!r}", f"the jobs of this policy: {', '.join(j.name for j in jobs)}")


def schedule_problems(policy: Policy) -> list[str]:
    """Schedules that cannot work, each as ``location: what is wrong``."""
    problems: list[str] = []
    b = policy.backup
    for kind in ("full", "incremental"):
        sched = b.get(kind)
        if sched is None:
            continue
        if sched.frequency not in FREQUENCY:
            problems.append(f"backup.{kind}.frequency: a {kind} backup cannot be taken {sched.frequency!r}; "
                            f"use one of {', '.join(FREQUENCY)}")
            continue
        if sched.retention is not None and parse_duration(sched.retention) < FREQUENCY[sched.frequency]:
            problems.append(f"backup.{kind}.retention: kept {sched.retention} but taken {sched.frequency}: for part of "
                            "every interval no such backup exists; keep it at least as long as the interval")
    if "incremental" in b and "full" not in b:
        problems.append("backup.incremental: incremental backups build on a full backup, and the policy schedules none "
                        "(add backup.full)")
    if "schema" in b and b["schema"].frequency == "continuous":
        problems.append("backup.schema.frequency: a schema backup is taken on_change or periodically, not continuously")
    if "point_in_time" in b and b["point_in_time"].frequency == "on_change":
        problems.append("backup.point_in_time.frequency: the oplog archive is continuous or periodic, not on_change")
    # the tightest recovery point the backup cadence allows (continuous archiving: no bound)
    cadences = [(FREQUENCY[s.frequency], f"backup.{k}") for k, s in b.items()
                if k != "schema" and s.frequency in FREQUENCY]
    continuous = "point_in_time" in b and b["point_in_time"].frequency == "continuous"
    if not continuous:
        best = min(cadences, default=None, key=lambda c: c[0])
        for i, dc in enumerate(policy.data_classes):
            if best is None:
                problems.append(f"data_classes[{i}] ({dc.name}).rpo: RPO {dc.rpo} with no backup scheduled at all")
            elif best[0] > dc.rpo_delta:
                problems.append(f"data_classes[{i}] ({dc.name}).rpo: RPO {dc.rpo} cannot be met: the most frequent "
                                f"backup ({best[1]}) runs every {format_duration(best[0])}; schedule a tighter "
                                "backup or point_in_time: continuous")
    return problems


def check_schedule(policy: Policy, source: str = "the policy") -> None:
    problems = schedule_problems(policy)
    if problems:
        raise FluxaError(f"{source} has a schedule that cannot work:\n  " + "\n  ".join(problems),
                         "fix these entries of the policy (`fluxa-integrity policy validate` checks the rest)")
