"""``fluxa-integrity jobs``: the service's jobs, their history, and running one now."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer

from ..errors import FluxaError
from .common import EXIT_PROBLEMS, DbOpt, JsonOpt, PolicyOpt, UriOpt, console, emit_json, policy_from
from .render import Col, print_table, when

app = typer.Typer(help="The jobs `serve` runs from the policy: next run, last outcome, history, run one now.",
                  no_args_is_help=True)


def _state(policy: Optional[Path]):
    from ..service import history
    from ..service.jobs import job_definitions
    from ..store import open_store

    from ..service import enhanced

    store = open_store()
    history.sweep_orphans(store)  # a run whose process died shows as interrupted, not running forever
    pol, live = policy_from(policy), history.live_instances(store)
    # enhanced monitoring jobs last while their incident's period does (on the live serve's clock)
    scale = live[0].time_scale if live else 1.0
    return store, job_definitions(pol) + enhanced.job_defs(store, pol, None, scale), live


def _next_run(job, live, last) -> str | None:
    """The next occurrence on the grid of the live serve (its time scale); None when nobody serves it."""
    from ..service import clock, history

    inst = next((i for i in live if job.name in (i.jobs or [])), None)
    if inst is None or job.continuous:
        return None
    step = clock.scaled(job.interval, inst.time_scale)
    t = history.now()
    due = clock.floor(t, step)
    settled = history.aware(last.scheduled_for) if last is not None and last.outcome != "interrupted" else None
    return (due if settled is None or settled < due else clock.next_after(t, step)).isoformat()


def _row(job, live, latest, finished, held) -> dict:
    from ..service.history import as_dict

    last = finished.get(job.name)
    running = latest.get(job.name) if latest.get(job.name) is not None and latest[job.name].outcome == "running" else None
    return {"job": job.name, "title": job.title, "cadence": job.cadence,
            "interval_seconds": None if job.continuous else job.interval.total_seconds(),
            "next_run": _next_run(job, live, latest.get(job.name)),
            "served": any(job.name in (i.jobs or []) for i in live),
            "running": as_dict(running) if running else None, "lease_holder": held[job.name].holder if job.name in held else None,
            "last": as_dict(last) if last else None}


@app.command("list")
def list_(policy: Optional[Path] = PolicyOpt, json_out: bool = JsonOpt) -> None:
    """Every job of the policy with its cadence, next run (from the live serve's schedule), and
    its last outcome. Exit 1 when a job's last run failed or was interrupted."""
    from ..service import history, leases

    store, jobs, live = _state(policy)
    latest, finished, held = history.latest_by_job(store), history.latest_finished_by_job(store), leases.live(store)
    rows = [_row(j, live, latest, finished, held) for j in jobs]
    bad = any(r["last"] and r["last"]["outcome"] in ("failed", "interrupted") for r in rows)
    if json_out:
        emit_json({"serving": [{"holder": i.holder, "pid": i.pid, "db": i.db, "time_scale": i.time_scale,
                                "heartbeat_at": history.iso(i.heartbeat_at)} for i in live], "jobs": rows})
        raise typer.Exit(EXIT_PROBLEMS if bad else 0)
    if live:
        for i in live:
            console.print(f"served by pid {i.pid} on {i.host} ({i.db}, time scale {i.time_scale:g}), "
                          f"since {when(i.started_at)}", highlight=False)
    else:
        console.print("[yellow]no serve is running[/]: nothing runs on schedule (`fluxa-integrity serve`)",
                      highlight=False)
    cells = []
    for r in rows:
        last = r["last"]
        shown = "never" if not last else f"{last['outcome']} {when(last['finished_at'])}"
        nxt = "running" if r["running"] else ("continuous" if r["interval_seconds"] is None else when(r["next_run"]))
        cells.append([r["job"], r["cadence"], nxt, shown, (last or {}).get("summary") or "-"])
    print_table(console, "jobs", [Col("job", id=True), Col("cadence"), Col("next run"), Col("last outcome"),
                                  Col("last summary")], cells)
    raise typer.Exit(EXIT_PROBLEMS if bad else 0)


@app.command()
def show(job: str = typer.Argument(..., help="Job name, as `jobs list` shows it."),
         limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many runs, newest first."),
         policy: Optional[Path] = PolicyOpt, json_out: bool = JsonOpt) -> None:
    """One job: its definition, who holds it now, and its recent runs."""
    from ..service import history, leases
    from ..service.jobs import find_job

    store, jobs, live = _state(policy)
    j = find_job(jobs, job)
    row = _row(j, live, history.latest_by_job(store), history.latest_finished_by_job(store), leases.live(store))
    runs = [history.as_dict(r) for r in history.runs(store, j.name, limit)]
    if json_out:
        emit_json({**row, "params": j.params, "runs": runs})
        return
    console.print(f"[bold]{j.name}[/]: {j.title} - {j.cadence}" + (f"; next run {when(row['next_run'])}"
                                                                     if row["next_run"] else ""), highlight=False)
    if row["lease_holder"]:
        console.print(f"running now in {row['lease_holder']}", highlight=False)
    print_table(console, f"runs of {j.name}", [Col("run", id=True), Col("scheduled for"), Col("trigger"),
                                               Col("outcome"), Col("seconds", justify="right"), Col("summary")],
                [[str(r["id"]), when(r["scheduled_for"]), r["trigger"] + (f" (+{r['missed']} missed)" if r["missed"] else "")
                  + (f" #{r['attempt']}" if r["attempt"] > 1 else ""), r["outcome"],
                  "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}",
                  r["summary"] + (f" - {r['error']}" if r["error"] and r["error"] not in r["summary"] else "")]
                 for r in runs])


@app.command("run-now")
def run_now(job: str = typer.Argument(..., help="Job name, as `jobs list` shows it."),
            wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the run's outcome (a running serve "
                                      "runs it); --no-wait returns once the request is queued."),
            timeout: float = typer.Option(3600.0, "--timeout", min=1, help="Give up waiting after this many seconds."),
            policy: Optional[Path] = PolicyOpt, uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt,
            json_out: bool = JsonOpt) -> None:
    """Run a job now: a running serve runs it (the request is queued in the state store); with no
    serve running, it runs in this process. Exit 0 when it ran ok or had nothing to do, 1 when it failed."""
    import getpass

    from ..service import history
    from ..service.jobs import find_job

    store, jobs, live = _state(policy)
    j = find_job(jobs, job)
    server = next((i for i in live if j.name in (i.jobs or [])), None)
    if server is not None:
        rid = history.request_run(store, j.name, f"{getpass.getuser()} (jobs run-now)")
        console.print(f"asked serve pid {server.pid} on {server.host} to run {j.name} (request {rid})", highlight=False)
        if not wait:
            if json_out:
                emit_json({"request_id": rid, "job": j.name, "served_by": server.holder, "run": None})
            return
        run = _wait_for(store, rid, timeout)
    else:
        from ..service.manual import run_here
        from ..service.tasks import TaskContext
        from .common import target_option_values

        target = target_option_values(uri, db)
        console.print(f"no serve is running: running {j.name} here", highlight=False)
        ctx = TaskContext(target.uri, target.db, policy_from(policy), store)
        run = history.get_run(store, run_here(ctx, jobs, j.name))
    d = history.as_dict(run)
    if json_out:
        emit_json({"job": j.name, "run": d})
    else:
        colour = {"ok": "green", "skipped": "yellow"}.get(d["outcome"], "red")
        console.print(f"[{colour}]{j.name} run {d['id']}: {d['outcome']}[/] in {d['duration_s'] or 0:.1f}s: "
                      f"{d['summary']}" + (f"\n{d['error']}" if d["error"] and d["error"] not in d["summary"] else ""),
                      highlight=False, soft_wrap=True)
    raise typer.Exit(0 if d["outcome"] in ("ok", "skipped") else EXIT_PROBLEMS)


def _wait_for(store, request_id: int, timeout: float):
    from ..service import history

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        req = history.get_request(store, request_id)
        if req.status == "done":
            run = history.get_run(store, req.run_id) if req.run_id else None
            if run is None:
                raise FluxaError(f"request {request_id} ended without a run", "see the serve log ($FLUXA_HOME/logs/serve.log)")
            if run.outcome != "running":
                return run
        time.sleep(0.2)
    raise FluxaError(f"request {request_id} did not finish within {timeout:g}s",
                     "it may still run: see `fluxa-integrity jobs show JOB`")
