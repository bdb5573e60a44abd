"""Automatic incidents (issue 11, item 5; S13): findings past the policy's threshold open an
incident, or join the live one of the same database and data class, without a person.

Shape: ``AutoIncidents(store, policy, db, holder, ...)``; ``sweep()`` takes the state store's lease
``auto-incidents`` (so two serves never open two incidents for one finding), picks the
``candidates`` and hands them to ``Incidents.take_in`` (incidents/api.py: the intake's dedup by
fingerprint and grouping by database and data class, or collection when unclassified), and
returns ``{"opened": [...], "attached": {incident: [findings]}, "skipped": [...]}`` or None when
there was nothing to do (or another serve holds the lease). ``start()`` runs a thread that sweeps
every SWEEP_EVERY_S real seconds and at once when ``poke()`` is called - after each check or
monitor job, and after each batch continuous validation records - so a bad write is an incident
within a poll of being a finding. The notification of an opened incident is the engine's own
(``Incidents.open``: PagerDuty trigger, the policy's escalation triggers); reminders, escalation
and retries follow from the clocks in the ``incident-tick`` job.

A candidate is an open finding of the database that ``policy.auto_incidents`` wants (criticality
of its data class, unclassified ones as ``unclassified_as``; at least ``min_count`` documents) and
that no incident handles yet:
- a finding linked to an incident that is not closed is that incident's (resolved ones included:
  their enhanced monitoring is watching);
- a finding linked to a closed incident is re-paged only when a run that *started after* the
  incident closed (or continuous validation, after it closed) saw it again: the problem is back, or
  was never gone. A run that read the data before the close does not count.
A finding whose data a recovery plan repaired is closed by the plan's verification (recovery/
verify.py records a check run that no longer sees it): a closed finding is never a candidate, so
it is not re-paged; only a later sighting reopens it.

Failure: a sweep that fails (the store busy, a bad finding) is logged and retried at the next
poll; it never stops the service. Findings are never dropped: a failed sweep leaves them
candidates.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable

from sqlalchemy import func, select

from ..policy.models import Policy
from ..store import Store
from ..store.incident_models import Incident, IncidentFinding
from ..store.models import CheckRun, Finding, Sighting
from . import leases
from .leases import aware

LEASE = "auto-incidents"
SWEEP_EVERY_S = 2.0


def candidates(store: Store, policy: Policy, db: str) -> list[int]:
    """Open findings of ``db`` past the threshold that no incident handles yet (see above)."""
    rule = policy.auto_incidents
    with store.session() as s:
        found = [f for f in s.scalars(select(Finding).where(Finding.database == db, Finding.status == "open")
                                      .order_by(Finding.id)) if rule.wants(f.criticality, f.count)]
        if not found:
            return []
        links = s.execute(select(IncidentFinding.finding_id, Incident.status, Incident.closed_at)
                          .join(Incident, Incident.id == IncidentFinding.incident_id)
                          .where(IncidentFinding.finding_id.in_([f.id for f in found]))).all()
        live, closed = set(), {}
        for fid, status, closed_at in links:
            if status != "closed":
                live.add(fid)
            else:
                t = aware(closed_at)
                closed[fid] = max(closed.get(fid) or t, t) if t else closed.get(fid)
        out = []
        for f in found:
            if f.id in live:
                continue
            since = closed.get(f.id)
            if f.id in closed and (since is None or not _seen_after(s, f.id, since)):
                continue
            out.append(f.id)
        return out


def _seen_after(s, finding_id: int, t: datetime) -> bool:
    """Whether a run that started after ``t`` (or continuous validation after ``t``) saw the finding."""
    fresh = ((CheckRun.started_at > t) | ((CheckRun.status == "continuous") & (Sighting.seen_at > t)))
    return bool(s.scalar(select(func.count()).select_from(Sighting).join(CheckRun, CheckRun.id == Sighting.run_id)
                         .where(Sighting.finding_id == finding_id, fresh)))


class AutoIncidents:
    def __init__(self, store: Store, policy: Policy, db: str, holder: str, *, lease_ttl: float = 30.0,
                 log: Callable[[str, str], None] = lambda level, msg: None, api_factory: Callable | None = None):
        self.store, self.policy, self.db, self.holder = store, policy, db, holder
        self.lease_ttl, self.log = lease_ttl, log
        self.api_factory = api_factory or _api
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_result: list[Callable[[dict], None]] = []  # metrics, tests

    def sweep(self) -> dict | None:
        if not self.policy.auto_incidents.enabled:
            return None
        with self._lock:
            if not candidates(self.store, self.policy, self.db):
                return None
            got = leases.take(self.store, LEASE, self.holder, self.lease_ttl)
            if not got.ok:
                return None
            try:
                ids = candidates(self.store, self.policy, self.db)  # again, under the lease
                if not ids:
                    return None
                api = self.api_factory(self.store, self.policy)
                res = api.take_in(ids)
            finally:
                leases.release(self.store, LEASE, self.holder)
        parts = [f"opened incident {', '.join(map(str, res['opened']))}"] if res["opened"] else []
        parts += [f"findings {', '.join(map(str, v))} joined incident {k}" for k, v in res["attached"].items()]
        if parts:
            self.log("warning", "auto-incidents: " + "; ".join(parts))
        for fn in self.on_result:
            fn(res)
        return res

    def poke(self, *_args) -> None:
        """Sweep now (a job or a validation batch just recorded findings)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="auto-incidents", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(SWEEP_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next poll retries; the findings stay candidates
                self.log("warning", f"auto-incidents: sweep failed: {type(exc).__name__}: {exc}")


def _api(store: Store, policy: Policy):
    from ..comms.notify import load_channels, retry_settings
    from ..home import load_config_file
    from ..incidents.api import Incidents

    cfg = load_config_file()
    return Incidents(store, policy, load_channels(cfg), retry_settings(cfg))
