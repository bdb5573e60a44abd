"""The incident engine's Python API, used by the CLI (and the HTTP service to come).

    from fluxa_integrity.incidents.api import Incidents
    inc = Incidents.from_environment()             # state store, policy and channels from config
    i = inc.open("Duplicate emails", collections=["users"], source="report", source_kind="support")
    inc.acknowledge(i["id"], by="alice")
    inc.tick()                                     # clocks, escalation, due notification retries

Every method takes ``at`` (default: now) so a script or a test drives time, and ``actor`` (who
did it; default "fluxa-integrity"). Methods return plain dicts (JSON-ready) and raise FluxaError
for anything the user can fix: unknown incident, refused transition, missing template value.

Each change is one transaction: the incident row, its timeline rows and the queued notifications
are written together; notifications are delivered after the commit (incidents/notifications.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..comms.notify import Channel, Message, load_channels, retry_settings
from ..comms.templates import placeholders, render
from ..errors import FluxaError
from ..policy.models import Policy
from ..store import Store
from ..store.incident_models import ChecklistState, Incident, IncidentFinding, Notification, Publication
from ..store.models import Finding
from . import clocks, intake, notifications, phases, postmortem, timeline
from .actions import ActionContext, handler_for
from .lifecycle import LIVE, STATUSES, TIMESTAMP, check_transition
from .severity import classes_for, level_for, rank, scope_from
from .timeutil import fmt_delta, iso, now, utc

SYSTEM = "fluxa-integrity"
PD_ACTION = {"acknowledged": "acknowledge", "resolved": "resolve"}
COMMS_ACTIONS = {"first_communication": "initial", "progress_communication": "progress",
                 "resolution_communication": "resolution"}


@dataclass
class _Change:
    s: Session
    inc: Incident
    at: datetime
    actor: str
    outbox: list[int] = field(default_factory=list)


class Incidents:
    def __init__(self, store: Store, policy: Policy, channels: list[Channel] | None = None,
                 retry: dict | None = None):
        self.store, self.policy = store, policy
        self.channels = channels if channels is not None else []
        self.retry = retry or retry_settings({})

    @classmethod
    def from_environment(cls, policy: Policy | None = None) -> "Incidents":
        """The store, policy ($FLUXA_POLICY, `policy:` in config.yaml, else the default) and the
        notification channels that the CLI uses."""
        import os
        from pathlib import Path

        from ..config import load_config_file
        from ..policy import load_policy
        from ..store import open_store

        cfg = load_config_file()
        if policy is None:
            path = os.environ.get("FLUXA_POLICY") or cfg.get("policy")
            policy = load_policy(Path(path) if path else None)
        return cls(open_store(), policy, load_channels(cfg), retry_settings(cfg))

    # -- plumbing ---------------------------------------------------------------------------

    def _get(self, s: Session, incident_id: int, lock: bool = True) -> Incident:
        inc = s.get(Incident, int(incident_id), with_for_update=lock)
        if inc is None:
            raise FluxaError(f"no incident {incident_id}", "list them with `fluxa-integrity incident list`")
        return inc

    @contextmanager
    def _change(self, incident_id: int, at: datetime | None, actor: str | None) -> Iterator[_Change]:
        with self.store.session() as s:
            ch = _Change(s, self._get(s, incident_id), utc(at) or now(), actor or SYSTEM)
            yield ch
        self._deliver(ch.outbox, ch.at)

    def _deliver(self, ids: list[int], at: datetime) -> dict:
        return notifications.deliver(self.store, self.channels, ids, at, self.retry) if ids else {"sent": 0, "failed": 0}

    def _notify(self, ch: _Change, kind: str, subject: str, body: str = "", pagerduty: str | None = None) -> None:
        inc = ch.inc
        text = body or subject
        msg = Message(inc.id, kind, f"[{inc.severity}] Incident {inc.id}: {subject}",
                      f"{text}\n\nIncident {inc.id} \"{inc.title}\" - status {inc.status}, severity {inc.severity}, "
                      f"data classes {', '.join(inc.data_classes or []) or '-'}.", inc.severity, pagerduty)
        ch.outbox += notifications.enqueue(ch.s, self.channels, msg, ch.at)

    def _record(self, ch: _Change, kind: str, **data) -> None:
        timeline.append(ch.s, ch.inc, kind, ch.at, ch.actor, **data)

    # -- opening ----------------------------------------------------------------------------

    def open(self, title: str, collections: list[str] | None = None, source: str = "manual",
             source_kind: str | None = None, description: str = "", finding_ids: list[int] | None = None,
             database: str | None = None, issue_started_at: datetime | None = None,
             detected_at: datetime | None = None, at: datetime | None = None, actor: str | None = None) -> dict:
        """Open an incident. Severity comes from the data classes of ``collections`` and of the
        linked findings (policy rules); escalation triggers for ``opened`` notify their roles."""
        at = utc(at) or now()
        if not title.strip():
            raise FluxaError("an incident needs a title", "pass --title")
        with self.store.session() as s:
            found = self._findings(s, finding_ids or [])
            colls = sorted(set(collections or []) | {f.collection for f in found})
            unknown = [c for c in colls if c not in self.policy.collections]
            if unknown:
                raise FluxaError(f"unknown collection(s) {', '.join(unknown)}",
                                 f"the policy's collections: {', '.join(self.policy.collections)}")
            classes = sorted(set(classes_for(self.policy, colls)) | {f.data_class for f in found if f.data_class})
            inc = Incident(title=title.strip(), description=description, source=source, source_kind=source_kind,
                           database=database or (found[0].database if found else None), status="open",
                           severity=level_for(self.policy, classes), severity_manual=False, data_classes=classes,
                           collections=colls, backup_ids=[], restore_ids=[], roles={}, escalated_to=[], fired=[],
                           scope={}, read_only=False, paused_features=[], opened_at=at,
                           issue_started_at=utc(issue_started_at), detected_at=utc(detected_at) or at,
                           contributing_factors=[], lessons=[], action_items=[], timeline_head="", timeline_count=0)
            s.add(inc)
            s.flush()
            for phase_id, item_id, owner in phases.checklist_rows(self.policy):
                s.add(ChecklistState(incident_id=inc.id, phase_id=phase_id, item_id=item_id, owner=owner))
            ch = _Change(s, inc, at, actor or SYSTEM)
            self._record(ch, "opened", title=inc.title, source=source, source_kind=source_kind, severity=inc.severity,
                         data_classes=classes, collections=colls, description=description)
            if found:
                self._link(ch, found)
            self._notify(ch, "opened", f"opened: {inc.title}",
                         f"Opened from {source}{' (' + source_kind + ')' if source_kind else ''}. "
                         f"{self._scope_line(inc)}", pagerduty="trigger")
            self._escalate_by_trigger(ch, "opened", reason="incident opened")
        self._deliver(ch.outbox, at)
        return self.get(inc.id)

    def report(self, kind: str, title: str, description: str = "", collections: list[str] | None = None,
               reporter: str | None = None, at: datetime | None = None) -> dict:
        """A user, support or internal report (or an alert from elsewhere) opens an incident."""
        if kind not in intake.REPORT_KINDS:
            raise FluxaError(f"unknown report kind {kind!r}", f"one of: {', '.join(intake.REPORT_KINDS)}")
        return self.open(title, collections, "report", kind, description, at=at, actor=reporter)

    def system_event(self, kind: str, title: str | None = None, description: str = "",
                     collections: list[str] | None = None, at: datetime | None = None) -> dict:
        """A system event (failed migration, incomplete import/export, storage, replication or sync
        failure) opens an incident."""
        if kind not in intake.SYSTEM_EVENTS:
            raise FluxaError(f"unknown system event {kind!r}", f"one of: {', '.join(intake.SYSTEM_EVENTS)}")
        return self.open(title or intake.SYSTEM_EVENTS[kind], collections, "event", kind, description, at=at)

    def intake(self, database: str | None = None, at: datetime | None = None) -> dict:
        """Open or join incidents for the open findings of the last complete check run."""
        at = utc(at) or now()
        result = {"run_id": None, "opened": [], "attached": {}, "skipped": []}
        with self.store.session() as s:
            run = intake.last_run(s, database)
            if run is None:
                raise FluxaError("no complete check run to take findings from", "run `fluxa-integrity check run` first")
            result["run_id"] = run.id
            found = intake.open_findings_of(s, run)
            taken = intake.linked_elsewhere(s, [f.id for f in found])
            result["skipped"] = [f.id for f in found if f.id in taken]
            groups: dict[str, list[Finding]] = {}
            for f in found:
                if f.id in taken:
                    continue
                target = intake.attach_target(s, f)
                if target is not None:
                    ids = result["attached"].setdefault(target.id, [])
                    ids.append(f.id)
                else:
                    groups.setdefault(intake.group_key(f), []).append(f)
            run_db = run.database
        for inc_id, ids in result["attached"].items():
            self.attach_findings(inc_id, ids, at=at)
        for key, fs in groups.items():
            dc = fs[0].data_class
            what = self.policy.data_class(dc).title if dc else fs[0].collection
            rules = ", ".join(sorted({f.rule_id for f in fs}))
            title = f"{what}: {len(fs)} integrity finding{'s' if len(fs) > 1 else ''} ({rules})"
            opened = self.open(title[:300], source="finding", source_kind="check", finding_ids=[f.id for f in fs],
                               database=run_db, detected_at=min(utc(f.opened_at) for f in fs), at=at)
            result["opened"].append(opened["id"])
        return result

    def attach_findings(self, incident_id: int, finding_ids: list[int], at: datetime | None = None,
                        actor: str | None = None) -> dict:
        with self._change(incident_id, at, actor) as ch:
            self._link(ch, self._findings(ch.s, finding_ids))
        return self.get(incident_id)

    def _findings(self, s: Session, ids: list[int]) -> list[Finding]:
        out = []
        for fid in ids:
            f = s.get(Finding, int(fid))
            if f is None:
                raise FluxaError(f"no finding {fid}", "list them with `fluxa-integrity check findings`")
            out.append(f)
        return out

    def _link(self, ch: _Change, found: list[Finding]) -> None:
        inc, s = ch.inc, ch.s
        have = {r for r in s.scalars(select(IncidentFinding.finding_id).where(IncidentFinding.incident_id == inc.id))}
        new = [f for f in found if f.id not in have]
        for f in new:
            s.add(IncidentFinding(incident_id=inc.id, finding_id=f.id, fingerprint=f.fingerprint, linked_at=ch.at))
        s.flush()
        if not new:
            return
        inc.collections = sorted(set(inc.collections or []) | {f.collection for f in new})
        inc.data_classes = sorted(set(inc.data_classes or []) | {f.data_class for f in new if f.data_class}
                                  | set(classes_for(self.policy, inc.collections)))
        inc.database = inc.database or new[0].database
        linked = intake.linked_findings(s, inc.id)
        inc.scope = scope_from(linked, intake.scanned_docs(s, linked))
        starts = [utc(f.first_doc_time) for f in linked if f.first_doc_time]
        if starts and inc.issue_started_at is None:
            inc.issue_started_at = min(starts)
        self._record(ch, "findings_linked", finding_ids=[f.id for f in new],
                     fingerprints=[f.fingerprint for f in new], rules=[f.rule_id for f in new], scope=inc.scope)
        wanted = level_for(self.policy, inc.data_classes)
        if not inc.severity_manual and rank(self.policy, wanted) < rank(self.policy, inc.severity):
            old, inc.severity = inc.severity, wanted
            self._record(ch, "severity_changed", **{"from": old, "to": wanted,
                                                    "reason": "a linked finding affects critical data"})
            if inc.timeline_count > 2:  # not while opening: the open message carries the severity
                self._notify(ch, "severity", f"severity raised {old} -> {wanted}",
                             "A linked finding affects critical data.")

    def _scope_line(self, inc: Incident) -> str:
        sc = inc.scope or {}
        if not sc:
            return f"Collections: {', '.join(inc.collections or []) or 'not yet known'}."
        return (f"Scope: {sc.get('documents')} documents, {sc.get('users')} users in "
                f"{', '.join(sc.get('collections', []))}; {sc.get('extent')}, {sc.get('trend')}.")

    # -- lifecycle --------------------------------------------------------------------------

    def acknowledge(self, incident_id: int, by: str | None = None, at: datetime | None = None) -> dict:
        return self.set_status(incident_id, "acknowledged", note=None, at=at, actor=by)

    def set_status(self, incident_id: int, status: str, note: str | None = None, at: datetime | None = None,
                   actor: str | None = None, resolution: str | None = None,
                   recovery_point: datetime | None = None) -> dict:
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            check_transition(inc, status)
            old, inc.status = inc.status, status
            setattr(inc, TIMESTAMP[status], ch.at)
            if resolution:
                inc.resolution = resolution
            if recovery_point is not None:
                inc.recovery_point = utc(recovery_point)
            self._record(ch, "status", **{"from": old, "to": status, "note": note, "resolution": resolution,
                                          "recovery_point": recovery_point})
            self._notify(ch, "status", f"{status}" + (f" by {ch.actor}" if ch.actor != SYSTEM else ""),
                         f"Status {old} -> {status}." + (f" {note}" if note else ""), pagerduty=PD_ACTION.get(status))
        return self.get(incident_id)

    def resolve(self, incident_id: int, resolution: str | None = None, at: datetime | None = None,
                actor: str | None = None, recovery_point: datetime | None = None) -> dict:
        return self.set_status(incident_id, "resolved", note=resolution, at=at, actor=actor,
                               resolution=resolution, recovery_point=recovery_point)

    def close(self, incident_id: int, at: datetime | None = None, actor: str | None = None) -> dict:
        return self.set_status(incident_id, "closed", at=at, actor=actor)

    def assign(self, incident_id: int, role: str, person: str, at: datetime | None = None,
               actor: str | None = None) -> dict:
        if role not in self.policy.roles:
            raise FluxaError(f"unknown role {role!r}", f"the policy's roles: {', '.join(self.policy.roles)}")
        with self._change(incident_id, at, actor) as ch:
            ch.inc.roles = {**(ch.inc.roles or {}), role: person}
            self._record(ch, "assigned", role=role, person=person)
            self._notify(ch, "assigned", f"{role}: {person}")
        return self.get(incident_id)

    def note(self, incident_id: int, text: str, at: datetime | None = None, actor: str | None = None) -> dict:
        if not text.strip():
            raise FluxaError("an empty note says nothing", "pass the note's text")
        with self._change(incident_id, at, actor) as ch:
            self._record(ch, "note", text=text)
        return self.get(incident_id)

    def escalate(self, incident_id: int, reason: str, severity: str | None = None, notify: str | None = None,
                 at: datetime | None = None, actor: str | None = None) -> dict:
        """Manual escalation or de-escalation: change severity and/or notify a role on the path."""
        if not (reason or "").strip():
            raise FluxaError("escalating needs a reason", "pass --reason")
        if severity is None and notify is None:
            raise FluxaError("nothing to escalate", "pass --severity LEVEL and/or --notify ROLE")
        if severity is not None and severity not in self.policy.severity.levels:
            raise FluxaError(f"unknown severity {severity!r}", f"levels: {', '.join(self.policy.severity.levels)}")
        if notify is not None and notify not in self.policy.escalation.path:
            raise FluxaError(f"{notify!r} is not on the escalation path",
                             f"path: {' -> '.join(self.policy.escalation.path)}")
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            if inc.status == "closed":
                raise FluxaError(f"incident {inc.id} is closed")
            if severity is not None and severity != inc.severity:
                old, inc.severity, inc.severity_manual = inc.severity, severity, True
                word = "escalated" if rank(self.policy, severity) < rank(self.policy, old) else "de-escalated"
                self._record(ch, "severity_changed", **{"from": old, "to": severity, "reason": reason, "manual": True})
                self._notify(ch, "severity", f"severity {word} {old} -> {severity}", f"Reason: {reason}")
            if notify is not None:
                self._escalate_to(ch, notify, reason)
        return self.get(incident_id)

    def _escalate_by_trigger(self, ch: _Change, when: str, reason: str) -> None:
        for role in self.policy.escalation.triggered(when, ch.inc.severity):
            self._escalate_to(ch, role, reason, trigger=when)

    def _escalate_to(self, ch: _Change, role: str, reason: str, trigger: str | None = None) -> None:
        inc = ch.inc
        if role not in (inc.escalated_to or []):
            inc.escalated_to = [*(inc.escalated_to or []), role]
        person = (inc.roles or {}).get(role)
        self._record(ch, "escalation", role=role, person=person, reason=reason, trigger=trigger)
        self._notify(ch, "escalation", f"escalated to {role}" + (f" ({person})" if person else ""), f"Reason: {reason}")

    def link(self, incident_id: int, backups: list[str] | None = None, restores: list[str] | None = None,
             recovery_point: datetime | None = None, issue_started_at: datetime | None = None,
             at: datetime | None = None, actor: str | None = None) -> dict:
        """Link backups/restores (free ids until the backup package lands) and set the recovery
        point and the issue start used by the postmortem."""
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            inc.backup_ids = sorted(set(inc.backup_ids or []) | set(backups or []))
            inc.restore_ids = sorted(set(inc.restore_ids or []) | set(restores or []))
            if recovery_point is not None:
                inc.recovery_point = utc(recovery_point)
            if issue_started_at is not None:
                inc.issue_started_at = utc(issue_started_at)
            self._record(ch, "linked", backups=backups, restores=restores, recovery_point=recovery_point,
                         issue_started_at=issue_started_at)
        return self.get(incident_id)

    # -- phases and actions -----------------------------------------------------------------

    def checklist(self, incident_id: int, at: datetime | None = None) -> list[dict]:
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            return phases.view(self.policy, inc, self._states(s, inc.id), utc(at) or now())

    def _states(self, s: Session, incident_id: int) -> dict[str, ChecklistState]:
        return {r.item_id: r for r in s.scalars(select(ChecklistState).where(ChecklistState.incident_id == incident_id))}

    def complete_item(self, incident_id: int, item_id: str, note: str | None = None, owner: str | None = None,
                      run: bool = False, params: dict | None = None, values: dict | None = None,
                      at: datetime | None = None, actor: str | None = None) -> dict:
        """Tick a checklist item (``run``: carry out its action first; the item is ticked only when
        the action succeeded). ``owner`` reassigns the item without ticking it."""
        phase, item = phases.find_item(self.policy, item_id)
        if item is None:
            raise FluxaError(f"no checklist item {item_id!r}", "see `fluxa-integrity incident phase ID`")
        if owner and owner not in self.policy.roles:
            raise FluxaError(f"unknown role {owner!r}", f"the policy's roles: {', '.join(self.policy.roles)}")
        if run and not item.action:
            raise FluxaError(f"item {item_id} has no action the tool can carry out", "tick it with --done")
        if run and item.action in COMMS_ACTIONS:
            self.publish(incident_id, COMMS_ACTIONS[item.action], values or {}, at=at, actor=actor)
        result = None
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            if inc.status == "closed":
                raise FluxaError(f"incident {inc.id} is closed; its checklist is final")
            st = self._states(ch.s, inc.id)[item_id]
            if owner:
                st.owner = owner
                self._record(ch, "checklist_owner", phase=phase.id, item=item_id, owner=owner)
                if not run and note is None:
                    return self.get(incident_id)
            if run and item.action not in COMMS_ACTIONS:
                result = handler_for(item.action)(ActionContext(inc, item_id, ch.at, ch.actor, params or {},
                                                                self.policy, self.store))
                self._record(ch, "action", phase=phase.id, item=item_id, action=item.action, result=result)
                if result.get("status") != "done":  # the item stays open: nothing was carried out
                    return {**self.get_in(ch.s, inc), "action_result": result}
            st.done_at, st.done_by, st.note = ch.at, ch.actor, note
            self._record(ch, "checklist", phase=phase.id, item=item_id, text=item.text, note=note)
        out = self.get(incident_id)
        if result is not None:
            out["action_result"] = result
        return out

    # -- communications ---------------------------------------------------------------------

    def template_values(self, inc: Incident, at: datetime) -> dict[str, str]:
        """What the incident itself can fill in; --set values override."""
        titles = [self.policy.data_class(c).title.lower() for c in inc.data_classes or []
                  if c in {d.name for d in self.policy.data_classes}]
        vals = {"CURRENT_TIME": f"{at:%Y-%m-%d %H:%M} UTC",
                "SPECIFIC_ISSUES": f"missing or incorrect {' and '.join(titles)} data" if titles else ""}
        left = clocks.remaining(self.policy, inc, at)["resolve"]
        if left is not None and left.total_seconds() > 0:
            hours = max(1, round(left.total_seconds() / 3600))
            vals["ESTIMATED_TIME"] = f"{hours} hour{'s' if hours > 1 else ''}"
        if inc.root_cause:
            vals["BRIEF_CAUSE"] = inc.root_cause
        if inc.resolution:
            vals["BRIEF_RESOLUTION"] = inc.resolution
        return {k: v for k, v in vals.items() if v}

    def render(self, incident_id: int, template: str, values: dict | None = None,
               at: datetime | None = None) -> dict:
        tpl = self._template(template)
        at = utc(at) or now()
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            vals = {**self.template_values(inc, at), **{k.strip("[]"): v for k, v in (values or {}).items()}}
        unknown = [k for k in vals if k not in placeholders(tpl.text) and k not in self.template_values_keys]
        if unknown:
            raise FluxaError(f"the {template} template has no placeholder {', '.join(unknown)}",
                             f"its placeholders: {', '.join(placeholders(tpl.text))}")
        text = render(tpl, vals, template)
        return {"incident": incident_id, "template": template, "title": tpl.title, "text": text,
                "values": {k: vals[k] for k in placeholders(tpl.text)}}

    template_values_keys = ("CURRENT_TIME", "SPECIFIC_ISSUES", "ESTIMATED_TIME", "BRIEF_CAUSE", "BRIEF_RESOLUTION")

    def _template(self, name: str):
        if name not in ("initial", "progress", "resolution"):
            raise FluxaError(f"unknown template {name!r}", "initial, progress or resolution")
        return getattr(self.policy.templates, name)

    def publish(self, incident_id: int, template: str, values: dict | None = None, at: datetime | None = None,
                actor: str | None = None) -> dict:
        """Render (refused with a placeholder left), record on the status page history, notify."""
        rendered = self.render(incident_id, template, values, at)
        with self._change(incident_id, at, actor) as ch:
            pub = Publication(incident_id=ch.inc.id, template=template, title=rendered["title"], text=rendered["text"],
                              values=rendered["values"], published_at=ch.at)
            ch.s.add(pub)
            ch.s.flush()
            self._record(ch, "communication", template=template, publication=pub.id, title=rendered["title"],
                         text=rendered["text"])
            self._notify(ch, "communication", f"status page: {rendered['title']}", rendered["text"])
        return {**rendered, "publication": pub.id, "published_at": iso(pub.published_at)}

    def publications(self, incident_id: int | None = None) -> list[dict]:
        with self.store.session() as s:
            q = select(Publication).order_by(Publication.id)
            if incident_id is not None:
                q = q.where(Publication.incident_id == incident_id)
            return [{"id": p.id, "incident": p.incident_id, "template": p.template, "title": p.title,
                     "text": p.text, "published_at": iso(p.published_at)} for p in s.scalars(q)]

    # -- clocks -----------------------------------------------------------------------------

    def tick(self, at: datetime | None = None) -> dict:
        """Evaluate every live incident's clocks at ``at``: warnings, breaches, escalation by
        clock, overdue phases (each recorded once), then retry due notifications."""
        at = utc(at) or now()
        fired: list[dict] = []
        with self.store.session() as s:
            ids = list(s.scalars(select(Incident.id).where(Incident.status != "closed").order_by(Incident.id)))
        for iid in ids:
            with self._change(iid, at, SYSTEM) as ch:
                states = self._states(ch.s, iid)
                done = {k: v.done_at is not None for k, v in states.items()}
                for ev in clocks.due(self.policy, ch.inc, at, done):
                    ch.inc.fired = [*(ch.inc.fired or []), ev.key]
                    self._record(ch, ev.kind, clock=ev.clock, due_at=ev.due_at)
                    fired.append({"incident": iid, "event": ev.kind, "clock": ev.clock, "due_at": iso(ev.due_at)})
                    if ev.kind == "clock_warning":
                        self._notify(ch, "clock", f"{ev.clock} due at {ev.due_at:%H:%M} UTC "
                                     f"(in {fmt_delta(ev.due_at - at)})")
                    elif ev.kind == "clock_breached":
                        self._notify(ch, "clock", f"{ev.clock} target missed (due {ev.due_at:%H:%M} UTC)")
                        self._escalate_by_trigger(ch, ev.escalate_when, reason=f"{ev.clock} target missed")
        retried = self._deliver(notifications.pending_ids(self.store, due_at=at), at)
        return {"at": iso(at), "events": fired, "notifications_retried": retried}

    def retry_notifications(self, at: datetime | None = None, incident_id: int | None = None) -> dict:
        """Deliver every pending notification now, whatever its schedule."""
        return self._deliver(notifications.pending_ids(self.store, None, incident_id), utc(at) or now())

    def notifications(self, incident_id: int) -> list[dict]:
        with self.store.session() as s:
            rows = s.scalars(select(Notification).where(Notification.incident_id == incident_id)
                             .order_by(Notification.id))
            return [{"id": r.id, "channel": r.channel, "kind": r.kind, "subject": r.subject, "status": r.status,
                     "attempts": r.attempts, "last_error": r.last_error, "sent_at": iso(r.sent_at),
                     "next_attempt_at": iso(r.next_attempt_at)} for r in rows]

    # -- postmortem -------------------------------------------------------------------------

    def review(self, incident_id: int, root_cause: str | None = None, factors: list[str] | None = None,
               lessons: list[str] | None = None, action_items: list[str] | None = None,
               at: datetime | None = None, actor: str | None = None) -> dict:
        """Fill the root-cause review (appends factors, lessons and action items)."""
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            if root_cause is not None:
                inc.root_cause = root_cause.strip() or None
            inc.contributing_factors = [*(inc.contributing_factors or []), *(factors or [])]
            inc.lessons = [*(inc.lessons or []), *(lessons or [])]
            inc.action_items = [*(inc.action_items or []), *(action_items or [])]
            self._record(ch, "review", root_cause=root_cause, factors=factors, lessons=lessons,
                         action_items=action_items)
        return self.get(incident_id)

    def postmortem(self, incident_id: int, at: datetime | None = None) -> dict:
        with self.store.session() as s:
            inc = self._get(s, incident_id, lock=False)
            evs = timeline.events(s, inc.id)
            found = intake.linked_findings(s, inc.id)
            pubs = list(s.scalars(select(Publication).where(Publication.incident_id == inc.id).order_by(Publication.id)))
            view = phases.view(self.policy, inc, self._states(s, inc.id), utc(at) or now())
            md = postmortem.render(self.policy, inc, evs, found, pubs, view)
            return {"incident": inc.id, "numbers": postmortem.numbers_json(postmortem.numbers(self.policy, inc)),
                    "markdown": md}

    # -- reading ----------------------------------------------------------------------------

    def verify_timeline(self, incident_id: int | None = None) -> list[dict]:
        with self.store.session() as s:
            if incident_id is not None:
                incs = [self._get(s, incident_id, lock=False)]
            else:
                incs = list(s.scalars(select(Incident).order_by(Incident.id)))
            return [timeline.verify(s, i).as_dict() for i in incs]

    def timeline(self, incident_id: int) -> list[dict]:
        with self.store.session() as s:
            self._get(s, incident_id, lock=False)
            return [{"seq": e.seq, "at": iso(e.at), "kind": e.kind, "actor": e.actor, "data": e.data,
                     "hash": e.hash} for e in timeline.events(s, incident_id)]

    def get(self, incident_id: int) -> dict:
        with self.store.session() as s:
            return self.get_in(s, self._get(s, incident_id, lock=False))

    def get_in(self, s: Session, inc: Incident) -> dict:
        fids = list(s.scalars(select(IncidentFinding.finding_id).where(IncidentFinding.incident_id == inc.id)
                              .order_by(IncidentFinding.finding_id)))
        return {"id": inc.id, "title": inc.title, "description": inc.description, "status": inc.status,
                "severity": inc.severity, "severity_label": self.policy.severity.levels.get(inc.severity),
                "source": inc.source, "source_kind": inc.source_kind, "database": inc.database,
                "data_classes": inc.data_classes, "collections": inc.collections, "findings": fids,
                "backups": inc.backup_ids, "restores": inc.restore_ids, "roles": inc.roles,
                "escalated_to": inc.escalated_to, "scope": inc.scope, "read_only": inc.read_only,
                "paused_features": inc.paused_features,
                "times": {s_: iso(getattr(inc, TIMESTAMP[s_])) for s_ in STATUSES},
                "issue_started_at": iso(inc.issue_started_at), "detected_at": iso(inc.detected_at),
                "recovery_point": iso(inc.recovery_point), "resolution": inc.resolution,
                "root_cause": inc.root_cause, "contributing_factors": inc.contributing_factors,
                "lessons": inc.lessons, "action_items": inc.action_items, "timeline_rows": inc.timeline_count}

    def list(self, status: str | None = None) -> list[dict]:
        """Incidents, newest first; ``status``: one status, "live" (not yet resolved) or None (all)."""
        with self.store.session() as s:
            q = select(Incident).order_by(Incident.id.desc())
            if status == "live":
                q = q.where(Incident.status.in_(LIVE))
            elif status:
                if status not in STATUSES:
                    raise FluxaError(f"unknown status {status!r}", f"one of: live, {', '.join(STATUSES)}")
                q = q.where(Incident.status == status)
            return [self.get_in(s, i) for i in s.scalars(q)]

    def read_only_collections(self) -> dict:
        """What the application reads to honour read-only mode (docs/incidents.md)."""
        with self.store.session() as s:
            incs = s.scalars(select(Incident).where(Incident.status != "closed", Incident.read_only.is_(True))).all()
            return {"read_only": bool(incs), "incidents": [i.id for i in incs],
                    "collections": sorted({c for i in incs for c in i.collections or []}),
                    "paused_features": sorted({f for i in s.scalars(select(Incident).where(Incident.status != "closed"))
                                               for f in i.paused_features or []})}
