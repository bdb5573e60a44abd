"""Anomaly monitors: false positives per 1,000 intervals on a clean generated load, and the
detection rate of injected spikes, drops, null surges, missing fields and type drift.

The load is monitors/synthetic.py's series from the generator's timeline (no server: documents are
placed in the interval of their creation time; updates are the conversation bumps and logins the
application does; a ``--diurnal`` daily rhythm thins documents by hour of day). Every interval of
every collection is judged against the intervals before it exactly as ``monitor run`` judges
(monitors/runner.Judge), with the default policy's settings unless told otherwise; the field
profile is learned from the first two days' written documents, as `monitor baseline --learn`
would on a live database. Detection: each trial injects one anomaly into one interval of
``messages`` (drawn after the first three days) and judges that interval alone against its clean
history; detected when the rule named for the anomaly fires.

    .venv/bin/python benchmarks/bench_anomaly.py                       # 2000 users, 30 days, 1h intervals
    .venv/bin/python benchmarks/bench_anomaly.py --diurnal 0.7 --no-seasonality
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fluxa_integrity.fluxa import model as fm  # noqa: E402
from fluxa_integrity.monitors.field_stats import field_metrics, profile_of  # noqa: E402
from fluxa_integrity.monitors.runner import Judge, Row  # noqa: E402
from fluxa_integrity.monitors.synthetic import clean_series  # noqa: E402
from fluxa_integrity.policy import default_policy  # noqa: E402
from fluxa_integrity.policy.durations import parse_duration  # noqa: E402


def kinds():
    """name -> (mutate(metrics, sample) -> (metrics, sample or None), the (rule, variant) expected)."""
    def deletes(k):
        def f(mt, s):
            mt["deletes"] += k
            mt["count_change"] -= k
            return mt, None
        return f, ("monitor.volume.messages.deletes", "spike")

    def inserts(factor, variant):
        def f(mt, s):
            new = int(mt["inserts"] * factor)
            mt["count_change"] += new - mt["inserts"]
            mt["inserts"] = new
            return mt, None
        return f, ("monitor.volume.messages.inserts", variant)

    def vanish(k):
        def f(mt, s):
            mt["count_change"] -= k
            return mt, None
        return f, ("monitor.volume.messages.count", "drop")

    def nulls(share):
        def f(mt, s):
            for d in s[: int(len(s) * share)]:
                d["sender"] = None
            return mt, s
        return f, ("monitor.fields.messages.sender.null", "spike")

    def missing(share):
        def f(mt, s):
            for d in s[: int(len(s) * share)]:
                d.pop("text", None)
            return mt, s
        return f, ("monitor.fields.messages.text.missing", "spike")

    def drift(n):
        def f(mt, s):
            for d in s[:n]:
                d["timestamp"] = d["timestamp"].isoformat()
            return mt, s
        return f, ("monitor.fields.messages.timestamp.type", "drift:string")

    return {"deletes spike +50": deletes(50), "deletes spike +200": deletes(200),
            "inserts spike x3": inserts(3, "spike"), "inserts spike x5": inserts(5, "spike"),
            "inserts drop to 0": inserts(0, "drop"),
            "count drop -500 (no oplog deletes)": vanish(500),
            "null surge 20%": nulls(0.2), "null surge 50%": nulls(0.5),
            "missing field 20%": missing(0.2), "type drift 3 docs": drift(3), "type drift 10 docs": drift(10)}


def false_positives(policy, series, profiles) -> tuple[int, int, dict]:
    """(collection-intervals judged, those with a finding, findings by rule kind)."""
    judged = flagged = 0
    by_rule: dict[str, int] = {}
    for coll, rows in series.rows.items():
        for i, row in enumerate(rows):
            j = Judge(policy, "bench", profiles)
            raised = j.collection(row, row.start + series.interval, rows[:i])
            if j.judged:
                judged += 1
            if raised:
                flagged += 1
                for rid in raised:
                    key = rid.split(".")[1] + "." + rid.rsplit(".", 1)[1]
                    by_rule[key] = by_rule.get(key, 0) + 1
    return judged, flagged, by_rule


def detection(policy, series, profiles, trials: int, seed: int, warmup: int) -> dict[str, tuple[int, int]]:
    rows, samples = series.rows[fm.MESSAGES], series.samples[fm.MESSAGES]
    rng = random.Random(seed)
    picks = [rng.randrange(warmup, len(rows)) for _ in range(trials)]
    out = {}
    for name, (mutate, want) in kinds().items():
        hit = 0
        for i in picks:
            mt, sample = copy.deepcopy(rows[i].metrics), copy.deepcopy(samples[i])
            mt, changed = mutate(mt, sample)
            if changed is not None:
                mt["fields"], mt["sampled"] = field_metrics(fm.MESSAGES, changed), len(changed)
            j = Judge(policy, "bench", profiles)
            j.collection(Row(fm.MESSAGES, rows[i].start, True, mt), rows[i].start + series.interval, rows[:i])
            hit += want in j.found
        out[name] = (hit, len(picks))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--interval", default="1h", help="interval length (policy duration)")
    ap.add_argument("--diurnal", type=float, default=0.0, help="daily rhythm amplitude 0..1")
    ap.add_argument("--no-seasonality", action="store_true", help="never use the hour-of-day baseline")
    ap.add_argument("--trials", type=int, default=100, help="injections per anomaly kind")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sensitivities", default="low,medium,high")
    ap.add_argument("--silence-min", type=int, default=None,
                    help="the policy's monitors.silence_min (default: the policy's; 0 turns the stop rule off)")
    a = ap.parse_args()
    interval = parse_duration(a.interval)
    t = time.perf_counter()
    series = clean_series(a.users, a.days, interval, seed=a.seed, diurnal=a.diurnal, skip_days=2)
    n = len(series.starts)
    print(f"clean series: {a.users} users over {a.days} days (first 2 and last 1 left out), {a.interval} intervals, "
          f"diurnal {a.diurnal}: {n} intervals x {len(series.rows)} collections in {time.perf_counter() - t:.1f}s")
    for coll, rows in series.rows.items():
        ins = sorted(r.metrics["inserts"] for r in rows)
        print(f"  {coll}: inserts per interval median {ins[len(ins) // 2]}, p5 {ins[len(ins) // 20]}, "
              f"p95 {ins[len(ins) * 19 // 20]}; sample median {sorted(r.metrics['sampled'] for r in rows)[n // 2]}")
    first_days = int(timedelta(days=2) / interval)
    profiles = {c: profile_of(c, [d for s in series.samples[c][:first_days] for d in s])[1] for c in series.rows}
    warmup = int(timedelta(days=3) / interval)
    for sens in a.sensitivities.split(","):
        policy = default_policy()
        policy.monitors.interval = a.interval
        policy.monitors.sensitivity = sens
        if a.silence_min is not None:
            policy.monitors.silence_min = a.silence_min
        if a.no_seasonality:
            policy.monitors.seasonal_min_days = 10 ** 6
        t = time.perf_counter()
        judged, flagged, by_rule = false_positives(policy, series, profiles)
        fp_secs = time.perf_counter() - t
        print(f"\nsensitivity {sens} (z {policy.monitors.z:g}), silence_min {policy.monitors.silence_min}, "
              f"training window {policy.monitors.training_window}, "
              f"seasonality {'off' if a.no_seasonality else 'by hour once 3 days'}:")
        print(f"  clean load: {flagged} of {judged} judged collection-intervals raised a finding = "
              f"{1000 * flagged / max(judged, 1):.2f} false positives per 1,000 intervals ({fp_secs:.1f}s)"
              + (f"; by kind {by_rule}" if by_rule else ""))
        for name, (hit, total) in detection(policy, series, profiles, a.trials, a.seed, warmup).items():
            print(f"  {name:38s} detected {hit:4d}/{total} = {100 * hit / total:5.1f}%")


if __name__ == "__main__":
    main()
