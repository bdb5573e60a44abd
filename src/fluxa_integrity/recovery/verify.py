"""Verifying an applied plan: the rules whose findings it should close run again, the way the
detection ran them, and the result goes to the state store and the incident's timeline.

The plan's ``verify`` rule ids are evaluated by the check runner (checks/runner.run_checks with
``RunOptions(rules=..., collections=<the collections holding those rules>, keep_ids=True)``): a
full pass over those collections, not an incremental one, so the run may close findings - it is
recorded like any check run (checks/history.record_run): a finding of those rules the run no
longer sees is closed, one it still sees stays open. (Evaluating only the plan's documents would
miss what they cause elsewhere: a hard-deleted parent shows up as its children's dangling
references, which the plan never touches.)

Shape: ``VerifyResult(closed, still_open, rules, run, ...)``; ``closed`` is True when none of the
rules finds anything on those collections; ``still_open`` lists each remaining finding (rule,
variant, collection, count, message) with ``on_plan_documents``: how many of its documents the
plan changed. A plan with no ``verify`` rules is closed with nothing run, and says so.

The URI the check runner connects with is the face's (``uri``: the CLI's resolved --uri, the
drill's); a caller without one gets the client's public address (no credentials).

Failure behaviour: a plan not applied yet is refused; the run's own errors (unknown rule, server
unreachable) are FluxaErrors from the runner and change no finding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from pymongo.database import Database

from ..checks.history import record_run
from ..checks.runner import RunOptions, run_checks
from ..errors import FluxaError
from ..store import Store
from .live import id_key
from .plans_store import get_row, load, merge_result
from .record import record, record_pending

UTC = timezone.utc


@dataclass
class VerifyResult:
    plan_id: str
    closed: bool
    rules: list[str]
    collections: list[str]
    still_open: list[dict] = field(default_factory=list)
    run: dict = field(default_factory=dict)  # the check run: id, opened/closed counts, seconds
    note: str = ""
    incident_id: int | None = None
    timeline: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def uri_of(client) -> str:
    """Where a verify connects when the face gave no URI: the client's address (public pymongo
    API), with no credentials or TLS options - right for a dev server; a face connected with
    credentials passes ``uri`` (the CLI and the drill do)."""
    h, p = client.address
    return f"mongodb://{h}:{p}/?directConnection=true"


def verify_plan(db: Database, store: Store, incidents, policy, plan_id: str, *, uri: str | None = None,
                actor: str | None = None, workers: int = 1) -> VerifyResult:
    """``uri``: the URI the face resolved and connected ``db`` with (the check runner connects per
    pass, maybe in worker processes); without it, ``db.client``'s address (uri_of)."""
    record_pending(store, incidents, plan_id)  # an apply killed after its status, before its timeline entry
    row = get_row(store, plan_id)
    if row["status"] not in ("applied",):
        raise FluxaError(f"recovery plan {plan_id} is {row['status']}: only an applied plan is verified",
                         f"apply it first: `fluxa-integrity recover apply {plan_id} --incident ID --apply`"
                         if row["status"] in ("planned", "applying", "failed") else None)
    if row["database"] != db.name:
        raise FluxaError(f"recovery plan {plan_id} is for database {row['database']!r}, not {db.name!r}",
                         f"verify it with --db {row['database']}")
    plan = load(store, plan_id).plan
    rules = list(plan.verify)
    incident = row["incident_id"]
    if not rules:
        res = VerifyResult(plan_id, True, [], [], note="the plan names no rule to verify: nothing was run",
                           incident_id=incident)
    else:
        colls = sorted({name for name, r in policy.iter_rules() if r.id in rules})
        report = run_checks(uri or uri_of(db.client), db.name, policy,
                            RunOptions(rules=rules, collections=colls or None, keep_ids=True, workers=workers))
        run = record_run(store, report)
        touched = {(ch.collection, id_key(ch.id)) for ch in plan.changes}
        still = []
        for f in report.findings:
            if f.rule_id in rules:
                on_plan = sum(1 for _id in (f.ids or []) if (f.collection, id_key(_id)) in touched)
                still.append({"rule_id": f.rule_id, "variant": f.variant, "collection": f.collection,
                              "count": f.count, "message": f.message, "on_plan_documents": on_plan})
        res = VerifyResult(plan_id, not still, rules, report.collections, still,
                           {"id": run.get("run_id"), "closed": run["closed"], "opened": run["opened"],
                            "seen_again": run["seen_again"] + run["reopened"], "seconds": round(report.seconds, 3),
                            "warnings": report.warnings}, incident_id=incident)
    counts = {f["collection"] + ":" + f["rule_id"]: {f["variant"]: f["count"]} for f in res.still_open}
    summary = (f"verify of {plan.recipe} plan {plan_id}: " + ("closed" if res.closed else "still open")
               + (f" ({', '.join(rules)})" if rules else f" ({res.note})")
               + (f"; {res.run['closed']} finding(s) closed" if res.run else ""))
    res.timeline = record(incidents, incident, "verify", plan_id, summary, counts,
                          "closed" if res.closed else "still-open", actor)
    merge_result(store, plan_id, "verify", {"closed": res.closed, "still_open": res.still_open, "run": res.run},
                 verified_at=datetime.now(UTC))
    return res
