"""``fluxa-integrity serve``: the always-on service in the foreground (service/scheduler.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from ..errors import FluxaError
from .common import DbOpt, JsonOpt, PolicyOpt, UriOpt, csv_list, emit_json, policy_from, target_option_values


def serve(
    policy: Optional[Path] = PolicyOpt, uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt,
    time_scale: float = typer.Option(1.0, "--time-scale", help="Compress the schedule: 3600 runs an hour of "
                                     "schedule per second (tests, demos); RPO targets and incident clocks stay real."),
    repo: Optional[Path] = typer.Option(None, "--repo", help="Backup repository directory (default: backup_repo in "
                                        "config.yaml, then $FLUXA_HOME/backups)."),
    lease_seconds: float = typer.Option(30.0, "--lease-seconds", min=0.5, help="A job's lease lasts this long "
                                        "unless renewed: how soon another serve takes over from a dead one."),
    grace_seconds: float = typer.Option(60.0, "--grace-seconds", min=0.0, help="On SIGTERM/SIGINT, wait this long "
                                        "for running jobs; the rest are recorded interrupted and rerun at the next start."),
    only: Optional[str] = typer.Option(None, "--only", help="Run only these jobs (comma-separated names from "
                                       "`jobs list`), e.g. one serve for the archiver and another for the rest."),
    slice_seconds: float = typer.Option(5.0, "--slice-seconds", min=0.1, help="The oplog archiver closes a slice "
                                        "this often (seconds)."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", min=0, max=65535, help="Serve Prometheus "
                                               "metrics on this port at /metrics (0: any free port, logged)."),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="Address the metrics server listens on "
                                     "(0.0.0.0 for every interface)."),
    log_format: str = typer.Option("text", "--log-format", help="stderr lines as text or json (the JSON log "
                                   "$FLUXA_HOME/logs/serve.json.log is always written)."),
    auto_incidents: bool = typer.Option(True, "--auto-incidents/--no-auto-incidents", help="Open or join "
                                        "incidents for findings past the policy's auto_incidents threshold."),
    json_out: bool = JsonOpt,
) -> None:
    """Run the policy's schedule until SIGTERM/SIGINT: checks, backups, verification, retention,
    RPO monitoring, incident clocks and the oplog archiver. Logs to stderr and $FLUXA_HOME/logs/serve.log."""
    from ..home import fluxa_home
    from ..service import enhanced, json_log, logs
    from ..service.auto_incidents import AutoIncidents
    from ..service.metrics import Metrics
    from ..service.jobs import check_schedule, find_job, job_definitions
    from ..service.scheduler import Service
    from ..service.tasks import TaskContext
    from ..store import open_store

    if not time_scale > 0:
        raise FluxaError(f"--time-scale must be positive, got {time_scale}", "e.g. --time-scale 3600")
    pol = policy_from(policy)
    check_schedule(pol, str(policy) if policy else "the policy")
    target = target_option_values(uri, db)
    if log_format not in ("text", "json"):
        raise FluxaError(f"--log-format must be text or json, got {log_format!r}")
    log, log_path = logs.setup(fluxa_home())
    json_log.setup_json(fluxa_home(), stderr=log_format == "json")
    stop_requested = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_requested.set())
    ctx = TaskContext(target.uri, target.db, pol, open_store(), repo, slice_seconds=slice_seconds,
                      log=lambda msg: log("error" if msg.startswith("GAP") else "info", msg))
    jobs = job_definitions(pol)
    if only:
        wanted = csv_list(only) or []
        for name in wanted:
            find_job(jobs, name)  # an unknown name is an error naming the policy's jobs
        jobs = [j for j in jobs if j.name in wanted]
    # enhanced monitoring (S32) goes with the checks: a serve that runs check jobs runs it
    dynamic = ((lambda: enhanced.job_defs(ctx.store, pol, target.db, time_scale))
               if any(j.task == "check" for j in jobs) else None)
    service = Service(ctx, jobs, time_scale=time_scale, lease_ttl=lease_seconds, log=log, dynamic=dynamic)
    metrics = Metrics(ctx.store, pol, target.db, target.uri)
    auto = AutoIncidents(ctx.store, pol, target.db, service.holder, lease_ttl=lease_seconds, log=log)
    auto.on_result += [metrics.observe_auto, lambda res: json_log.event("auto_incidents", **res)]

    def after_run(job, run_id, result, secs) -> None:
        if result.details.get("findings"):
            auto.poke()  # findings recorded: take them in now, not at the next poll

    def validated(records) -> None:
        metrics.observe_validation(records)
        if auto_incidents:
            auto.poke()  # a bad write recorded: an incident within this sweep, not the next poll

    ctx.on_validation_record = validated
    service.runner.after_run += [metrics.observe_run, json_log.job_run] + ([after_run] if auto_incidents else [])
    if metrics_port is not None:
        port = metrics.serve(metrics_port, metrics_host)
        log("info", f"metrics on http://{metrics_host}:{port}/metrics")
    n = service.start()
    if auto_incidents and pol.auto_incidents.enabled:
        auto.start()
    log("info", f"serving: {n} jobs scheduled on {target.db} (holder {service.holder}, time scale {time_scale:g}, "
                f"log {log_path}); SIGTERM or SIGINT stops")
    # a timed wait: the kernel may deliver SIGTERM to any of the worker threads, and Python runs the
    # handler only when the main thread executes bytecode - an untimed wait could sleep through it
    while not stop_requested.wait(0.25):
        pass
    log("info", f"stopping: waiting up to {grace_seconds:g}s for running jobs")
    auto.stop()
    interrupted = service.stop(grace_seconds)
    metrics.close()
    log("info", "stopped" + (f"; interrupted runs: {', '.join(map(str, interrupted))}" if interrupted else ""))
    if json_out:
        emit_json({"holder": service.holder, "db": target.db, "jobs": [j.name for j in jobs],
                   "interrupted_runs": interrupted})
    sys.stdout.flush()
    sys.stderr.flush()
    for h in __import__("logging").getLogger(logs.LOGGER).handlers:
        h.flush()
    # worker threads still inside a job (past the grace period) must not hold the exit: their runs
    # are already recorded interrupted
    os._exit(0)
