"""Bringing duplicate incidents together, for ``Incidents``: ``merge(into, others)`` moves each
other incident's findings, backups, restores, places and containment (read-only mode, paused
features), a more severe hand-set severity and the earlier issue start / detection times onto
``into`` and closes it as a duplicate
(``duplicate_of``), in one transaction; ``incident close ID --duplicate-of OTHER`` is the same
thing seen from the duplicate. One support ticket seen by several people is one incident.

A duplicate is closed from any status without a root cause of its own (the root cause is the
surviving incident's); its clocks stop being measured and PagerDuty resolves its page. Both
timelines record the merge. A mixin: ``Incidents`` in api.py supplies ``store``, ``policy``,
``_get``, ``_link``, ``_record``, ``_notify``, ``_deliver`` and ``get``.
Failure: FluxaError (nothing written) when an id does not exist, an incident would be merged into
itself, either side is closed, ``into`` is itself a duplicate, or a drill would be merged with a
real incident (either way).
"""

from __future__ import annotations

from datetime import datetime

from ..errors import FluxaError
from . import intake, timetravel
from .containment import read_only_of
from .change import SYSTEM, Change
from .severity import rank
from .timeutil import now, utc


class DuplicatesMixin:
    def merge(self, into_id: int, other_ids: list[int], at: datetime | None = None,
              actor: str | None = None, reason: str | None = None) -> dict:
        """Close each of ``other_ids`` as a duplicate of ``into_id``, carrying their findings,
        backups, restores, places, containment, hand-set severity and earliest times over."""
        at = utc(at) or now()
        others = list(dict.fromkeys(int(o) for o in other_ids))
        if not others:
            raise FluxaError("nothing to merge", "name the duplicate incidents after the one that stays")
        if int(into_id) in others:
            raise FluxaError(f"incident {into_id} cannot be a duplicate of itself")
        changes: list[Change] = []
        with self.store.session() as s:
            # lock in id order so two merges in opposite directions cannot deadlock
            locked = {i: self._get(s, i) for i in sorted([int(into_id), *others])}
            into = locked[int(into_id)]
            if into.status == "closed":
                raise FluxaError(f"incident {into.id} is closed", "merge into a live incident")
            if into.duplicate_of is not None:
                raise FluxaError(f"incident {into.id} is itself a duplicate of {into.duplicate_of}",
                                 f"merge into incident {into.duplicate_of}")
            for inc in (into, *(locked[o] for o in others)):
                timetravel.check(at, inc.drill, "merge", inc.id)
                # a drill's simulated record must never absorb (or be absorbed by) a real one
                if bool(inc.drill) != bool(into.drill):
                    kinds = ("a drill", "a real incident")
                    a, b = kinds if into.drill else kinds[::-1]
                    raise FluxaError(f"incident {inc.id} is {b}, incident {into.id} {a}: they cannot be merged",
                                     "merge drills with drills and real incidents with real ones")
            main = Change(s, into, at, actor or SYSTEM)
            changes.append(main)
            for oid in others:
                dup = locked[oid]
                if dup.status == "closed":
                    raise FluxaError(f"incident {dup.id} is already closed",
                                     "only a live or resolved incident can be closed as a duplicate")
                found = intake.linked_findings(s, dup.id)
                if found:
                    self._link(main, found)
                into.backup_ids = sorted(set(into.backup_ids or []) | set(dup.backup_ids or []))
                into.restore_ids = sorted(set(into.restore_ids or []) | set(dup.restore_ids or []))
                declared = into.places if into.places is not None else into.collections
                into.places = sorted(set(declared or []) | set(dup.places if dup.places is not None
                                                              else dup.collections or []))
                into.collections = sorted(set(into.collections or []) | set(dup.collections or []))
                kept = self._take_over(into, dup)
                self._record(main, "merged", duplicate=dup.id, title=dup.title, source=dup.source,
                             source_kind=dup.source_kind, finding_ids=[f.id for f in found], reason=reason, **kept)
                ch = Change(s, dup, at, actor or SYSTEM)
                changes.append(ch)
                old, dup.status, dup.closed_at, dup.duplicate_of = dup.status, "closed", at, into.id
                dup.resolution = f"duplicate of incident {into.id}"
                self._record(ch, "status", **{"from": old, "to": "closed", "duplicate_of": into.id,
                                              "note": reason or f"duplicate of incident {into.id}"})
                self._notify(ch, "status", f"closed as a duplicate of incident {into.id}",
                             f"Follow incident {into.id} \"{into.title}\".", pagerduty="resolve")
            self._reclassify(main, set(), "a merged duplicate affects critical data")
            self._notify(main, "merged", f"merged incident(s) {', '.join(map(str, others))} into this one",
                         reason or "")
        for ch in changes:
            self._deliver(ch.outbox, at)
        return self.get(int(into_id))

    def _take_over(self, into, dup) -> dict:
        """What the survivor keeps of the duplicate besides findings and backups: its containment
        (the app honours read-only mode and paused features of incidents that are not closed, so
        closing the duplicate would lift them silently), a severity set by hand when it is more
        severe, and the earlier issue start and detection times. Returns what changed, for the
        ``merged`` row."""
        kept: dict = {}
        held, mine = read_only_of(dup), read_only_of(into)  # collections held read-only (containment.py)
        if dup.read_only and not into.read_only:
            into.read_only = kept["read_only"] = True
        if held and not set(held) <= set(mine):
            state = dict(into.containment or {})
            state["read_only_collections"] = sorted(set(mine) | set(held))
            state.setdefault("database", (dup.containment or {}).get("database"))
            if (dup.containment or {}).get("app_user") and not state.get("app_user"):
                state["app_user"] = dup.containment["app_user"]  # the roles to give back on lift
            into.containment = kept["containment"] = state
        paused = set(dup.paused_features or []) - set(into.paused_features or [])
        if paused:
            into.paused_features = sorted(set(into.paused_features or []) | paused)
            kept["paused_features"] = sorted(paused)
        if dup.severity_manual and rank(self.policy, dup.severity) < rank(self.policy, into.severity):
            kept["severity"] = {"from": into.severity, "to": dup.severity, "manual": True}
            into.severity, into.severity_manual = dup.severity, True
        for name in ("issue_started_at", "detected_at"):
            mine, theirs = utc(getattr(into, name)), utc(getattr(dup, name))
            if theirs is not None and (mine is None or theirs < mine):
                setattr(into, name, theirs)
                kept[name] = theirs
        return kept
