"""The console's trends page, ``/console/trends``: plots where people would rather look than read.

Four kinds of chart over a window (``?hours=``, 24 by default, up to 30 days) ending now, for the
configured application database (``FLUXA_DB``, ``config.yaml``'s ``db``, else ``fluxa``; ``?db=``):

- RPO age per data class against its RPO (backup/objectives.py ``rpo_series``: the age of the newest
  recoverable point, exact at its breakpoints, the value ``rpo status`` gives at each moment);
- the archiver's lag as each oplog slice closed (backup/archive_catalog.py ``slice_lags``);
- findings per check run, stacked by category (checks/history.py ``findings_per_run``);
- per monitored collection the interval values of one volume metric (``?metric=`` inserts, updates,
  deletes, count) with the baseline band they were judged against (monitors/series.py).

Each chart is SVG drawn here (web/plots.py) with a sentence saying what it shows and the latest
value, and a table of the same numbers under it. Any signed-in role may read it (viewer and up);
nothing here writes. The functions are the domain's: no SQL in web/.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Literal, Optional

from fastapi import APIRouter, Query, Request

from ..errors import FluxaError
from .console import session
from .pages import duration, page
from .plots import Band, Line, bar_chart, fmt_value, time_chart

router = APIRouter(include_in_schema=False)
UTC = timezone.utc
Metric = Literal["inserts", "updates", "deletes", "count"]
ANOMALY = "anomaly"  # css of a point the monitor judged out of its band


def app_db(db: str | None) -> str:
    from ..config import DEFAULT_DB, load_config_file

    return db or os.environ.get("FLUXA_DB") or load_config_file().get("db") or DEFAULT_DB


def over_target(points: list[tuple], target: float) -> tuple[float, float]:
    """(seconds of the series over ``target``, seconds with no recoverable point at all): between
    two breakpoints the age grows a second a second, so a segment is over from where it crosses."""
    over = none = 0.0
    for (ta, a), (tb, b) in zip(points, points[1:]):
        span = (tb - ta).total_seconds()
        if span <= 0:
            continue
        if a is None:
            none += span
        elif b is not None:
            over += min(max(b - target, 0.0), span)
    return over, none


def span_text(since: datetime, until: datetime) -> str:
    hours = round((until - since).total_seconds() / 3600)
    return f"{hours} h" if hours < 48 or hours % 24 else f"{hours // 24} days"


def _rpo_charts(store, policy, db: str, since: datetime, until: datetime, titles: dict) -> list[dict]:
    from ..backup.objectives import rpo_series

    out = []
    for s in rpo_series(store, policy, db, since, until):
        title = titles.get(s["data_class"], s["data_class"])
        latest, target = s["latest"], s["rpo_seconds"]
        over, none = over_target(s["points"], target)
        state = ("no recoverable point" if latest is None else
                 f"over its RPO by {duration(latest - target)}" if latest > target else "within its RPO")
        text = (f"{title}: age of the newest recoverable point over the last {span_text(since, until)}, "
                f"against its RPO of {s['rpo']}. Now {fmt_value(latest, 'duration')} ({state}). "
                + (f"Over the RPO for {duration(over)} of the window" if over else "Never over the RPO in the window")
                + (f"; no recoverable point at all for {duration(none)}." if none else "."))
        pts = [(t, v, "over" if v is not None and v > target else "") for t, v in s["points"]]
        svg = time_chart(title=f"RPO age, {title}", desc=text, lines=[Line("age of the newest recoverable point", pts)],
                         t0=since, t1=until, target=target, target_label=f"RPO {s['rpo']}", y_format="duration",
                         width=560, height=210)
        out.append({**s, "title": title, "text": text, "svg": svg, "over_seconds": over, "none_seconds": none,
                    "bad": latest is None or latest > target})
    return out


def _lag_chart(store, since: datetime, until: datetime) -> dict:
    from ..backup.archive_catalog import slice_lags

    rows = slice_lags(store, since, until)
    span = span_text(since, until)
    if rows:
        last = rows[-1]
        worst = max(rows, key=lambda r: r["lag_seconds"])
        text = (f"Archiver lag as each oplog slice closed (its close time minus its newest entry's time), "
                f"{_n(len(rows), 'slice')} in the last {span}. Latest {fmt_value(last['lag_seconds'], 'duration')} at "
                f"{last['at']:%H:%M} UTC; the worst {fmt_value(worst['lag_seconds'], 'duration')} at {worst['at']:%H:%M} UTC.")
    else:
        text = f"No oplog slice was archived in the last {span}: the archiver is not running, or nothing was written."
    svg = time_chart(title="Archiver lag per slice", desc=text, t0=since, t1=until, y_format="duration", width=1100,
                     lines=[Line("lag when the slice closed", [(r["at"], r["lag_seconds"]) for r in rows], "s1")])
    return {"rows": rows, "text": text, "svg": svg}


def _runs_chart(store, db: str, since: datetime, until: datetime) -> dict:
    from ..checks.history import findings_per_run

    runs = findings_per_run(store, db, since, until)
    cats = sorted({c for r in runs for c in r["by_category"]})
    span = span_text(since, until)
    if runs:
        last = runs[-1]
        parts = ", ".join(f"{c} {v['findings']}" for c, v in last["by_category"].items()) or "none"
        text = (f"Open findings per check run by category, {_n(len(runs), 'run')} of {db} in the last {span}. The latest, "
                f"run {last['run_id']} at {last['started_at']:%H:%M} UTC, saw {_n(last['findings'], 'finding')} over "
                f"{_n(last['documents'], 'document')} ({parts}).")
    else:
        text = f"No complete check run of {db} in the last {span}."
    bars = [(r["started_at"], f"#{r['run_id']}", {c: v["findings"] for c, v in r["by_category"].items()}) for r in runs]
    svg = bar_chart(title="Findings per check run", desc=text, bars=bars, categories=cats, width=1100)
    return {"runs": runs, "categories": cats, "text": text, "svg": svg}


def _anomaly_charts(store, policy, db: str, since: datetime, until: datetime, metric: str) -> list[dict]:
    from ..monitors.series import baseline_series

    out = []
    for s in baseline_series(store, db, policy, since, until, metric):
        pts = s["points"]
        last = pts[-1]
        flagged = [p for p in pts if p["direction"]]
        what = "change of the document count the oplog does not explain" if metric == "count" else metric
        low = (lambda v: v) if metric == "count" else (lambda v: None if v is None else max(v, 0.0))  # counts are >= 0
        band = (f"expected {fmt_value(last['median'])}, band {fmt_value(low(last['low']))} to {fmt_value(last['high'])}"
                if last["median"] is not None else "no baseline yet (too little history)" if last["complete"]
                else "the interval was incomplete and not judged")
        text = (f"{s['collection']}: {what} per {policy.monitors.interval} interval, {_n(len(pts), 'interval')} in the "
                f"last {span_text(since, until)}, with the baseline band each was judged against. Latest "
                f"({last['start']:%H:%M} UTC): {fmt_value(last['value'])}, {band}"
                f"{', a ' + last['direction'] if last['direction'] else ''}. "
                f"{_n(len(flagged), 'interval')} out of the band.")
        svg = time_chart(
            title=f"{s['collection']} {what}", desc=text, t0=since, t1=until,
            lines=[Line(what, [(p["start"], p["value"], ANOMALY if p["direction"] else "") for p in pts], "s2")],
            band=Band("baseline band", [(p["start"], low(p["low"]), p["high"]) for p in pts],
                      mids=[(p["start"], p["median"]) for p in pts]), width=560, height=210)
        out.append({**s, "text": text, "svg": svg, "flagged": len(flagged),
                    "banded": sum(p["median"] is not None for p in pts)})
    # the collections with intervals out of their band first, then those with a baseline at all
    return sorted(out, key=lambda c: (-c["flagged"], -c["banded"], c["collection"]))


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _section(errors: list, name: str, build):
    """A section the catalog cannot build (a missing repository, a broken store row) says so; the
    others still draw."""
    try:
        return build()
    except (FluxaError, OSError) as exc:  # not a bug: those still fail the page (500, logged)
        errors.append(f"{name}: {getattr(exc, 'message', None) or exc}")
        return None


@router.get("/console/trends")
def trends(request: Request, hours: int = Query(24, ge=1, le=720, description="The window, in hours, ending now."),
           db: Optional[str] = Query(None), metric: Metric = Query("inserts")):
    who, csrf = session(request)
    store, policy = request.app.state.store, request.app.state.incidents.policy
    db = app_db(db)
    until = datetime.now(UTC)
    since = until - timedelta(hours=hours)
    titles = {d.name: d.title for d in policy.data_classes}
    errors: list[str] = []
    rpo = _section(errors, "RPO", lambda: _rpo_charts(store, policy, db, since, until, titles)) or []
    lag = _section(errors, "archiver lag", lambda: _lag_chart(store, since, until))
    runs = _section(errors, "check runs", lambda: _runs_chart(store, db, since, until))
    anomalies = _section(errors, "monitors", lambda: _anomaly_charts(store, policy, db, since, until, metric)) or []
    return page("trends.html", who=who, csrf=csrf, db=db, hours=hours, since=since, until=until, rpo=rpo, lag=lag,
                runs=runs, anomalies=anomalies, metric=metric, metrics=("inserts", "updates", "deletes", "count"),
                errors=errors, windows=(6, 24, 72, 168))
