"""Recovery plans in the web: API routes and the console's plan pages over recovery/engine.py -
the functions `recover plan|show|apply|verify|undo` and `restore promote|undo` call, never a
second implementation.

Roles: a viewer reads plans and their live dry run (emails masked, as every viewer response);
a responder also makes plans (or dry-runs a recipe without saving) and runs a plan's verify
(a check run: it reads the application database, writes only the state store); an admin
approves, applies, undoes and promotes. The live database is resolved as the CLI resolves it
(config.resolve_target: ``FLUXA_MONGODB_URI``, ``config.yaml``, the dev server) for the plan's own
database, once per URI for the app's life (``app.state.recovery_clients``).

Destructive actions (apply, undo, promote with ``apply``) need ``incident`` - an incident that
exists (404 otherwise) and is live (409 when resolved or closed, as `incident require_open` says)
- and ``confirm``: the plan id typed back (for a promotion: the live database's name); a
mismatch is a 400. Everything is checked before anything is written, in this order: role,
body, plan, confirmation, incident, plan status. Double submission: an apply of a plan that is
applied (no ``force_ids``), undoing or undone is a 409; an apply while another apply, undo or
promotion holds the database's PlanLock (recovery/lock.py: also a second request of this
server, flock is per open file) is a 409 naming the holder; the status is read again under the
lock, so two requests never both write. An applying/failed plan whose lock is free was
interrupted: applying it again resumes it (the engine's rule: nothing written twice).

The actor on the timeline is the token's name (the CLI's ``--by``): the engine's change-set
entry (``recipe``, ``verify``, ``recipe-undo``) and the approval (a status move to recovering with
a note, as the drill records its approval, or a note when the incident cannot move).

The console pages (/plans, /plans/ID) render the same route functions' results; their forms use
the console's session and CSRF check (console.py) and call the API functions below.
"""

from __future__ import annotations

import json
from typing import Optional
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ..access.tokens import Principal
from ..errors import FluxaError
from . import console, reading
from .auth import require
from .errors import ApiError, not_found, refused
from .pages import page, when
from .shown import jsonable, shown

router = APIRouter(prefix="/api/recovery", tags=["recovery"])
pages = APIRouter(include_in_schema=False)
viewer, responder, admin = require("viewer"), require("responder"), require("admin")
FINISHED = ("undoing", "undone")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanBody(Body):
    recipe: str = Field(..., description="A recipe name (GET /api/recovery/recipes).")
    params: dict = Field(default_factory=dict, description="The recipe's options, `--x-y` as x_y or x-y.")
    db: Optional[str] = Field(None, description="The application database (default: the configured one).")
    save: bool = Field(True, description="Save the plan (false: a dry run of the recipe that leaves no plan).")
    samples: int = Field(5, ge=0, le=100, description="Changes shown per collection and change kind.")


class ApproveBody(Body):
    incident: int = Field(..., description="The live incident the plan's apply will be tied to.")
    confirm: str = Field(..., description="The plan id, typed back.")


class ApplyBody(Body):
    incident: int = Field(..., description="The live incident authorising the write; gets the change set.")
    confirm: str = Field(..., description="The plan id, typed back.")
    force_ids: list[str] = Field(default_factory=list, description="Conflicting _ids to write anyway (as "
                                 "`recover apply --force-id`).")
    verify: bool = Field(True, description="Run the plan's checks again after an apply that left no conflict.")


class UndoBody(Body):
    incident: int = Field(..., description="The live incident authorising the undo; gets the undo's entry.")
    confirm: str = Field(..., description="The plan id, typed back.")
    force: bool = Field(False, description="Also put back documents changed since the apply (kept in the journal).")


class PromoteBody(Body):
    from_db: str = Field(..., description="The restored copy to bring data back from (`restore run --to-db`).")
    collections: list[str] = Field(..., min_length=1)
    ids: Optional[list] = Field(None, description="Only these _ids (Extended JSON values).")
    db: Optional[str] = Field(None, description="The live database (default: the configured one).")
    apply: bool = Field(False, description="Write (admin). Without it: the dry run (responder).")
    incident: Optional[int] = Field(None, description="With apply: the live incident authorising it.")
    confirm: Optional[str] = Field(None, description="With apply: the live database's name, typed back.")
    samples: int = Field(3, ge=0, le=100)


# -- the live database, resolved as the CLI resolves it ------------------------------------------

def _target(database: str | None):
    from ..config import resolve_target

    with refused(503):
        return resolve_target(None, database)


def live_db(request: Request, database: str | None):
    """(the live Database, the URI it was reached with): one client per URI for the app's life."""
    from ..mongo.connection import connect

    target = _target(database)
    clients = _clients(request)
    if target.uri not in clients:
        with refused(503):
            clients[target.uri] = connect(target.uri)
    return clients[target.uri][target.db], target.uri


def _clients(request: Request) -> dict:
    try:
        return request.app.state.recovery_clients
    except AttributeError:
        request.app.state.recovery_clients = {}
        return request.app.state.recovery_clients


def _row(request: Request, plan_id: str) -> dict:
    from ..recovery.plans_store import get_row

    with not_found():
        return get_row(reading.store_of(request), plan_id)


def _confirmed(confirm: str | None, expected: str, what: str) -> None:
    if (confirm or "").strip() != expected:
        raise ApiError(400, f"the confirmation does not match: type {what} {expected!r} in confirm",
                       "a destructive action needs its target typed back; nothing was written")


def _live_incident(request: Request, incident_id: int) -> dict:
    """The incident, existing (404) and live (409): checked before anything is written."""
    api = reading.incidents_of(request)
    with not_found():
        api.get(incident_id)
    with refused(409):
        return api.require_open(incident_id)


def _apply_refusal(row: dict, force_ids) -> ApiError | None:
    pid, status = row["id"], row["status"]
    if status == "applied" and not force_ids:
        return ApiError(409, f"recovery plan {pid} is already applied (by {row['actor'] or '?'}, "
                        f"{when(row['applied_at'])}, incident {row['incident_id']}): nothing was written again",
                        "reload the plan to see its result; undo it first or make a new plan; force_ids writes a "
                        "conflict the apply skipped")
    if status in FINISHED:
        return ApiError(409, f"recovery plan {pid} is {status}: its journal belongs to the undo",
                        "make a new plan (POST /api/recovery/plans)")
    return None


# -- API: read (viewer) ----------------------------------------------------------------------------

@router.get("/recipes")
def list_recipes(who: Principal = Depends(viewer)):
    """The recipes a plan is made with, their playbook feature and options (`recover recipes`)."""
    from ..recovery.registry import recipes

    return [{"name": s.name, "feature": s.feature, "summary": s.summary,
             "params": [{"name": p.name, "type": p.type.__name__, "multiple": p.multiple, "required": p.required,
                         "default": jsonable(p.default), "help": p.help} for p in s.params]}
            for s in sorted(recipes().values(), key=lambda s: s.name)]


def plan_view(request: Request, plan_id: str, samples: int = 5) -> tuple[dict, object, object]:
    """The plan row, the loaded plan and its dry run against the live data now (`recover show`)."""
    from ..recovery import engine

    row = _row(request, plan_id)
    with refused(400):
        plan = engine.load_plan(reading.store_of(request), plan_id)
    db, _ = live_db(request, row["database"])
    dry = engine.dry_run(db, plan, samples=samples)
    return row, plan, dry


@router.get("/plans/{plan_id}/dry-run")
def show_dry_run(request: Request, plan_id: str, samples: int = Query(5, ge=0, le=100, description="Changes "
                 "shown per collection and change kind."), who: Principal = Depends(viewer)):
    """A saved plan with its dry run against the live data now: planned counts per collection and
    kind, the state of each change (to write, already done, conflict), samples with field-level
    before -> after, conflicts with what changed in live (`recover show --json`). Reads only."""
    row, _, dry = plan_view(request, plan_id, samples)
    return shown(who, {"plan": row, "dry_run": dry.as_dict()})


# -- API: plan (responder) -------------------------------------------------------------------------

@router.post("/plans", status_code=201)
def make_plan(request: Request, body: PlanBody, who: Principal = Depends(responder)):
    """Make a plan with a recipe and return its dry run (`recover plan RECIPE`); nothing is written
    to the application database. ``save: false`` builds and dry-runs without saving a plan."""
    from datetime import datetime, timezone

    from ..recovery import engine
    from ..recovery.model import RecipeContext

    db, _ = live_db(request, body.db)
    ctx = RecipeContext(db=db, policy=reading.incidents_of(request).policy, store=reading.store_of(request),
                        now=datetime.now(timezone.utc))
    with refused(400):
        plan = (engine.make_plan(ctx, body.recipe, body.params, actor=who.name) if body.save
                else engine.build_plan(ctx, body.recipe, body.params))
    dry = engine.dry_run(db, plan, samples=body.samples)
    return shown(who, {"plan_id": plan.id if body.save else None, "saved": body.save, **dry.as_dict()})


@router.post("/plans/{plan_id}/verify")
def verify(request: Request, plan_id: str, who: Principal = Depends(responder)):
    """Run again the checks an applied plan should close; the result goes on the incident's
    timeline (`recover verify`). ``closed`` false: still open."""
    from ..recovery import engine

    row = _row(request, plan_id)
    db, uri = live_db(request, row["database"])
    api = reading.incidents_of(request)
    with refused(409):
        return shown(who, engine.verify_plan(db, reading.store_of(request), api, api.policy, plan_id, uri=uri,
                                             actor=who.name).as_dict())


# -- API: approve, apply, undo, promote (admin) ----------------------------------------------------

@router.post("/plans/{plan_id}/approve")
def approve(request: Request, plan_id: str, body: ApproveBody, who: Principal = Depends(admin)):
    """Approve a plan for apply under an incident: recorded on its timeline with the plan's counts
    and changes' sha256 (the incident moves to recovering when it can, as drills record it).
    Writes nothing to the application database."""
    from ..recovery.record import counts_text

    row = _row(request, plan_id)
    _confirmed(body.confirm, plan_id, "the plan id")
    inc = _live_incident(request, body.incident)
    refusal = _apply_refusal(row, ())
    if refusal:
        raise refusal
    text = (f"recovery plan {plan_id} ({row['recipe']} on {row['database']}) approved for apply: "
            f"{counts_text(row['counts'] or {})}; changes sha256 {row['changes_sha256'][:16]}")
    api = reading.incidents_of(request)
    with refused(409):
        if inc["status"] in ("acknowledged", "investigating"):
            out = api.set_status(body.incident, "recovering", note=text, actor=who.name)
        else:
            out = api.note(body.incident, text, actor=who.name)
    return shown(who, {"plan_id": plan_id, "approved": True, "incident": out["id"], "status": out["status"],
                       "note": text})


@router.post("/plans/{plan_id}/apply")
def apply(request: Request, plan_id: str, body: ApplyBody, who: Principal = Depends(admin)):
    """Apply a plan to the live database under an incident (`recover apply --incident ID --apply`):
    journaled before each batch, conflicts skipped unless in ``force_ids``, the change set on the
    incident's timeline with the token's name; then the plan's verify. 409 when it is already
    applied or another writer is at work (nothing written twice)."""
    from ..recovery import engine
    from ..recovery.lock import plan_databases, plan_locks
    from ..recovery.plans_store import get_row

    row = _row(request, plan_id)
    _confirmed(body.confirm, plan_id, "the plan id")
    _live_incident(request, body.incident)
    refusal = _apply_refusal(row, body.force_ids)
    if refusal:
        raise refusal
    db, uri = live_db(request, row["database"])
    store, api = reading.store_of(request), reading.incidents_of(request)
    try:
        with plan_locks(plan_databases(db.name, (row["counts"] or {}).keys())):
            refusal = _apply_refusal(get_row(store, plan_id), body.force_ids)  # again, under the lock
            if refusal:
                raise refusal
            res = engine.apply_plan(db, store, api, plan_id, body.incident, actor=who.name,
                                    force_ids=list(body.force_ids), hold_lock=False)
    except FluxaError as exc:
        now = get_row(store, plan_id)["status"]
        if now == "failed":  # interrupted mid-way: on the record as partial or failed, resumable
            raise ApiError(502, exc.message, exc.hint) from exc
        status = 409 if "another recovery apply" in exc.message else 400
        raise ApiError(status, exc.message, exc.hint) from exc
    ver = None
    if body.verify and not res.conflicts:
        with refused(400):
            ver = engine.verify_plan(db, store, api, api.policy, plan_id, uri=uri, actor=who.name)
    return shown(who, {"apply": res.as_dict(), "verify": ver.as_dict() if ver is not None else None})


@router.post("/plans/{plan_id}/undo")
def undo(request: Request, plan_id: str, body: UndoBody, who: Principal = Depends(admin)):
    """Put back exactly what an applied plan changed (`recover undo --incident ID`; a promotion:
    `restore undo`). 409 when it was never applied or is already undone."""
    from ..recovery import engine
    from ..restore.promote import RECIPE as PROMOTION, undo_promotion

    row = _row(request, plan_id)
    _confirmed(body.confirm, plan_id, "the plan id")
    _live_incident(request, body.incident)
    if row["status"] in ("planned", "undone"):
        raise ApiError(409, f"recovery plan {plan_id} is {row['status']}: there is nothing to undo",
                       "nothing was written" + ("; make a new plan to apply again" if row["status"] == "undone" else ""))
    db, _ = live_db(request, row["database"])
    store, api = reading.store_of(request), reading.incidents_of(request)
    try:
        if row["recipe"] == PROMOTION:  # supersede mode: newer writes are kept, as --force would
            res = undo_promotion(store, api, db.client, plan_id, incident_id=body.incident, actor=who.name)
        else:
            res = engine.undo_plan(db, store, api, plan_id, incident_id=body.incident, force=body.force,
                                   actor=who.name)
    except FluxaError as exc:
        status = 409 if ("another recovery apply" in exc.message or "already undone" in exc.message
                         or "changed in live since" in exc.message) else 400
        raise ApiError(status, exc.message, exc.hint) from exc
    return shown(who, res.as_dict())


@router.post("/promote")
def promote(request: Request, body: PromoteBody, who: Principal = Depends(responder)):
    """Bring collections or documents back from a restored copy (`restore promote`): without
    ``apply`` the dry run (responder); with it (admin, ``incident`` and ``confirm`` = the live
    database's name) a restore-and-promote plan made and applied at once, newer live writes kept
    in its journal. The plan id is the promotion id (undo it with POST .../plans/ID/undo)."""
    from ..restore.promote import preview, promote as run_promotion

    db, _ = live_db(request, body.db)
    if body.from_db == db.name:
        raise ApiError(400, "from_db is the live database", "promote from the database `restore run --to-db` made")
    store, api = reading.store_of(request), reading.incidents_of(request)
    if not body.apply:
        with refused(400):
            dry, resumes = preview(store, db, body.from_db, body.collections, body.ids, api.policy, body.samples)
        return shown(who, {"dry_run": True, "live_db": db.name, "resumes": resumes, **dry.as_dict()})
    if not who.may("admin"):
        raise ApiError(403, f"applying a promotion needs the admin role; token {who.token_id} ({who.name}) is "
                       f"{who.role}", "a responder may dry-run it (apply: false); ask an admin")
    if body.incident is None:
        raise ApiError(400, "a promotion writes to the live database: it needs incident", "add incident: ID")
    _confirmed(body.confirm, db.name, "the live database's name")
    _live_incident(request, body.incident)
    try:
        res = run_promotion(store, api, db, body.from_db, body.collections, body.ids, api.policy,
                            incident_id=body.incident, actor=who.name)
    except FluxaError as exc:
        raise ApiError(409 if "another recovery apply" in exc.message or "unfinished" in exc.message else 400,
                       exc.message, exc.hint) from exc
    return shown(who, {"dry_run": False, "promotion_id": res.plan_id, **res.as_dict()})


# -- the console: plan pages -----------------------------------------------------------------------

def _text(value) -> str:
    """A BSON value as a responder reads it: strings bare, an ObjectId as its hex, a date as
    ISO 8601 UTC to the millisecond (BSON's precision), the rest relaxed Extended JSON."""
    from datetime import datetime, timezone

    from bson import ObjectId

    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        t = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    v = jsonable(value)
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _changed(key: str, fields) -> bool:
    return any(f == key or f.startswith(key + ".") for f in fields)


def _documents(who: Principal, plan, dry) -> list[dict]:
    """Each sampled change as its whole before and after images, field by field, the changed
    fields marked (the dry run's field diff) - masked for the caller."""
    from ..recovery.live import id_key

    by_key = {(c.collection, id_key(c.id)): c for c in plan.changes}
    out = []
    for s in dry.samples:
        ch = by_key.get((s["collection"], id_key(s["id"])))
        if ch is None:
            continue
        before, after, fields = ch.before or {}, ch.after or {}, list(s["fields"])
        keys = [*before.keys(), *(k for k in after.keys() if k not in before)]
        rows = [{"field": k, "before": _text(before[k]) if k in before else None,
                 "after": _text(after[k]) if k in after else None, "changed": _changed(k, fields)} for k in keys]
        out.append({"collection": ch.collection, "op": ch.op, "id": _text(ch.id), "reason": ch.reason,
                    "data_class": ch.data_class, "fields": fields, "rows": rows})
    return shown(who, out)


def _conflicts(who: Principal, dry, status: str) -> list[dict]:
    """The dry run's conflicts, each with why in words and its fields (plan read -> live now;
    None: absent)."""
    out = []
    for c in dry.conflicts:
        if status in ("applied", "undoing"):
            why = ("changed in live after the apply wrote it: undo refuses to overwrite it unless forced (the newer "
                   "document is then kept in the plan's journal)")
        elif c.get("held"):
            why = f"held by the recipe: {c['held']}"
        elif c["op"] == "insert":
            why = "its _id is taken in live by a different document: inserting would overwrite it"
        elif not c["live_exists"]:
            why = "deleted in live since the plan read it"
        else:
            why = "changed in live since the plan read it: applying would overwrite that newer write"
        out.append({"collection": c["collection"], "op": c["op"], "id": _text(c["id"]), "why": why,
                    "fields": [{"field": k, "planned": None if v[0] is None else _text(v[0]),
                                "live": None if v[1] is None else _text(v[1])}
                               for k, v in c["fields"].items()]})
    return shown(who, out)


def _history(who: Principal, request: Request, row: dict, incident_id: int | None) -> list[dict]:
    """The incident's timeline entries about this plan (approval, change set, verify, undo),
    oldest first."""
    if not incident_id:
        return []
    try:
        entries = reading.incidents_of(request).timeline(int(incident_id))
    except FluxaError:
        return []
    return shown(who, [e for e in entries if row["id"] in json.dumps(jsonable(e["data"]))])


@pages.get("/plans")
def plans_page(request: Request, incident: Optional[int] = None):
    who, csrf = console.session(request)
    rows = reading.list_plans(request, None, 200, who)
    if incident is not None:
        rows = [r for r in rows if r.get("incident_id") == incident or r.get("status") == "planned"]
    return page("plans.html", who=who, csrf=csrf, plans=rows, incident=incident)


@pages.get("/plans/{plan_id}")
def plan_page(request: Request, plan_id: str, incident: Optional[int] = None, flash: Optional[str] = None,
              kind: str = "ok"):
    who, csrf = console.session(request)
    return _plan_page(request, who, csrf, plan_id, incident,
                      {"kind": kind if kind in ("ok", "error") else "ok", "text": flash} if flash else None)


def _plan_page(request: Request, who: Principal, csrf: str, plan_id: str, incident: int | None,
               flash: dict | None, status: int = 200, hint: str | None = None):
    try:
        row, plan, dry = plan_view(request, plan_id)
    except ApiError as exc:
        return page("message.html", exc.status, who=who, csrf=csrf, title="Refused", message=exc.message,
                    hint=exc.hint)
    if flash is not None and hint:
        flash["hint"] = hint
    live = reading.list_incidents(request, "live", who) if who.may("admin") else []
    chosen = incident or row.get("incident_id")
    from bson import json_util

    params = shown(who, {k: _text(json_util.loads(json.dumps(v))) for k, v in (row.get("params") or {}).items()})
    return page("plan.html", status, who=who, csrf=csrf, row=shown(who, row), params=params, dry=shown(who, dry.as_dict()),
                docs=_documents(who, plan, dry), conflicts=_conflicts(who, dry, row["status"]),
                history=_history(who, request, row, chosen), history_incident=chosen,
                live=live, chosen=chosen, flash=flash, can_apply=who.may("admin"), can_verify=who.may("responder"),
                result=shown(who, row.get("result") or {}))


async def _plan_action(request: Request, plan_id: str, role: str, action):
    """A plan form: session and CSRF (console.checked), the role, then the API's own function;
    back to the plan page with the outcome, or the refusal on it with its status."""
    who, data = await console.checked(request)
    csrf = data["csrf"]
    if not who.may(role):
        return page("message.html", 403, who=who, csrf=csrf, title="Refused",
                    message=f"this needs the {role} role; token {who.token_id} ({who.name}) is {who.role}",
                    hint="ask an admin for a token with that role")
    incident = data.get("incident", "").strip()
    try:
        iid = int(incident) if incident else None
    except ValueError:
        iid = None
    try:
        # off the event loop: an apply or a verify takes as long as the plan, and the rest of the
        # console (and the API) keeps answering meanwhile
        text = await run_in_threadpool(action, who, data, iid)
    except ApiError as exc:
        return _plan_page(request, who, csrf, plan_id, iid, {"kind": "error", "text": exc.message}, exc.status,
                          exc.hint)
    return RedirectResponse(f"/plans/{quote(plan_id)}?flash={quote(text)}", status_code=303)


def _need_incident(iid: int | None) -> int:
    if iid is None:
        raise ApiError(400, "choose the live incident this write is tied to", "nothing was written")
    return iid


@pages.post("/plans/{plan_id}/apply")
async def apply_form(request: Request, plan_id: str):
    """Approve and apply in one form: the approval goes on the timeline only once every check of
    the apply has passed, then the apply and its verify."""
    def run(who, data, iid):
        iid = _need_incident(iid)
        row = _row(request, plan_id)
        _confirmed(data.get("confirm"), plan_id, "the plan id")
        _live_incident(request, iid)
        refusal = _apply_refusal(row, ())
        if refusal:
            raise refusal
        if row["status"] == "planned":
            approve(request, plan_id, ApproveBody(incident=iid, confirm=data.get("confirm", "")), who)
        out = apply(request, plan_id, ApplyBody(incident=iid, confirm=data.get("confirm", "")), who)
        res, ver = out["apply"], out["verify"]
        c = {k: sum(per.get(k, 0) for per in res["counts"].values()) for k in ("written", "already", "conflicts")}
        return (("applied" if res["status"] == "applied" else "applied with conflicts left unwritten")
                + f": {c['written']} written, {c['already']} already done, {c['conflicts']} conflicts skipped"
                + ("" if ver is None else "; verification: closed" if ver["closed"] else "; verification: still open"))

    return await _plan_action(request, plan_id, "admin", run)


@pages.post("/plans/{plan_id}/verify")
async def verify_form(request: Request, plan_id: str):
    def run(who, data, iid):
        out = verify(request, plan_id, who)
        return "verification: closed" if out["closed"] else "verification: still open"

    return await _plan_action(request, plan_id, "responder", run)


@pages.post("/plans/{plan_id}/undo")
async def undo_form(request: Request, plan_id: str):
    def run(who, data, iid):
        out = undo(request, plan_id, UndoBody(incident=_need_incident(iid), confirm=data.get("confirm", "")), who)
        back = sum(c.get("restored", 0) + c.get("deleted", 0) for c in out["counts"].values())
        return f"undone: {back} document(s) put back as before the apply" + ("" if out["finished"] else
                                                                             " (not finished: submit again)")

    return await _plan_action(request, plan_id, "admin", run)
