"""Checklist actions that run the real thing (issue 9, item 22), installed into the action
registry when incidents is imported, like evidence.py:

- ``verify_backups`` runs `backup verify` on the backups linked to the incident (``incident link
  --backup``), else on the newest restorable full backup of its database (``--param backup=ID``
  picks one): restore into a scratch database, compare with the manifest, run the checks, drop it.
  Done when every verdict is pass; failed (the item stays open) otherwise.
- ``run_checks`` runs the policy's checks on the incident's database and records the run, as
  `check run` does; the result names the run, its open findings (``finding_ids``), the ones
  free to attach (``to_attach``, in the suggested `incident attach` command) and those already on
  another live incident (``on_other_incidents``: attach would refuse them; merge instead).
- ``enhanced_monitoring`` is outside the tool: actions.py marks it manual (tick it with --done).

The application database comes from the action's ``uri``/``db`` parameters, else the incident's
database and the usual resolution (--uri, env, config, dev server). Failure: a FluxaError from the
backup or check code (no backup, server down) propagates: the item stays open and nothing is
recorded as done.
"""

from __future__ import annotations

from pymongo.errors import PyMongoError
from sqlalchemy import select

from ..backup.catalog import list_backups
from ..checks.history import record_run
from ..checks.runner import run_checks
from ..config import resolve_target
from ..errors import FluxaError
from ..restore.verification import verify_backup
from ..store.incident_models import IncidentFinding
from ..store.models import Finding
from . import intake
from .actions import ActionContext, register_action

RESTORABLE = ("complete", "verified")


def _target(ctx: ActionContext):
    return resolve_target(ctx.params.get("uri"), ctx.params.get("db") or ctx.incident.database)


def verify_backups(ctx: ActionContext) -> dict:
    target = _target(ctx)
    ids = [ctx.params["backup"]] if ctx.params.get("backup") else list(ctx.incident.backup_ids or [])
    if not ids:
        latest = next((b for b in list_backups(ctx.store, target.db, kind="full") if b.status in RESTORABLE), None)
        if latest is None:
            raise FluxaError(f"no restorable full backup of {target.db!r} to verify",
                             "take one (`fluxa-integrity backup run`) or pass --param backup=ID")
        ids = [latest.id]
    reports = [verify_backup(target.uri, ctx.store, bid, ctx.policy) for bid in ids]
    verdicts = {r["backup_id"]: r["verdict"] for r in reports}
    problems = [f"{r['backup_id']}: {p}" for r in reports for p in r.get("problems", [])]
    ok = all(v == "pass" for v in verdicts.values())
    return {"status": "done" if ok else "failed", "verdicts": verdicts, "problems": problems[:20],
            "message": "every backup verified" if ok else f"{sum(v != 'pass' for v in verdicts.values())} "
                       "backup(s) failed verification"}


def checks(ctx: ActionContext) -> dict:
    target = _target(ctx)
    try:
        report = run_checks(target.uri, target.db, ctx.policy)
    except PyMongoError as exc:
        raise FluxaError(f"run_checks on {target.db!r} failed: {str(exc).splitlines()[0][:200]}",
                         "check the server and run the item again") from exc
    run_id = record_run(ctx.store, report)["run_id"]
    with ctx.store.session() as s:
        ids = list(s.scalars(select(Finding.id).where(Finding.last_run_id == run_id, Finding.status == "open")
                             .order_by(Finding.id)))
        # a finding on another live incident would be refused by attach: say where it is instead
        elsewhere = {i: o for i in ids if (o := intake.incident_of(s, i, exclude=ctx.incident.id)) is not None}
        mine = set(_linked_ids(s, ctx.incident.id))
    free = [i for i in ids if i not in elsewhere and i not in mine]
    message = f"run {run_id}: {len(report.findings)} findings"
    if free:
        message += (f"; attach them: `fluxa-integrity incident attach {ctx.incident.id} "
                    + " ".join(f"--finding {i}" for i in free[:5]) + "`")
    if elsewhere:
        message += "; already on other incidents: " + ", ".join(f"{i} (incident {o})" for i, o in elsewhere.items())
    return {"status": "done", "database": target.db, "run_id": run_id, "findings": len(report.findings),
            "finding_ids": ids, "to_attach": free, "on_other_incidents": elsewhere,
            "rules": sorted({f.rule_id for f in report.findings}), "message": message}


def _linked_ids(s, incident_id: int) -> list[int]:
    """The findings already linked to this incident."""
    return list(s.scalars(select(IncidentFinding.finding_id).where(IncidentFinding.incident_id == incident_id)))


register_action("verify_backups", verify_backups)
register_action("run_checks", checks)
