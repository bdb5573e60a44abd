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

``Incidents`` is one facade assembled from mixins, one per concern, so no module grows into a
god file: this module keeps the core (construction, the change plumbing ``_get``/``_change``/
``_notify``/``_record``, opening and intake, the lifecycle transitions, notifications and reading);
publishing.py (status-page communications), checklist_ops.py (checklists and their actions),
escalation.py (escalation, the clock ``tick`` and the clocks view), review.py (review,
postmortem, timeline), recovery.py (``require_open``/``record_recovery_action`` for restore,
promote and undo), duplicates.py (merge, close as a duplicate) and containment.py (contain,
lift, ``check_writable`` for the tool's own writers) hold the rest. They sit below
this module: they use the core through ``self`` and import only change.py (the ``Change`` unit
of work), never api.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Callable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..comms.notify import Channel, Message, load_channels, retry_settings
from ..errors import FluxaError
from ..policy.models import Policy
from ..store import Store
from ..store.incident_models import ChecklistState, Incident, IncidentFinding, Notification
from ..store.models import Finding
from . import intake, notifications, phases, refs, timeline, timetravel
from .change import SYSTEM, Change
from .checklist_ops import COMMS_ACTIONS, ChecklistMixin  # noqa: F401 - COMMS_ACTIONS was defined here
from .containment import ContainmentMixin, enforced, read_only_of
from .duplicates import DuplicatesMixin
from .escalation import EscalationMixin
from .lifecycle import LIVE, STATUSES, TIMESTAMP, check_transition
from .publishing import PublishingMixin
from .recovery import RecoveryMixin
from .review import ReviewMixin
from .severity import classes_for, level_for, rank, scope_from, split_place
from .timeutil import iso, now, utc

PD_ACTION = {"acknowledged": "acknowledge", "resolved": "resolve"}


class Incidents(PublishingMixin, ChecklistMixin, EscalationMixin, ReviewMixin, RecoveryMixin, DuplicatesMixin,
                ContainmentMixin):
    def __init__(self, store: Store, policy: Policy, channels: list[Channel] | None = None,
                 retry: dict | None = None):
        self.store, self.policy = store, policy
        self.channels = channels if channels is not None else []
        self.retry = retry or retry_settings({})
        # called with each failed delivery (the CLI prints it on stderr); failures are also kept
        self.on_delivery_failure: Callable[[dict], None] | None = None
        self.delivery_failures: list[dict] = []

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
    def _change(self, incident_id: int, at: datetime | None, actor: str | None) -> Iterator[Change]:
        with self.store.session() as s:
            ch = Change(s, self._get(s, incident_id), utc(at) or now(), actor or SYSTEM)
            timetravel.check(ch.at, ch.inc.drill, "change it", ch.inc.id)
            yield ch
        self._deliver(ch.outbox, ch.at)

    def _deliver(self, ids: list[int], at: datetime) -> dict:
        if not ids:
            return {"sent": 0, "failed": 0, "failures": []}
        res = notifications.deliver(self.store, self.channels, ids, at, self.retry)
        for f in res["failures"]:
            self.delivery_failures.append(f)
            if self.on_delivery_failure is not None:
                self.on_delivery_failure(f)
        return res

    def _notify(self, ch: Change, kind: str, subject: str, body: str = "", pagerduty: str | None = None,
                **extra) -> None:
        """Queue a message for every channel that wants it; ``extra`` travels with it (``clock``:
        the SLA clock a PagerDuty trigger pages)."""
        inc = ch.inc
        text = body or subject
        drill = "[DRILL] " if inc.drill else ""  # recipients must never mistake a drill for the real thing
        msg = Message(inc.id, kind, f"{drill}[{inc.severity}] Incident {inc.id}: {subject}",
                      f"{text}\n\nIncident {inc.id} \"{inc.title}\" - status {inc.status}, severity {inc.severity}, "
                      f"data classes {', '.join(inc.data_classes or []) or '-'}.", inc.severity, pagerduty, extra)
        ch.outbox += notifications.enqueue(ch.s, self.channels, msg, ch.at, self.policy)

    def _record(self, ch: Change, kind: str, **data) -> None:
        timeline.append(ch.s, ch.inc, kind, ch.at, ch.actor, **data)

    # -- opening ----------------------------------------------------------------------------

    def open(self, title: str, collections: list[str] | None = None, source: str = "manual",
             source_kind: str | None = None, description: str = "", finding_ids: list[int] | None = None,
             database: str | None = None, issue_started_at: datetime | None = None,
             detected_at: datetime | None = None, at: datetime | None = None, actor: str | None = None,
             drill: bool = False) -> dict:
        """Open an incident. ``collections`` are collections or ``collection.field`` places (as fine
        as the policy's data classes: ``users.preferences`` is not ``users``); severity comes from
        their data classes and those of the linked findings (policy rules); escalation triggers
        for ``opened`` notify their roles. A ``drill`` takes simulated (future) times."""
        at = utc(at) or now()
        if not title.strip():
            raise FluxaError("an incident needs a title", "pass --title")
        timetravel.check(at, drill, "open an incident")
        with self.store.session() as s:
            found = self._findings(s, finding_ids or [])
            self._not_linked_elsewhere(s, found, None)
            places = sorted(set(collections or []))
            named = [split_place(self.policy, p)[0] for p in places]
            unknown = [c for c in named if c not in self.policy.collections]
            if unknown:
                raise FluxaError(f"unknown collection(s) {', '.join(unknown)}",
                                 f"the policy's collections: {', '.join(self.policy.collections)} "
                                 "(or collection.field, e.g. users.preferences)")
            colls = sorted(set(named) | {f.collection for f in found})
            classes = sorted(set(classes_for(self.policy, places)) | {f.data_class for f in found if f.data_class})
            inc = Incident(title=title.strip(), description=description, source=source, source_kind=source_kind,
                           database=database or (found[0].database if found else None), status="open",
                           severity=level_for(self.policy, classes), severity_manual=False, data_classes=classes,
                           collections=colls, places=places, drill=drill, duplicate_of=None,
                           backup_ids=[], restore_ids=[], roles={}, escalated_to=[], fired=[],
                           scope={}, read_only=False, paused_features=[], opened_at=at,
                           issue_started_at=utc(issue_started_at), detected_at=utc(detected_at) or at,
                           contributing_factors=[], lessons=[], action_items=[], timeline_head="", timeline_count=0)
            s.add(inc)
            s.flush()
            for phase_id, item_id, owner in phases.checklist_rows(self.policy):
                s.add(ChecklistState(incident_id=inc.id, phase_id=phase_id, item_id=item_id, owner=owner))
            ch = Change(s, inc, at, actor or SYSTEM)
            self._record(ch, "opened", title=inc.title, source=source, source_kind=source_kind, severity=inc.severity,
                         data_classes=classes, collections=colls, places=places, description=description,
                         drill=drill or None)
            if found:
                self._link(ch, found)
            self._notify(ch, "opened", f"opened: {inc.title}",
                         f"Opened from {source}{' (' + source_kind + ')' if source_kind else ''}. "
                         f"{self._scope_line(inc)}", pagerduty="trigger")
            self._escalate_by_trigger(ch, "opened", reason="incident opened")
        self._deliver(ch.outbox, at)
        return self.get(inc.id)

    def report(self, kind: str, title: str, description: str = "", collections: list[str] | None = None,
               reporter: str | None = None, at: datetime | None = None, finding_ids: list[int] | None = None,
               database: str | None = None, drill: bool = False) -> dict:
        """A user, support or internal report (or an alert from elsewhere) opens an incident;
        ``finding_ids`` are linked to it (never dropped)."""
        if kind not in intake.REPORT_KINDS:
            raise FluxaError(f"unknown report kind {kind!r}", f"one of: {', '.join(intake.REPORT_KINDS)}")
        return self.open(title, collections, "report", kind, description, finding_ids, database, at=at,
                         actor=reporter, drill=drill)

    def system_event(self, kind: str, title: str | None = None, description: str = "",
                     collections: list[str] | None = None, at: datetime | None = None,
                     finding_ids: list[int] | None = None, database: str | None = None, drill: bool = False) -> dict:
        """A system event (failed migration, incomplete import/export, storage, replication or sync
        failure) opens an incident; ``finding_ids`` are linked to it."""
        if kind not in intake.SYSTEM_EVENTS:
            raise FluxaError(f"unknown system event {kind!r}", f"one of: {', '.join(intake.SYSTEM_EVENTS)}")
        return self.open(title or intake.SYSTEM_EVENTS[kind], collections, "event", kind, description, finding_ids,
                         database, at=at, drill=drill)

    def intake(self, database: str | None = None, at: datetime | None = None, drill: bool = False) -> dict:
        """Open or join incidents for the open findings of the last complete check run (a live
        incident of the same database, or one with no database yet such as a report, with the
        same data class joins; ``drill``: the incidents it opens are drills)."""
        at = utc(at) or now()
        timetravel.check(at, drill, "take findings in")
        with self.store.session() as s:
            run = intake.last_run(s, database)
            if run is None:
                raise FluxaError("no complete check run to take findings from", "run `fluxa-integrity check run` first")
            run_id, ids = run.id, [f.id for f in intake.open_findings_of(s, run)]
        return {"run_id": run_id, **self.take_in(ids, at=at, drill=drill)}

    def take_in(self, finding_ids: list[int], at: datetime | None = None, drill: bool = False,
                source_kind: str = "check") -> dict:
        """The intake's grouping and dedup for these findings: one already on an incident that is
        not closed is skipped (a finding is its fingerprint: seen again, it is the same problem);
        one whose data class (unclassified: collection) is under a live incident of its database
        joins it; the rest open one incident per database and data class (or collection)."""
        at = utc(at) or now()
        result = {"opened": [], "attached": {}, "skipped": []}
        with self.store.session() as s:
            found = self._findings(s, finding_ids)
            taken = intake.linked_elsewhere(s, [f.id for f in found])
            result["skipped"] = [f.id for f in found if f.id in taken]
            groups: dict[tuple, list[Finding]] = {}
            for f in found:
                if f.id in taken:
                    continue
                target = intake.attach_target(s, f, drill)
                if target is not None:
                    ids = result["attached"].setdefault(target.id, [])
                    ids.append(f.id)
                else:
                    groups.setdefault((f.database, intake.group_key(f)), []).append(f)
            groups = {k: [(f.id, f.data_class, f.collection, f.rule_id, f.opened_at) for f in fs]
                      for k, fs in groups.items()}
        for inc_id, ids in result["attached"].items():
            self.attach_findings(inc_id, ids, at=at)
        for (db, _), fs in groups.items():
            dc = fs[0][1]
            what = self.policy.data_class(dc).title if dc else fs[0][2]
            rules = ", ".join(sorted({f[3] for f in fs}))
            title = f"{what}: {len(fs)} integrity finding{'s' if len(fs) > 1 else ''} ({rules})"
            opened = self.open(title[:300], source="finding", source_kind=source_kind, finding_ids=[f[0] for f in fs],
                               database=db, detected_at=min(utc(f[4]) for f in fs), at=at, drill=drill)
            result["opened"].append(opened["id"])
        return result

    def attach_findings(self, incident_id: int, finding_ids: list[int], at: datetime | None = None,
                        actor: str | None = None) -> dict:
        """Link findings (each must exist, and not be on another live incident) to an incident
        that is not closed."""
        if not finding_ids:
            raise FluxaError("nothing to attach", "pass --finding ID (repeatable)")
        with self._change(incident_id, at, actor) as ch:
            if ch.inc.status == "closed":
                raise FluxaError(f"incident {ch.inc.id} is closed", "attach the findings to a live incident")
            found = self._findings(ch.s, finding_ids)
            self._not_linked_elsewhere(ch.s, found, ch.inc.id)
            self._link(ch, found)
        return self.get(incident_id)

    def _not_linked_elsewhere(self, s: Session, found: list[Finding], incident_id: int | None) -> None:
        """One live incident per finding: refuse a finding already on another incident that is
        not closed, and say how to bring the two together."""
        for f in found:
            other = intake.incident_of(s, f.id, exclude=incident_id)
            if other is not None:
                into = incident_id if incident_id is not None else other
                raise FluxaError(f"finding {f.id} is already on incident {other}",
                                 f"merge the incidents instead: `fluxa-integrity incident merge {into} "
                                 f"{other if into != other else 'OTHER'}`")

    def _findings(self, s: Session, ids: list[int]) -> list[Finding]:
        out = []
        for fid in ids:
            f = s.get(Finding, int(fid))
            if f is None:
                raise FluxaError(f"no finding {fid}", "list them with `fluxa-integrity check findings`")
            out.append(f)
        return out

    def _link(self, ch: Change, found: list[Finding]) -> None:
        inc, s = ch.inc, ch.s
        have = {r for r in s.scalars(select(IncidentFinding.finding_id).where(IncidentFinding.incident_id == inc.id))}
        new = [f for f in found if f.id not in have]
        for f in new:
            s.add(IncidentFinding(incident_id=inc.id, finding_id=f.id, fingerprint=f.fingerprint, linked_at=ch.at))
        s.flush()
        if not new:
            return
        inc.collections = sorted(set(inc.collections or []) | {f.collection for f in new})
        inc.database = inc.database or new[0].database
        linked = intake.linked_findings(s, inc.id)
        inc.scope = scope_from(linked, intake.scanned_docs(s, linked))
        starts = [utc(f.first_doc_time) for f in linked if f.first_doc_time]
        if starts and inc.issue_started_at is None:
            inc.issue_started_at = min(starts)
        self._record(ch, "findings_linked", finding_ids=[f.id for f in new],
                     fingerprints=[f.fingerprint for f in new], rules=[f.rule_id for f in new], scope=inc.scope)
        self._reclassify(ch, {f.data_class for f in new if f.data_class}, "a linked finding affects critical data")

    def _reclassify(self, ch: Change, more: set[str], reason: str) -> None:
        """Add classes (the findings' own, field-aware ones, and the declared places': a preferences
        finding in users must not pull in the class of all of users) and raise the severity they
        call for, unless it was set by hand."""
        inc = ch.inc
        declared = inc.places if inc.places is not None else inc.collections
        inc.data_classes = sorted(set(inc.data_classes or []) | more | set(classes_for(self.policy, declared or [])))
        wanted = level_for(self.policy, inc.data_classes)
        if not inc.severity_manual and rank(self.policy, wanted) < rank(self.policy, inc.severity):
            old, inc.severity = inc.severity, wanted
            self._record(ch, "severity_changed", **{"from": old, "to": wanted, "reason": reason})
            if inc.timeline_count > 2:  # not while opening: the open message carries the severity
                self._notify(ch, "severity", f"severity raised {old} -> {wanted}",
                             reason[:1].upper() + reason[1:] + ".")

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
            if status == "closed" and enforced(inc):
                # the application reads the flags of incidents that are not closed: lift first, or
                # closing would leave its flags document naming a closed incident
                raise FluxaError(f"incident {inc.id} still contains {inc.containment.get('database')}: "
                                 f"read-only {', '.join(read_only_of(inc)) or '-'}, paused "
                                 f"{', '.join(inc.paused_features or []) or '-'}",
                                 f"lift it first (phase 5): `fluxa-integrity incident lift {inc.id}`")
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

    def link(self, incident_id: int, backups: list[str] | None = None, restores: list[str] | None = None,
             recovery_point: datetime | None = None, issue_started_at: datetime | None = None,
             at: datetime | None = None, actor: str | None = None) -> dict:
        """Link backups (id or unique prefix) and restores (restore run or promotion id), each of
        which must exist, and set the recovery point and the issue start used by the postmortem."""
        with self._change(incident_id, at, actor) as ch:
            inc = ch.inc
            backups, restores = refs.backups(ch.s, backups or []), refs.restores(ch.s, restores or [])
            inc.backup_ids = sorted(set(inc.backup_ids or []) | set(backups))
            inc.restore_ids = sorted(set(inc.restore_ids or []) | set(restores))
            if recovery_point is not None:
                inc.recovery_point = utc(recovery_point)
            if issue_started_at is not None:
                inc.issue_started_at = utc(issue_started_at)
            self._record(ch, "linked", backups=backups, restores=restores, recovery_point=recovery_point,
                         issue_started_at=issue_started_at)
        return self.get(incident_id)

    # -- notifications ----------------------------------------------------------------------

    def retry_notifications(self, at: datetime | None = None, incident_id: int | None = None) -> dict:
        """Deliver every pending notification now, whatever its schedule (of one incident, which
        must exist, or of all)."""
        at = utc(at) or now()
        drill = self.get(incident_id)["drill"] if incident_id is not None else False
        timetravel.check(at, drill, "deliver notifications", incident_id)
        return self._deliver(notifications.pending_ids(self.store, None, incident_id), at)

    def notifications(self, incident_id: int) -> list[dict]:
        with self.store.session() as s:
            rows = s.scalars(select(Notification).where(Notification.incident_id == incident_id)
                             .order_by(Notification.id))
            return [{"id": r.id, "channel": r.channel, "kind": r.kind, "subject": r.subject, "status": r.status,
                     "attempts": r.attempts, "last_error": r.last_error, "sent_at": iso(r.sent_at),
                     "next_attempt_at": iso(r.next_attempt_at)} for r in rows]

    # -- reading ----------------------------------------------------------------------------

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
                "paused_features": inc.paused_features, "containment": inc.containment or {},
                "drill": bool(inc.drill), "duplicate_of": inc.duplicate_of,
                "places": inc.places if inc.places is not None else inc.collections,
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
        """Read-only mode and paused features over every database, from the state store (the
        application reads its flags document instead: docs/incidents.md, containment contract)."""
        with self.store.session() as s:
            incs = s.scalars(select(Incident).where(Incident.status != "closed", Incident.read_only.is_(True))).all()
            return {"read_only": bool(incs), "incidents": [i.id for i in incs],
                    "collections": sorted({c for i in incs for c in read_only_of(i)}),
                    "paused_features": sorted({f for i in s.scalars(select(Incident).where(Incident.status != "closed"))
                                               for f in i.paused_features or []})}
