"""What each job does: thin calls into the same domain functions the CLI commands call.

Shape: ``TASKS[name](ctx, job) -> TaskResult(outcome, summary, details)``; ``ctx`` carries the
target resolved once by the face (URI, database), the policy, the store, the backup repository
and the service's stop event. Outcomes: ``ok``; ``skipped`` when there is nothing to do yet (no
backup to verify, no full backup under an incremental); ``failed`` when the job ran and its
answer is bad (a verification that does not pass, an RPO breached, an archive gap). An error
(server unreachable, full disk, anything the domain raises) propagates: the runner records it as
failed and retries with backoff.

Decisions (docs/service.md): check findings are an ``ok`` run whose summary counts them (the
findings are in the store for `check findings` and the incident intake); an RPO breach is a
``failed`` rpo-monitor run naming each class past its target, and an ``rpo_breached`` incident
(service/rpo_breach.py: one per database while live, noted on as classes breach or are met again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import FluxaError
from ..policy.models import Policy
from ..store import Store
from .jobs import JobDef

UTC = timezone.utc


@dataclass
class TaskContext:
    uri: str
    db: str
    policy: Policy
    store: Store
    repo: Path | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    log: Callable[[str], None] = lambda msg: None
    slice_seconds: float = 5.0  # the archiver closes a slice this often (real seconds)
    check_workers: int = 1
    check_backups: bool = True  # check every full backup on its files right after it is taken (S4)
    # continuous validation calls it with each batch of recorded violations (metrics, automatic incidents)
    on_validation_record: Callable[[list], None] | None = None
    # when this service started: an RPO with no recoverable point is an incident only after one RPO of uptime
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class TaskResult:
    outcome: str  # ok | skipped | failed
    summary: str
    details: dict = field(default_factory=dict)
    error: str | None = None


def check(ctx: TaskContext, job: JobDef) -> TaskResult:
    from pymongo.errors import PyMongoError

    from ..checks.history import baselines, record_failed_run, record_run, watermarks
    from ..checks.runner import DOC_LOCAL, RunOptions, run_checks
    from ..mongo.connection import first_line

    rules = job.params["rules"]
    # an incremental run evaluates only per-document rules: without any, the run is a full one
    incremental = job.params["incremental"] and any(isinstance(ctx.policy.rule(r), DOC_LOCAL) for r in rules)
    opts = RunOptions(rules=rules, incremental=incremental, workers=ctx.check_workers)
    started = datetime.now(UTC)
    try:
        report = run_checks(ctx.uri, ctx.db, ctx.policy, opts, baselines=baselines(ctx.store, ctx.db),
                            watermarks=watermarks(ctx.store, ctx.db) if incremental else None)
    except PyMongoError as exc:
        run_id = record_failed_run(ctx.store, ctx.db, started, first_line(exc), [], rules)
        raise FluxaError(f"check run {run_id} failed: {first_line(exc)}", "the run is recorded as failed") from exc
    summary = record_run(ctx.store, report)
    n = len(report.findings)
    text = (f"check run {summary['run_id']}: {report.total_docs} documents, {n} finding{'s' * (n != 1)} "
            f"({summary['opened']} new, {summary['closed']} closed)" + (" [incremental]" if incremental else ""))
    if n:
        ctx.log(f"{job.name}: {n} findings: " + ", ".join(sorted({f.rule_id for f in report.findings}))[:300])
    return TaskResult("ok", text, {"check_run_id": summary["run_id"], "findings": n, "opened": summary["opened"],
                                   "closed": summary["closed"], "documents": report.total_docs,
                                   "incremental": incremental, "warnings": report.warnings})


def backup_full(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..backup.snapshot import BackupOptions, run_backup

    res = run_backup(ctx.uri, ctx.db, ctx.store, BackupOptions(repo=ctx.repo))
    docs = res.manifest["totals"]["documents"]
    details = {"backup_id": res.id, "documents": docs, "schema_backup": res.schema_backup, "warnings": res.warnings}
    text = f"full backup {res.id}: {docs} documents" + (
        f"; schema changed: schema backup {res.schema_backup}" if res.schema_backup else "")
    if ctx.check_backups:  # S4: checked on its files at once (backup/verify_files.py)
        from ..backup.verify_files import check_backup_files

        checked = check_backup_files(ctx.store, res.id, ctx.policy, workers=ctx.check_workers)
        details["files_check"] = {k: checked.get(k) for k in ("verification_id", "verdict", "problems")}
        if checked["verdict"] != "pass":
            return TaskResult("failed", text + "; its files check FAILED", details, "; ".join(checked["problems"])[:2000])
        text += "; files checked"
    return TaskResult("ok", text, details)


def backup_incremental(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..backup.incremental import previous_end, run_incremental

    try:
        previous_end(ctx.store, ctx.db)
    except FluxaError as exc:
        return TaskResult("skipped", exc.message)
    res = run_incremental(ctx.uri, ctx.db, ctx.store, ctx.repo)
    return TaskResult("ok", f"incremental backup {res.id}: {res.manifest['entries']} oplog entries",
                      {"backup_id": res.id, "entries": res.manifest["entries"], "based_on": res.manifest["based_on"]})


def backup_schema(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..backup.repository import resolve_repo
    from ..backup.schema import take_schema_backup_if_changed
    from ..mongo.connection import connect

    client = connect(ctx.uri)
    try:
        bid = take_schema_backup_if_changed(client, ctx.db, resolve_repo(ctx.repo), ctx.store)
    finally:
        client.close()
    return TaskResult("ok", f"schema changed: schema backup {bid}" if bid else "schema unchanged",
                      {"backup_id": bid})


def verify(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..backup import catalog
    from ..restore.verification import verify_backup

    kind = job.params["kind"]
    rows = [b for b in catalog.list_backups(ctx.store, ctx.db, kind) if b.status in ("complete", "verified")]
    if not rows:
        return TaskResult("skipped", f"no {kind} backup of {ctx.db} to verify yet")
    report = verify_backup(ctx.uri, ctx.store, rows[0].id, ctx.policy)
    details = {"backup_id": rows[0].id, "verdict": report["verdict"], "problems": report.get("problems", []),
               "restore_seconds": report.get("restore_seconds", {}),
               "verification_id": report.get("verification_id")}
    if report["verdict"] != "pass":
        return TaskResult("failed", f"backup {rows[0].id} failed verification", details,
                          "; ".join(report.get("problems", []))[:2000] or "verification failed")
    return TaskResult("ok", f"backup {rows[0].id} verified by restore", details)


def retention(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..backup import catalog
    from ..backup.repository import resolve_repo
    from ..backup.retention import apply_prune, plan_prune
    from ..backup.slice_retention import apply_slice_prune, plan_slice_prune

    try:
        repo = resolve_repo(ctx.repo, create=False)
    except FluxaError:
        repo = None  # no repository yet: nothing to sweep there
    swept = catalog.sweep_dead_runs(ctx.store, [repo] if repo and repo.is_dir() else [])
    items = plan_prune(ctx.store, ctx.policy, None, ctx.db)
    slices = plan_slice_prune(ctx.store, ctx.policy)
    deleted = apply_prune(ctx.store, items) + apply_slice_prune(ctx.store, slices)
    n_slices = sum(1 for i in slices if i.action == "delete")
    return TaskResult("ok", f"deleted {len(deleted) - n_slices} backups and {n_slices} oplog slices past retention; "
                      f"swept {len(swept)} dead runs", {"deleted": deleted, "swept": [s["id"] for s in swept]})


def rpo(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..backup.archive_catalog import coverage
    from ..backup.objectives import rpo_status

    from .rpo_breach import RpoBreach

    rows = rpo_status(ctx.store, ctx.policy, ctx.db)
    _, gaps = coverage(ctx.store)
    breached = [r for r in rows if r["status"] == "breached"]
    details = {"data_classes": [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
                                for r in rows], "oplog_gaps": gaps,
               "incident": RpoBreach(ctx.store, ctx.policy, ctx.db, ctx.log, ctx.started_at).judge(rows)}
    if breached or gaps:
        why = [f"{r['data_class']}: " + (f"newest recoverable point {r['age_seconds']:.0f}s old, RPO {r['rpo']}"
                                         if r["age_seconds"] is not None else f"no recoverable point (RPO {r['rpo']})")
               for r in breached] + [f"oplog archive gap after {g['after']}" for g in gaps]
        return TaskResult("failed", f"RPO breached for {len(breached)} data classes" + (f", {len(gaps)} archive gaps"
                          if gaps else ""), details, "; ".join(why))
    return TaskResult("ok", f"RPO met for all {len(rows)} data classes", details)


def tick(ctx: TaskContext, job: JobDef) -> TaskResult:
    from ..comms.notify import load_channels, retry_settings
    from ..home import load_config_file
    from ..incidents.api import Incidents

    cfg = load_config_file()
    res = Incidents(ctx.store, ctx.policy, load_channels(cfg), retry_settings(cfg)).tick()
    r = res["notifications_retried"]
    return TaskResult("ok", f"{len(res['events'])} clock events; notifications retried: {r['sent']} sent, "
                      f"{r['failed']} failed", {"events": res["events"], "notifications_retried": r})


def archiver(ctx: TaskContext, job: JobDef, once: bool = False, ready: Callable[[], None] = lambda: None) -> TaskResult:
    """The oplog archiver of backup/archiver.py with its repository lock: until the service stops
    (continuous) or once through what the oplog holds (periodic, or a manual run)."""
    from ..backup.archiver import ArchiveOptions, archive_oplog

    once = once or not job.continuous
    opts = ArchiveOptions(once=once, slice_seconds=ctx.slice_seconds, poll_ms=200 if once else 500)
    rep = archive_oplog(ctx.uri, ctx.store, ctx.repo, opts, ctx.stop, ctx.log, ready)
    details = {"entries": rep.entries, "slices": len(rep.slices), "gaps": rep.gaps,
               "last": None if rep.last is None else f"{rep.last.time}:{rep.last.inc}"}
    text = f"archived {rep.entries} oplog entries in {len(rep.slices)} slices"
    if rep.gaps:
        return TaskResult("failed", text, details, "; ".join(f"GAP after {g['after']}: {g['reason']}" for g in rep.gaps))
    return TaskResult("ok", text, details)


def monitor(ctx: TaskContext, job: JobDef) -> TaskResult:
    """Every closed monitors.interval not measured yet (monitors/runner.py); anomalies are findings."""
    from ..mongo.connection import connect
    from ..monitors.runner import run_monitors

    client = connect(ctx.uri)
    try:
        rep = run_monitors(client, ctx.store, ctx.db, ctx.policy)
    finally:
        client.close()
    if not rep.intervals:
        return TaskResult("skipped", "no closed interval to measure yet")
    n = len(rep.findings)
    if n:
        ctx.log(f"{job.name}: {n} anomalies: " + ", ".join(f.rule_id for f in rep.findings)[:300])
    return TaskResult("ok", f"{len(rep.intervals)} intervals measured, {len(rep.judged)} metrics judged, "
                      f"{n} finding{'s' * (n != 1)}" + (f" (check run {rep.run_id})" if rep.run_id else ""),
                      {"check_run_id": rep.run_id, "findings": n, "intervals": [i["start"] for i in rep.intervals],
                       "warnings": rep.warnings[:20]})


def validation(ctx: TaskContext, job: JobDef, once: bool = False, ready: Callable[[], None] = lambda: None) -> TaskResult:
    """Continuous validation (service/validation.py): until the service stops, or once through
    what the oplog holds (a manual run). A gap (writes it could not see) makes the run failed."""
    from .validation import run_task

    outcome, summary, details, error = run_task(ctx, job, once or not job.continuous, ready)
    return TaskResult(outcome, summary, details, error)


TASKS: dict[str, Callable[[TaskContext, JobDef], TaskResult]] = {
    "check": check, "backup_full": backup_full, "backup_incremental": backup_incremental,
    "backup_schema": backup_schema, "verify": verify, "retention": retention, "rpo": rpo, "tick": tick,
    "archiver": archiver, "monitor": monitor, "validation": validation,
}
