"""Incident response (S13-S23, S33): intake, lifecycle, severity and scope, SLA clocks and
escalation, the five phases as checklists, the hash-chained timeline and the postmortem.

The public entry point is ``fluxa_integrity.incidents.api.Incidents`` (docs/incidents.md).
Modules, each small and named after what it does: lifecycle (state machine), severity (severity
and scope), clocks (deadlines, warnings, breaches), phases (checklists and windows), actions
(the registry of checklist actions), timeline (append and verify), intake (findings, reports,
events), notifications (the outbox), postmortem (numbers and Markdown).
"""

from .actions import ActionContext, register_action  # noqa: F401
from .api import Incidents  # noqa: F401
from . import evidence  # noqa: F401,E402 - installs the backup-backed containment actions
