"""Checklist items the tool can carry out itself (the policy's ``action:`` names).

A registry of handlers: ``register_action(name, handler)``; a handler gets an ActionContext
and returns a dict that goes into the timeline (``status``: done | not_available | failed).
An action a person does outside the tool is registered as manual (``register_manual``): the
checklist shows it as manual and ``--run`` refuses it, so nothing answers "hook not installed".
Handlers that change the incident (containment: read-only mode, paused features, installed by
containment.py) do it on ``ctx.incident`` inside the caller's transaction. Handlers that need other packages plug in here: evidence.py
registers ``preserve_evidence`` (pin the latest backup, snapshot the affected collections) and
tool_actions.py ``verify_backups`` and ``run_checks``. Those two modules are the only place the
incident package imports backup, restore and checks code (at import of the package, from
__init__.py): they run the real tool as a checklist action. The engine itself - this registry,
api.py and its mixins - never does, so the lifecycle, clocks and timeline do not depend on them.
An unknown name gets a handler that says no handler is installed, and the item is not ticked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable


@dataclass
class ActionContext:
    incident: object  # store.incident_models.Incident, attached to the open session
    item_id: str
    at: datetime
    actor: str
    params: dict = field(default_factory=dict)
    policy: object = None
    store: object = None


Handler = Callable[[ActionContext], dict]
_HANDLERS: dict[str, Handler] = {}


def register_action(name: str, handler: Handler) -> None:
    """Install (or replace) the handler of ``name``."""
    _HANDLERS[name] = handler


def handler_for(name: str) -> Handler:
    return _HANDLERS.get(name) or _missing(name)


def _missing(name: str) -> Handler:
    def run(ctx: ActionContext) -> dict:
        return {"status": "not_available", "message": f"{name}: no handler installed"}
    return run


# Actions a person carries out outside the tool: `phase ID ITEM --run` refuses them (tick --done).
MANUAL: dict[str, str] = {}


def register_manual(name: str, why: str) -> None:
    """Mark ``name`` as done by hand (no handler runs it)."""
    MANUAL[name] = why
    _HANDLERS.pop(name, None)


# read_only_mode, lift_read_only, pause_features and resume_features are installed by
# incidents/containment.py: they enforce (flags document, the tool's writers), not only record
# preserve_evidence is installed by incidents/evidence.py, verify_backups and run_checks by
# incidents/tool_actions.py (they need the backup and checks packages)
register_manual("enhanced_monitoring", "monitoring is set up outside the tool (your monitoring system)")
# first/progress/resolution_communication are publications: the API maps them to comms.
