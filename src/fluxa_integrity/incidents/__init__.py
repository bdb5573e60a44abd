"""Incident response (S13-S23, S33): intake, lifecycle, severity and scope, SLA clocks and
escalation, the five phases as checklists, the hash-chained timeline and the postmortem.

The public entry point is ``fluxa_integrity.incidents.api.Incidents`` (docs/incidents.md).
Modules, each small and named after what it does: lifecycle (state machine), severity (severity
and scope), clocks (deadlines, warnings, breaches), phases (checklists and windows), actions
(the registry of checklist actions), timeline (append and verify), intake (findings, reports,
events), notifications (the outbox), postmortem (numbers and Markdown). The ``Incidents`` facade
is api.py (the core) plus one mixin per concern: publishing (status-page communications),
checklist_ops (checklists and their actions), escalation (escalation and the clock tick), review
(review, postmortem, timeline); change holds the unit of work they share.
"""

from .actions import ActionContext, register_action  # noqa: F401
from .api import Incidents  # noqa: F401
from . import evidence  # noqa: F401,E402 - installs the backup-backed containment actions
from . import tool_actions  # noqa: F401,E402 - installs verify_backups and run_checks
