"""Routes that read (viewer and up): incidents, findings, check runs, backups, restores, RPO/RTO, the oplog
archive's coverage, drills, recovery plans, jobs.

Each calls the function its CLI command calls (named in the route's docstring) and returns its
result JSON-ready and masked for the caller (shown.py). An unknown id is a 404 with the domain's
own message. Nothing here writes, not even the sweeps some CLI listings do (`backup list` marks
dead runs failed): reading the API never changes the store.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from ..access.tokens import Principal
from ..incidents.lifecycle import STATUSES
from .auth import require
from .errors import ApiError, not_found
from .shown import columns, shown

router = APIRouter(prefix="/api")
MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32 bits on PostgreSQL; a larger one is malformed (422), not a 500
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
IncidentId = Annotated[int, Path(ge=1, le=MAX_ID, description="Incident id.")]
viewer = require("viewer")
IncidentStatus = Literal["live", "open", "acknowledged", "investigating", "recovering", "resolved", "closed"]
assert set(IncidentStatus.__args__) == {"live", *STATUSES}  # the query's choices are the lifecycle's


def incidents_of(request: Request):
    return request.app.state.incidents


def store_of(request: Request):
    return request.app.state.store


@router.get("/whoami", tags=["access"])
def whoami(who: Principal = Depends(viewer)):
    """The caller's token: id, name (the actor on timelines) and role."""
    return {"token_id": who.token_id, "name": who.name, "role": who.role}


# -- incidents ----------------------------------------------------------------------------------

@router.get("/incidents", tags=["incidents"])
def list_incidents(request: Request, status: Optional[IncidentStatus] = Query(None, description="A status, or "
                   "live (not resolved yet)."), who: Principal = Depends(viewer)):
    """Incidents, newest first (`incident list`)."""
    return shown(who, incidents_of(request).list(status))


@router.get("/incidents/{incident_id}", tags=["incidents"])
def show_incident(request: Request, incident_id: IncidentId, who: Principal = Depends(viewer)):
    """One incident with its clocks, timeline, notifications and publications (`incident show --json`)."""
    api = incidents_of(request)
    with not_found():
        inc = api.get(incident_id)
    return shown(who, {**inc, "clocks": api.clocks(incident_id), "timeline": api.timeline(incident_id),
                       "notifications": api.notifications(incident_id), "publications": api.publications(incident_id)})


@router.get("/incidents/{incident_id}/timeline", tags=["incidents"])
def incident_timeline(request: Request, incident_id: IncidentId, who: Principal = Depends(viewer)):
    """The hash-chained timeline, oldest first."""
    with not_found():
        return shown(who, incidents_of(request).timeline(incident_id))


@router.get("/incidents/{incident_id}/checklist", tags=["incidents"])
def incident_checklist(request: Request, incident_id: IncidentId, who: Principal = Depends(viewer)):
    """The five phases' checklists with owners and windows (`incident phase ID`)."""
    with not_found():
        return shown(who, incidents_of(request).checklist(incident_id))


@router.get("/incidents/{incident_id}/clocks", tags=["incidents"])
def incident_clocks(request: Request, incident_id: IncidentId, who: Principal = Depends(viewer)):
    """Deadlines, time left, phase windows and the next escalation (`incident clocks`)."""
    with not_found():
        return shown(who, incidents_of(request).clocks(incident_id))


@router.get("/incidents/{incident_id}/postmortem", tags=["incidents"])
def incident_postmortem(request: Request, incident_id: IncidentId, who: Principal = Depends(viewer)):
    """The postmortem as it stands: numbers and Markdown (`incident postmortem`)."""
    with not_found():
        return shown(who, incidents_of(request).postmortem(incident_id))


# -- findings and check runs --------------------------------------------------------------------

@router.get("/findings", tags=["checks"])
def list_findings(request: Request, status: Literal["open", "closed", "all"] = Query("open", description="Which "
                  "findings."), db: Optional[str] = Query(None, description="Only findings on this database."),
                  who: Principal = Depends(viewer)):
    """Findings in the state store (`check findings`)."""
    from ..checks.history import list_findings as rows

    return shown(who, [columns(r) for r in rows(store_of(request), db, None if status == "all" else status)])


@router.get("/findings/{ref}", tags=["checks"])
def show_finding(request: Request, ref: str, who: Principal = Depends(viewer)):
    """One finding (id or fingerprint prefix) with its evidence and every sighting (`check show`)."""
    from ..checks.history import get_finding

    got = get_finding(store_of(request), ref)
    if got is None:
        raise ApiError(404, f"no finding {ref!r}", "list them at /api/findings?status=all")
    row, sightings = got
    return shown(who, {**columns(row), "sightings": [{"run_id": s.run_id, "seen_at": s.seen_at, "count": s.count}
                                                      for s in sightings]})


@router.get("/check-runs", tags=["checks"])
def list_check_runs(request: Request, db: Optional[str] = Query(None, description="Only runs on this database."),
                    limit: int = Query(20, ge=1, le=1000, description="At most this many runs."),
                    who: Principal = Depends(viewer)):
    """Past check runs, newest first (`check history`)."""
    from ..checks.history import list_runs

    return shown(who, [columns(r) for r in list_runs(store_of(request), db, limit)])


# -- backups ------------------------------------------------------------------------------------

@router.get("/backups", tags=["backups"])
def list_backups(request: Request, db: Optional[str] = Query(None, description="Only backups of this database."),
                 kind: Optional[Literal["full", "incremental", "schema"]] = Query(None, description="Only this kind."),
                 who: Principal = Depends(viewer)):
    """Backups in the catalog, newest first, each with its latest verification (`backup list`)."""
    from ..backup import catalog

    store = store_of(request)
    checks = catalog.latest_verifications(store)
    return shown(who, [catalog.as_dict(r, checks.get(r.id)) for r in catalog.list_backups(store, db, kind)])


@router.get("/backups/{backup_id}", tags=["backups"])
def show_backup(request: Request, backup_id: str, who: Principal = Depends(viewer)):
    """One backup (id or unique prefix) with its latest verification."""
    from ..backup import catalog

    store = store_of(request)
    with not_found():
        row = catalog.get_backup(store, backup_id)
    return shown(who, catalog.as_dict(row, catalog.latest_verifications(store).get(row.id)))



# -- restores, objectives, the oplog archive, drills ----------------------------------------------

RestoreId = Annotated[int, Path(ge=1, le=MAX_ID, description="Restore id (`restore run` prints it).")]
DbName = Annotated[Optional[str], Query(min_length=1, max_length=200, description="The application database "
                                        "(default: FLUXA_DB, config.yaml's db, else fluxa).")]


def app_db(db: Optional[str]) -> str:
    """The application database as the CLI's `rpo status` finds it: the query's, FLUXA_DB, config.yaml's, fluxa."""
    import os

    from ..config import DEFAULT_DB, load_config_file

    return db or os.environ.get("FLUXA_DB") or load_config_file().get("db") or DEFAULT_DB


@router.get("/restores", tags=["backups"])
def list_restores(request: Request,
                  backup: Optional[str] = Query(None, min_length=1, max_length=64, description="Only restores of "
                                                "this backup (its full id)."),
                  target_db: Optional[str] = Query(None, min_length=1, max_length=200, description="Only restores "
                                                   "into this database."),
                  limit: int = Query(50, ge=1, le=1000, description="At most this many, newest first."),
                  who: Principal = Depends(viewer)):
    """Restores into separate databases (`restore run`), newest first: backup, source and target
    database, collections, filter, status, times, the point in time of a point-in-time restore."""
    from ..restore.runs import list_restores as rows

    return shown(who, rows(store_of(request), backup=backup, target_db=target_db, limit=limit))


@router.get("/restores/{restore_id}", tags=["backups"])
def show_restore(request: Request, restore_id: RestoreId, who: Principal = Depends(viewer)):
    """One restore with its per-collection progress and, for a point-in-time restore, its replay."""
    from ..restore.runs import get_restore

    with not_found():
        return shown(who, get_restore(store_of(request), restore_id))


@router.get("/rpo", tags=["backups"])
def rpo(request: Request, db: DbName = None, who: Principal = Depends(viewer)):
    """RPO per data class: the age of the newest recoverable point against its RPO, and the oplog
    archive's gaps (`rpo status --json`: the same `breached`, `data_classes`, `oplog_gaps`)."""
    from ..backup.archive_catalog import coverage
    from ..backup.objectives import rpo_status

    store, name = store_of(request), app_db(db)
    rows = rpo_status(store, incidents_of(request).policy, name)
    _, gaps = coverage(store)
    return shown(who, {"db": name, "breached": any(r["status"] == "breached" for r in rows), "data_classes": rows,
                       "oplog_gaps": gaps})


@router.get("/rto", tags=["backups"])
def rto(request: Request, db: Optional[str] = Query(None, min_length=1, max_length=200, description="Only restore "
                                                      "times measured on backups of this database."),
        who: Principal = Depends(viewer)):
    """RTO per data class: the restore time the latest verification drill measured against its RTO
    (`rto status --json`; a class never measured is `unmeasured`)."""
    from ..backup.objectives import rto_status

    rows = rto_status(store_of(request), incidents_of(request).policy, db)
    return shown(who, {"breached": any(r["status"] == "breached" for r in rows), "data_classes": rows})


@router.get("/archive/coverage", tags=["backups"])
def archive_coverage(request: Request, who: Principal = Depends(viewer)):
    """The oplog archive's windows of continuous coverage and the gaps between them, from the
    catalog (`backup oplog-status --json` without the live server's check and without `--deep`):
    no point in time inside a gap can be restored."""
    from ..backup.archive_catalog import caught_up, coverage

    store = store_of(request)
    windows, gaps = coverage(store)
    proofs = caught_up(store)
    return shown(who, {"windows": [{**w.as_dict(), "caught_up_at": proofs.get(w.last)} for w in windows],
                       "gaps": gaps, "broken": bool(gaps)})


@router.get("/drills", tags=["drills"])
def list_drills(who: Principal = Depends(viewer)):
    """The drills run on this machine, newest first, from what they keep under $FLUXA_HOME/drills:
    a passed run's postmortem (scenario, database, time, its incident), a latest run that did not
    pass by its fault manifest. No POST: a drill runs for minutes - run `fluxa-integrity drill`."""
    from ..drill.kept import kept_drills

    return shown(who, kept_drills())

# -- recovery plans -----------------------------------------------------------------------------

@router.get("/recovery/plans", tags=["recovery"])
def list_plans(request: Request, db: Optional[str] = Query(None, description="Only plans for this database."),
               limit: int = Query(50, ge=1, le=1000, description="At most this many plans, newest first."),
               who: Principal = Depends(viewer)):
    """Recovery plans, newest first (`recover list`)."""
    from ..recovery.engine import list_plans as rows

    return shown(who, rows(store_of(request), db, limit))


@router.get("/recovery/plans/{plan_id}", tags=["recovery"])
def show_plan(request: Request, plan_id: str, who: Principal = Depends(viewer)):
    """A saved plan: status, params, counts, results (`recover show` without its live dry run)."""
    from ..recovery.plans_store import get_row

    with not_found():
        return shown(who, get_row(store_of(request), plan_id))


# -- jobs ---------------------------------------------------------------------------------------

@router.get("/jobs", tags=["jobs"])
def list_jobs(request: Request, who: Principal = Depends(viewer)):
    """The policy's jobs with their cadence and last finished run (`jobs list`, without next runs)."""
    from ..service import history
    from ..service.jobs import job_definitions

    last = history.latest_finished_by_job(store_of(request))
    return shown(who, [{"job": j.name, "title": j.title, "cadence": j.cadence,
                        "interval_seconds": None if j.continuous else j.interval.total_seconds(),
                        "last": history.as_dict(last[j.name]) if j.name in last else None}
                       for j in job_definitions(incidents_of(request).policy)])


@router.get("/jobs/runs", tags=["jobs"])
def list_job_runs(request: Request, job: Optional[str] = Query(None, description="Only runs of this job."),
                  limit: int = Query(50, ge=1, le=1000, description="At most this many runs, newest first."),
                  who: Principal = Depends(viewer)):
    """The service's job history (`jobs show JOB`)."""
    from ..service import history

    return shown(who, [history.as_dict(r) for r in history.runs(store_of(request), job, limit)])
