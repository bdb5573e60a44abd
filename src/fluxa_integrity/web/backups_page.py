"""The console's backups page, ``/console/backups``: what can be restored, and to when.

Read through the API's own route functions (reading.py), so the page shows exactly what
``/api/backups``, ``/api/restores``, ``/api/archive/coverage`` and ``/api/drills`` return, and
the dashboard's RPO/RTO rows (console.py ``_rpo``, backup/objectives.py): the backups with their
verification verdict and pin, the newest restores, the oplog archive's windows of continuous
coverage with each gap in red ("no point-in-time restore between A and B"), RPO and RTO per
data class, the drills kept. Any signed-in role (viewer and up); nothing here writes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from fastapi import APIRouter, Query, Request

from ..errors import FluxaError
from . import reading
from .console import _class_titles, _rpo, session
from .pages import page

router = APIRouter(include_in_schema=False)
UTC = timezone.utc
RESTORES = 20  # the newest restores drawn
BACKUPS = 200  # the newest backups drawn; the page says how many more there are


def ts_time(text: Optional[str]) -> Optional[datetime]:
    """An oplog position ``t:i`` as the UTC second it stands for."""
    if not text:
        return None
    return datetime.fromtimestamp(int(text.split(":")[0]), UTC)


def size_text(n: Optional[int]) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1024, as `du -h`)."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def gap_view(g: dict) -> dict:
    """A gap as a person reads it: from the last archived moment to the next one archived."""
    start = g.get("after_wall") or ts_time(g.get("after"))
    return {**g, "from_time": start, "to_time": ts_time(g.get("before"))}


@router.get("/console/backups")
def backups(request: Request, db: Optional[str] = Query(None, min_length=1, max_length=200)):
    who, csrf = session(request)
    errors: list[str] = []

    def section(name, build, empty):
        try:
            return build()
        except (FluxaError, OSError) as exc:  # a catalog problem says so; the other sections still draw
            errors.append(f"{name}: {getattr(exc, 'message', None) or exc}")
            return empty

    rows = section("backups", lambda: reading.list_backups(request, db, None, who), [])
    restores = section("restores", lambda: reading.list_restores(request, None, None, RESTORES, who), [])
    cov = section("oplog archive", lambda: reading.archive_coverage(request, who), {"windows": [], "gaps": []})
    drills = section("drills", lambda: reading.list_drills(who), [])
    return page("backups.html", who=who, csrf=csrf, db=db, backups=[{**b, "size_text": size_text(b["size"])} for b in rows[:BACKUPS]], more=max(len(rows) - BACKUPS, 0),
                restores=restores, windows=cov["windows"], gaps=[gap_view(g) for g in cov["gaps"]], drills=drills,
                rpo=_rpo(request, who), classes=_class_titles(request), errors=errors)
