"""Intake (S13): what opens an incident, and where a new finding goes.

Findings from the last complete check run open incidents or join one (policy, not code, says
which data classes exist; the grouping is a decision documented in docs/incidents.md):
- dedup: a finding already linked to an incident that is not closed is skipped (its fingerprint
  identifies it across runs, so a finding seen again is the same finding);
- a finding whose data class is already under a live incident on the same database attaches to it
  (unclassified findings: same collection); failing that, a live incident with no database yet
  (a user or support report) of that class takes it, and its database is set from the finding;
  either way only an incident of the same kind (``intake --drill`` joins drills, a real intake
  real incidents);
- the rest open one incident per data class (per collection when unclassified).
Reports and system events open an incident each.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ..store.incident_models import Incident, IncidentFinding
from ..store.models import CheckRun, Finding
from .lifecycle import LIVE

REPORT_KINDS = {"user": "User report", "support": "Customer support report", "internal": "Internal detection",
                "alert": "Automated alert"}
SYSTEM_EVENTS = {"failed_migration": "Failed database migration", "incomplete_import": "Incomplete data import",
                 "incomplete_export": "Incomplete data export", "storage_failure": "Storage system failure",
                 "replication_failure": "Replication failure", "sync_failure": "Synchronization failure",
                 # raised by `serve` when its jobs cannot reach the application database (issue 11)
                 "database_unreachable": "Database unreachable",
                 # raised by `serve`'s rpo-monitor when a data class is past its RPO (service/rpo_breach.py)
                 "rpo_breached": "Recovery point objective breached"}


def last_run(s: Session, database: str | None = None) -> CheckRun | None:
    q = select(CheckRun).where(CheckRun.status == "complete").order_by(CheckRun.id.desc()).limit(1)
    if database:
        q = q.where(CheckRun.database == database)
    return s.scalar(q)


def open_findings_of(s: Session, run: CheckRun) -> list[Finding]:
    return list(s.scalars(select(Finding).options(selectinload(Finding.sightings))
                          .where(Finding.status == "open", Finding.last_run_id == run.id,
                                 Finding.database == run.database).order_by(Finding.id)))


def linked_elsewhere(s: Session, finding_ids: list[int]) -> set[int]:
    """Findings already linked to an incident that is not closed."""
    if not finding_ids:
        return set()
    rows = s.execute(select(IncidentFinding.finding_id).join(Incident, Incident.id == IncidentFinding.incident_id)
                     .where(IncidentFinding.finding_id.in_(finding_ids), Incident.status != "closed")).all()
    return {r[0] for r in rows}


def group_key(f: Finding) -> str:
    return f"class:{f.data_class}" if f.data_class else f"collection:{f.collection}"


def incident_of(s: Session, finding_id: int, exclude: int | None = None) -> int | None:
    """The incident, not closed, that a finding is linked to (other than ``exclude``)."""
    q = (select(IncidentFinding.incident_id).join(Incident, Incident.id == IncidentFinding.incident_id)
         .where(IncidentFinding.finding_id == finding_id, Incident.status != "closed"))
    if exclude is not None:
        q = q.where(IncidentFinding.incident_id != exclude)
    return s.scalar(q.order_by(IncidentFinding.incident_id).limit(1))


def attach_target(s: Session, f: Finding, drill: bool = False) -> Incident | None:
    """The live incident a finding joins: one on the same database first, else one that names no
    database yet (a report or event from a person, who seldom knows the database name). Only an
    incident of the same kind: a drill never takes real findings, nor a real incident drill ones."""
    live = s.scalars(select(Incident).where(Incident.status.in_(LIVE), Incident.duplicate_of.is_(None),
                                            Incident.drill.is_(bool(drill)),
                                            (Incident.database == f.database) | Incident.database.is_(None))
                     .order_by(Incident.database.is_(None), Incident.id)).all()
    for inc in live:
        if (f.data_class and f.data_class in (inc.data_classes or [])) or \
           (not f.data_class and f.collection in (inc.collections or [])):
            return inc
    return None


def linked_findings(s: Session, incident_id: int) -> list[Finding]:
    return list(s.scalars(select(Finding).options(selectinload(Finding.sightings))
                          .join(IncidentFinding, IncidentFinding.finding_id == Finding.id)
                          .where(IncidentFinding.incident_id == incident_id).order_by(Finding.id)))


def scanned_docs(s: Session, findings: list[Finding]) -> dict[str, int]:
    """Documents scanned per collection by the latest run that saw these findings (for extent)."""
    run_ids = {f.last_run_id for f in findings}
    if not run_ids:
        return {}
    run = s.get(CheckRun, max(run_ids))
    return dict((run.stats or {}).get("docs") or {}) if run else {}
