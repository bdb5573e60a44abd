"""The anomaly series of a monitored collection: each stored interval's value of one volume
metric with the baseline it was judged against - for the console's plots (web/trends.py).

Shape: ``baseline_series`` returns one dict per collection, ``{collection, metric, points: [{start,
value, complete, median, low, high, direction, seasonal, n}]}``, oldest first. The baseline is not
stored with the interval rows: it is recomputed here as the monitor run's ``Judge`` learned it
(``learn`` and ``judge`` of baseline.py, with the policy's parameters) over the same stored rows
(every complete row of the training window before the interval), so the band drawn is the band
the value was judged against (``low``/``high`` = the median -/+ ``max(z x scale,
min_volume_change)``). An incomplete interval, or one with too little history, has
no band (``median`` None) and was never judged. A row re-measured later (`monitor run --start`)
replaces the one judged before it, and so does its part in the later intervals' baselines.
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime

from ..policy.models import Policy
from ..store import Store
from .baseline import judge, learn
from .runner import LOGS, VOLUME, load_history, unexplained

METRICS = VOLUME + ("count",)


def baseline_series(store: Store, database: str, policy: Policy, since: datetime, until: datetime,
                    metric: str = "inserts") -> list[dict]:
    """Per monitored collection with rows from ``since`` to ``until``: its ``metric`` (inserts,
    updates, deletes, or count - the change of the document count the oplog does not explain) per
    interval, with the baseline's median and band."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
    m = policy.monitors
    history = load_history(store, database, since - m.training_delta, until)
    get = (lambda mt: mt.get(metric, 0)) if metric in VOLUME else unexplained
    out = []
    for coll in sorted(history):
        if coll == LOGS:
            continue
        rows = history[coll]
        base_of = _baselines(rows, get, m)
        points = []
        for r in rows:
            if r.start < since:
                continue
            value = get(r.metrics) if r.complete else None
            base = base_of(r.start) if value is not None else None
            point = {"start": r.start, "value": None if value is None else float(value), "complete": r.complete,
                     "median": None, "low": None, "high": None, "direction": None, "seasonal": None, "n": 0}
            if base is not None:
                v = judge(float(value), base, m.z, m.min_volume_change, m.silence_min)  # the run's stop rule too
                point.update(median=base.median, low=base.median - v.threshold, high=base.median + v.threshold,
                             direction=v.direction, seasonal=base.seasonal, n=base.n)
            points.append(point)
        if points:
            out.append({"collection": coll, "metric": metric, "points": points})
    return out


def _baselines(rows: list, get, m):
    """``at -> Baseline`` as ``Judge._baseline(rows, at, get)`` gives it, without its cost per
    point: ``learn`` is handed only the points it can use - those of the same hour of day in the
    training window and the newest ``max(recent_history, min_history)`` of it - instead of the
    whole window (4,032 rows for 14 days of 5 minutes, for each of a day's 288 points). Same
    answer: its history-length test, its seasonal test and its choice (the same-hour points, or
    the newest ``recent_history``) see the same points (tests/test_web_trends.py compares them)."""
    pts = [(r.start, float(v)) for r in rows if r.complete and (v := get(r.metrics)) is not None]
    starts = [t for t, _ in pts]
    by_hour: dict[int, list] = {}
    for p in pts:
        by_hour.setdefault(p[0].hour, []).append(p)
    hour_starts = {h: [t for t, _ in ps] for h, ps in by_hour.items()}
    newest, training = max(m.recent_history, m.min_history), m.training_delta

    def base_of(at: datetime):
        lo = at - training
        i, j = bisect_left(starts, lo), bisect_left(starts, at)
        hs, hp = hour_starts.get(at.hour, []), by_hour.get(at.hour, [])
        same = hp[bisect_left(hs, lo):bisect_left(hs, at)]
        use = sorted(set(same) | set(pts[max(i, j - newest):j]))
        return learn(use, at, min_history=m.min_history, seasonal_min_days=m.seasonal_min_days, kind="count",
                     sample=0, recent=m.recent_history)

    return base_of
