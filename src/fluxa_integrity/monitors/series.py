"""The anomaly series of a monitored collection: each stored interval's value of one volume
metric with the baseline it was judged against - for the console's plots (web/trends.py).

Shape: ``baseline_series`` returns one dict per collection, ``{collection, metric, points: [{start,
value, complete, median, low, high, direction, seasonal, n}]}``, oldest first. The baseline is not
stored with the interval rows: it is recomputed here by the same ``Judge`` the monitor run used,
over the same stored rows (every complete row of the training window before the interval), so the
band drawn is the band the value was judged against (``low``/``high`` = the median -/+
``max(z x scale, min_volume_change)``). An incomplete interval, or one with too little history, has
no band (``median`` None) and was never judged. A row re-measured later (`monitor run --start`)
replaces the one judged before it, and so does its part in the later intervals' baselines.
"""

from __future__ import annotations

from datetime import datetime

from ..policy.models import Policy
from ..store import Store
from .baseline import judge
from .runner import LOGS, VOLUME, Judge, load_history, unexplained

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
    judge_ = Judge(policy, database, {})
    # the stop rule (a zero under a history that never went below silence_min), where the policy has it
    stop = {"silence_min": m.silence_min} if hasattr(m, "silence_min") else {}
    out = []
    for coll in sorted(history):
        if coll == LOGS:
            continue
        rows = history[coll]
        points = []
        for r in rows:
            if r.start < since:
                continue
            value = get(r.metrics) if r.complete else None
            base = judge_._baseline(rows, r.start, get) if value is not None else None  # the run's own judging
            point = {"start": r.start, "value": None if value is None else float(value), "complete": r.complete,
                     "median": None, "low": None, "high": None, "direction": None, "seasonal": None, "n": 0}
            if base is not None:
                v = judge(float(value), base, m.z, m.min_volume_change, m.silence_min)
                point.update(median=base.median, low=base.median - v.threshold, high=base.median + v.threshold,
                             direction=v.direction, seasonal=base.seasonal, n=base.n)
            points.append(point)
        if points:
            out.append({"collection": coll, "metric": metric, "points": points})
    return out
