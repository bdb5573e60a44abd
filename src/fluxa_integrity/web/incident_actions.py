"""Incident actions (responder and up): the same ``Incidents`` methods the `incident` commands call,
with the token's name as the actor (the CLI's ``--by``), so a timeline entry made through the API
is the entry the CLI makes.

Each route checks the incident exists first (404 with the domain's message), then calls the
action: a refusal of the lifecycle (acknowledge twice, close before resolve) is a 409, any other
FluxaError (unknown role, template, checklist item, a placeholder left unfilled) a 400. Bodies are
strict (an unknown field is a 422 naming it), so a typo never passes silently as "not given".
Times are the server's: the CLI's ``--at`` (replaying, drills) has no API equivalent.

Every `incident` command that changes something has its route here: open (report, event and
finding as its ``source``), intake, tick, notify-retry; ack, assign, escalate, note, status,
resolve, close, attach, merge, link, checklist (tick, reassign, or run the item's action), contain,
lift, comms, review and postmortem. Containment and the checklist's containment actions reach the
application database the server is configured with (FLUXA_MONGODB_URI, config.yaml, the dev
server) - a body may name the database, never a URI: a token holder cannot point the server
at another MongoDB. The recovery actions (plans: dry run, approve, apply, verify, undo; restore
promote) are in recovery_routes.py.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..access.tokens import Principal
from ..errors import FluxaError
from .auth import require
from .errors import ApiError, not_found, refused
from .reading import Id, IncidentId, incidents_of
from .shown import shown

_clients_lock = threading.Lock()
router = APIRouter(prefix="/api/incidents", tags=["incident actions"])
responder = require("responder")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenBody(Body):
    title: str = Field(..., min_length=1, description="What is wrong, in a line.")
    collections: list[str] = Field(default_factory=list, description="Affected collections or collection.field.")
    source: Literal["manual", "report", "event", "finding"] = "manual"
    kind: Optional[str] = Field(None, description="Report kind (user, support, internal, alert) or system event.")
    description: str = ""
    findings: list[Id] = Field(default_factory=list, description="Check findings to link.")
    db: Optional[str] = Field(None, description="The application database affected, if known.")
    started_at: Optional[datetime] = Field(None, description="When the problem began, if known.")
    drill: bool = Field(False, description="A drill, not a real incident: its notifications say [DRILL].")


class AssignBody(Body):
    role: str = Field(..., description="A role of the policy.")
    person: str = Field(..., min_length=1, description="Who takes the role.")


class EscalateBody(Body):
    reason: str = Field(..., min_length=1)
    severity: Optional[str] = None
    notify: Optional[str] = Field(None, description="A role on the escalation path.")


class NoteBody(Body):
    text: str = Field(..., min_length=1)


class StatusBody(Body):
    to: str = Field(..., description="investigating, recovering, resolved, ...")
    note: Optional[str] = None
    recovery_point: Optional[datetime] = None


class ResolveBody(Body):
    resolution: Optional[str] = None
    recovery_point: Optional[datetime] = None


class CloseBody(Body):
    duplicate_of: Optional[Id] = Field(None, description="Close it as a duplicate of this incident.")


class AttachBody(Body):
    findings: list[Id] = Field(..., min_length=1)


class LinkBody(Body):
    backups: list[str] = Field(default_factory=list)
    restores: list[str] = Field(default_factory=list)
    recovery_point: Optional[datetime] = None
    started_at: Optional[datetime] = None


class ChecklistBody(Body):
    done: bool = Field(False, description="Tick the item.")
    run: bool = Field(False, description="Carry out the item's action, then tick it (`--run`).")
    owner: Optional[str] = Field(None, description="Reassign the item to a role.")
    note: Optional[str] = None
    params: dict[str, str] = Field(default_factory=dict, description="Action parameters (`--param`): db, "
                                   "features=a,b, collections=a,b; never a URI (the server's own is used).")
    values: dict[str, str] = Field(default_factory=dict, description="Template values for a communication "
                                   "action (`--set`).")


class IntakeBody(Body):
    db: Optional[str] = Field(None, description="Only the last check run on this database.")
    drill: bool = Field(False, description="The incidents it opens are drills.")


class RetryBody(Body):
    incident: Optional[Id] = Field(None, description="Only this incident's notifications (default: all).")


class MergeBody(Body):
    duplicates: list[Id] = Field(..., min_length=1, description="Incidents to close as duplicates of this one.")
    reason: Optional[str] = Field(None, description="Why they are the same (recorded).")


class ContainBody(Body):
    read_only: bool = Field(False, description="Make collections read-only.")
    collections: Optional[list[str]] = Field(None, description="Collections to make read-only (default: the "
                                             "incident's; [\"*\"] for all).")
    pause: list[str] = Field(default_factory=list, description="Features to pause.")
    app_user: Optional[str] = Field(None, description="The application's MongoDB user: its write roles are "
                                    "revoked until lift, where the server manages users.")
    app_user_db: str = Field("admin", description="The database the application user is defined in.")
    db: Optional[str] = Field(None, description="Application database (default: the incident's, then the "
                              "server's configured one).")


class LiftBody(Body):
    read_only: bool = Field(False, description="Lift read-only mode (and give the application user its roles back).")
    features: list[str] = Field(default_factory=list, description="Paused features to resume.")
    db: Optional[str] = Field(None, description="Application database (default: the incident's, then the "
                              "server's configured one).")


class CommsBody(Body):
    values: dict[str, str] = Field(default_factory=dict, description="PLACEHOLDER: value.")
    publish: bool = Field(False, description="Record on the status page and notify (false: render only).")


class ReviewBody(Body):
    root_cause: Optional[str] = None
    factors: list[str] = Field(default_factory=list)
    lessons: list[str] = Field(default_factory=list)
    action_items: list[str] = Field(default_factory=list)


def _existing(request: Request, incident_id: int):
    api = incidents_of(request)
    with not_found():
        api.get(incident_id)
    return api


def _app_db(request: Request, api, incident_id: int, db: str | None):
    """The application database of a containment: ``db`` or the incident's, on the MongoDB the
    server is configured with (resolved as the CLI resolves it without --uri); one client per URI
    for the app's life. Unreachable: 503."""
    from ..config import resolve_target
    from ..mongo.connection import connect

    with refused(503):
        target = resolve_target(None, db or api.get(incident_id)["database"])
        with _clients_lock:
            clients = getattr(request.app.state, "mongo_clients", None)
            if clients is None:
                clients = request.app.state.mongo_clients = {}
            if target.uri not in clients:
                clients[target.uri] = connect(target.uri)
    return clients[target.uri][target.db]


@router.post("", status_code=201)
def open_incident(request: Request, body: OpenBody, who: Principal = Depends(responder)):
    """Open an incident (`incident open`): severity from the policy."""
    api, at_start = incidents_of(request), body.started_at
    with refused(400):
        if body.source == "report":
            inc = api.report(body.kind or "internal", body.title, body.description, body.collections, who.name,
                             None, body.findings, body.db, body.drill)
        elif body.source == "event":
            if not body.kind:
                raise FluxaError("a system event needs kind", "failed_migration, incomplete_import, incomplete_export, "
                              "storage_failure, replication_failure or sync_failure")
            inc = api.system_event(body.kind, body.title, body.description, body.collections, None, body.findings,
                                   body.db, body.drill)
        else:
            if body.source == "finding" and not body.findings:
                raise FluxaError("source finding needs at least one finding id", "pass findings: [ID]")
            inc = api.open(body.title, body.collections, body.source, body.kind, body.description, body.findings,
                           body.db, issue_started_at=at_start, actor=who.name, drill=body.drill)
    return shown(who, inc)


@router.post("/intake")
def intake(request: Request, body: IntakeBody, who: Principal = Depends(responder)):
    """Open or join incidents for the open findings of the last check run (`incident intake`):
    the run, the incidents opened, those the findings joined, the findings already handled."""
    with refused(400):
        return shown(who, incidents_of(request).intake(body.db, None, body.drill))


@router.post("/tick")
def tick(request: Request, who: Principal = Depends(responder)):
    """Evaluate every live incident's clocks now (warnings, breaches, escalation; each once) and
    retry due notifications (`incident tick`; what the service does every minute)."""
    with refused(400):
        return shown(who, incidents_of(request).tick())


@router.post("/notify-retry")
def notify_retry(request: Request, body: RetryBody, who: Principal = Depends(responder)):
    """Deliver every pending notification now (`incident notify-retry`): sent, failed and each
    failure (a delivery that fails again is a 200 saying so, as the CLI's exit 1 does)."""
    api = incidents_of(request)
    if body.incident is not None:
        _existing(request, body.incident)
    with refused(400):
        return shown(who, api.retry_notifications(None, body.incident))


@router.post("/{incident_id}/ack")
def acknowledge(request: Request, incident_id: IncidentId, who: Principal = Depends(responder)):
    """Acknowledge: the response has begun (`incident ack`)."""
    api = _existing(request, incident_id)
    with refused(409):
        return shown(who, api.acknowledge(incident_id, who.name))


@router.post("/{incident_id}/assign")
def assign(request: Request, incident_id: IncidentId, body: AssignBody, who: Principal = Depends(responder)):
    """Assign a person to a role (`incident assign`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.assign(incident_id, body.role, body.person, actor=who.name))


@router.post("/{incident_id}/escalate")
def escalate(request: Request, incident_id: IncidentId, body: EscalateBody, who: Principal = Depends(responder)):
    """Escalate or de-escalate by hand, with a reason (`incident escalate`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.escalate(incident_id, body.reason, body.severity, body.notify, None, who.name))


@router.post("/{incident_id}/note")
def note(request: Request, incident_id: IncidentId, body: NoteBody, who: Principal = Depends(responder)):
    """Add a note to the timeline (`incident note`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.note(incident_id, body.text, actor=who.name))


@router.post("/{incident_id}/status")
def set_status(request: Request, incident_id: IncidentId, body: StatusBody, who: Principal = Depends(responder)):
    """Move the incident along its lifecycle (`incident status`)."""
    api = _existing(request, incident_id)
    with refused(409):
        return shown(who, api.set_status(incident_id, body.to, body.note, None, who.name,
                                         recovery_point=body.recovery_point))


@router.post("/{incident_id}/resolve")
def resolve(request: Request, incident_id: IncidentId, body: ResolveBody, who: Principal = Depends(responder)):
    """Resolve (`incident resolve`)."""
    api = _existing(request, incident_id)
    with refused(409):
        return shown(who, api.resolve(incident_id, body.resolution, None, who.name, body.recovery_point))


@router.post("/{incident_id}/close")
def close(request: Request, incident_id: IncidentId, body: CloseBody, who: Principal = Depends(responder)):
    """Close a resolved incident, or close it as a duplicate of another (`incident close`)."""
    api = _existing(request, incident_id)
    with refused(409):
        if body.duplicate_of is not None:
            api.merge(body.duplicate_of, [incident_id], None, who.name)
            return shown(who, api.get(incident_id))
        return shown(who, api.close(incident_id, None, who.name))


@router.post("/{incident_id}/merge")
def merge(request: Request, incident_id: IncidentId, body: MergeBody, who: Principal = Depends(responder)):
    """Merge duplicates into this incident: their findings, backups and restores move over; they
    close (`incident merge`)."""
    api = _existing(request, incident_id)
    for other in body.duplicates:
        _existing(request, other)
    with refused(409):
        return shown(who, api.merge(incident_id, body.duplicates, None, who.name, body.reason))


@router.post("/{incident_id}/contain")
def contain(request: Request, incident_id: IncidentId, body: ContainBody, who: Principal = Depends(responder)):
    """Contain (phase 1): read-only collections and paused features, enforced on the application
    database and recorded (`incident contain`); ``containment_result`` says what was done."""
    api = _existing(request, incident_id)
    if not body.read_only and not body.pause:
        raise ApiError(400, "nothing to contain", "read_only: true [collections: [...]] and/or pause: [FEATURE]")
    db = _app_db(request, api, incident_id, body.db)
    with refused(400):
        return shown(who, api.contain(incident_id, db, body.read_only, body.collections, body.pause, body.app_user,
                                      body.app_user_db, None, who.name))


@router.post("/{incident_id}/lift")
def lift(request: Request, incident_id: IncidentId, body: LiftBody, who: Principal = Depends(responder)):
    """Lift containment (phase 5): everything, or only read_only / the named features (`incident lift`)."""
    api = _existing(request, incident_id)
    db = _app_db(request, api, incident_id, body.db)
    with refused(400):
        return shown(who, api.lift(incident_id, db, body.read_only, body.features, None, who.name))


@router.post("/{incident_id}/attach")
def attach(request: Request, incident_id: IncidentId, body: AttachBody, who: Principal = Depends(responder)):
    """Attach check findings (`incident attach`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.attach_findings(incident_id, body.findings, None, who.name))


@router.post("/{incident_id}/link")
def link(request: Request, incident_id: IncidentId, body: LinkBody, who: Principal = Depends(responder)):
    """Link backups and restores; set the recovery point and when the problem began (`incident link`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.link(incident_id, body.backups, body.restores, body.recovery_point, body.started_at,
                                   None, who.name))


@router.post("/{incident_id}/checklist/{item}")
def checklist_item(request: Request, incident_id: IncidentId, item: str, body: ChecklistBody,
                   who: Principal = Depends(responder)):
    """Tick a checklist item, run its action, or reassign it (`incident phase ID ITEM
    --done/--run/--owner`). A run whose action did not report done leaves the item open and says
    why in ``action_result``."""
    api = _existing(request, incident_id)
    if not (body.done or body.run or body.owner):
        raise ApiError(400, "say what to do with the item", "done: true, run: true, or owner: ROLE")
    if "uri" in body.params:
        raise ApiError(400, "an action's params cannot name a MongoDB URI through the API",
                       "the server's configured MongoDB is used; name the database with params.db")
    with refused(400):
        return shown(who, api.complete_item(incident_id, item, body.note, body.owner, body.run, body.params,
                                            body.values, None, who.name))


@router.post("/{incident_id}/comms/{template}")
def comms(request: Request, incident_id: IncidentId, template: Literal["initial", "progress", "resolution"],
          body: CommsBody, who: Principal = Depends(responder)):
    """Render a status-page template, or publish it (`incident comms [--publish]`)."""
    api = _existing(request, incident_id)
    with refused(400):
        if body.publish:
            return shown(who, api.publish(incident_id, template, body.values, None, who.name))
        return shown(who, api.render(incident_id, template, body.values))


@router.post("/{incident_id}/postmortem")
def postmortem(request: Request, incident_id: IncidentId, body: ReviewBody, who: Principal = Depends(responder)):
    """Fill the root-cause review (when the body says anything) and return the postmortem:
    numbers and Markdown (`incident postmortem --root-cause/--factor/--lesson/--action-item`)."""
    api = _existing(request, incident_id)
    with refused(400):
        if body.root_cause is not None or body.factors or body.lessons or body.action_items:
            api.review(incident_id, body.root_cause, body.factors, body.lessons, body.action_items, None, who.name)
        return shown(who, api.postmortem(incident_id))


@router.post("/{incident_id}/review")
def review(request: Request, incident_id: IncidentId, body: ReviewBody, who: Principal = Depends(responder)):
    """Fill the root-cause review (`incident postmortem --root-cause/--factor/--lesson/--action-item`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.review(incident_id, body.root_cause, body.factors, body.lessons, body.action_items,
                                     None, who.name))
