"""Incident actions (responder and up): the same ``Incidents`` methods the `incident` commands call,
with the token's name as the actor (the CLI's ``--by``), so a timeline entry made through the API
is the entry the CLI makes.

Each route checks the incident exists first (404 with the domain's message), then calls the
action: a refusal of the lifecycle (acknowledge twice, close before resolve) is a 409, any other
FluxaError (unknown role, template, checklist item, a placeholder left unfilled) a 400. Bodies are
strict (an unknown field is a 422 naming it), so a typo never passes silently as "not given".
Times are the server's: the CLI's ``--at`` (replaying, drills) has no API equivalent.

Not here yet: containment (contain/lift need the application database), running a checklist
item's action (``--run``), merging; the recovery and restore actions (admin) come with the plans'
routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..access.tokens import Principal
from ..errors import FluxaError
from .auth import require
from .errors import ApiError, not_found, refused
from .reading import incidents_of
from .shown import shown

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
    findings: list[int] = Field(default_factory=list, description="Check findings to link.")
    db: Optional[str] = Field(None, description="The application database affected, if known.")
    started_at: Optional[datetime] = Field(None, description="When the problem began, if known.")


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
    duplicate_of: Optional[int] = Field(None, description="Close it as a duplicate of this incident.")


class AttachBody(Body):
    findings: list[int] = Field(..., min_length=1)


class LinkBody(Body):
    backups: list[str] = Field(default_factory=list)
    restores: list[str] = Field(default_factory=list)
    recovery_point: Optional[datetime] = None
    started_at: Optional[datetime] = None


class ChecklistBody(Body):
    done: bool = Field(False, description="Tick the item.")
    owner: Optional[str] = Field(None, description="Reassign the item to a role.")
    note: Optional[str] = None


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


@router.post("", status_code=201)
def open_incident(request: Request, body: OpenBody, who: Principal = Depends(responder)):
    """Open an incident (`incident open`): severity from the policy."""
    api, at_start = incidents_of(request), body.started_at
    with refused(400):
        if body.source == "report":
            inc = api.report(body.kind or "internal", body.title, body.description, body.collections, who.name,
                             None, body.findings, body.db)
        elif body.source == "event":
            if not body.kind:
                raise FluxaError("a system event needs kind", "failed_migration, incomplete_import, incomplete_export, "
                              "storage_failure, replication_failure or sync_failure")
            inc = api.system_event(body.kind, body.title, body.description, body.collections, None, body.findings,
                                   body.db)
        else:
            if body.source == "finding" and not body.findings:
                raise FluxaError("source finding needs at least one finding id", "pass findings: [ID]")
            inc = api.open(body.title, body.collections, body.source, body.kind, body.description, body.findings,
                           body.db, issue_started_at=at_start, actor=who.name)
    return shown(who, inc)


@router.post("/{incident_id}/ack")
def acknowledge(request: Request, incident_id: int, who: Principal = Depends(responder)):
    """Acknowledge: the response has begun (`incident ack`)."""
    api = _existing(request, incident_id)
    with refused(409):
        return shown(who, api.acknowledge(incident_id, who.name))


@router.post("/{incident_id}/assign")
def assign(request: Request, incident_id: int, body: AssignBody, who: Principal = Depends(responder)):
    """Assign a person to a role (`incident assign`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.assign(incident_id, body.role, body.person, actor=who.name))


@router.post("/{incident_id}/escalate")
def escalate(request: Request, incident_id: int, body: EscalateBody, who: Principal = Depends(responder)):
    """Escalate or de-escalate by hand, with a reason (`incident escalate`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.escalate(incident_id, body.reason, body.severity, body.notify, None, who.name))


@router.post("/{incident_id}/note")
def note(request: Request, incident_id: int, body: NoteBody, who: Principal = Depends(responder)):
    """Add a note to the timeline (`incident note`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.note(incident_id, body.text, actor=who.name))


@router.post("/{incident_id}/status")
def set_status(request: Request, incident_id: int, body: StatusBody, who: Principal = Depends(responder)):
    """Move the incident along its lifecycle (`incident status`)."""
    api = _existing(request, incident_id)
    with refused(409):
        return shown(who, api.set_status(incident_id, body.to, body.note, None, who.name,
                                         recovery_point=body.recovery_point))


@router.post("/{incident_id}/resolve")
def resolve(request: Request, incident_id: int, body: ResolveBody, who: Principal = Depends(responder)):
    """Resolve (`incident resolve`)."""
    api = _existing(request, incident_id)
    with refused(409):
        return shown(who, api.resolve(incident_id, body.resolution, None, who.name, body.recovery_point))


@router.post("/{incident_id}/close")
def close(request: Request, incident_id: int, body: CloseBody, who: Principal = Depends(responder)):
    """Close a resolved incident, or close it as a duplicate of another (`incident close`)."""
    api = _existing(request, incident_id)
    with refused(409):
        if body.duplicate_of is not None:
            api.merge(body.duplicate_of, [incident_id], None, who.name)
            return shown(who, api.get(incident_id))
        return shown(who, api.close(incident_id, None, who.name))


@router.post("/{incident_id}/attach")
def attach(request: Request, incident_id: int, body: AttachBody, who: Principal = Depends(responder)):
    """Attach check findings (`incident attach`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.attach_findings(incident_id, body.findings, None, who.name))


@router.post("/{incident_id}/link")
def link(request: Request, incident_id: int, body: LinkBody, who: Principal = Depends(responder)):
    """Link backups and restores; set the recovery point and when the problem began (`incident link`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.link(incident_id, body.backups, body.restores, body.recovery_point, body.started_at,
                                   None, who.name))


@router.post("/{incident_id}/checklist/{item}")
def checklist_item(request: Request, incident_id: int, item: str, body: ChecklistBody,
                   who: Principal = Depends(responder)):
    """Tick a checklist item or reassign it (`incident phase ID ITEM --done/--owner`)."""
    api = _existing(request, incident_id)
    if not (body.done or body.owner):
        raise ApiError(400, "say what to do with the item", "done: true, or owner: ROLE")
    with refused(400):
        return shown(who, api.complete_item(incident_id, item, body.note, body.owner, False, {}, {}, None, who.name))


@router.post("/{incident_id}/comms/{template}")
def comms(request: Request, incident_id: int, template: Literal["initial", "progress", "resolution"],
          body: CommsBody, who: Principal = Depends(responder)):
    """Render a status-page template, or publish it (`incident comms [--publish]`)."""
    api = _existing(request, incident_id)
    with refused(400):
        if body.publish:
            return shown(who, api.publish(incident_id, template, body.values, None, who.name))
        return shown(who, api.render(incident_id, template, body.values))


@router.post("/{incident_id}/review")
def review(request: Request, incident_id: int, body: ReviewBody, who: Principal = Depends(responder)):
    """Fill the root-cause review (`incident postmortem --root-cause/--factor/--lesson/--action-item`)."""
    api = _existing(request, incident_id)
    with refused(400):
        return shown(who, api.review(incident_id, body.root_cause, body.factors, body.lessons, body.action_items,
                                     None, who.name))
