"""The console's trends page at scale (issue 12 plots): GET /console/trends over a day (or --hours)
of a busy deployment's history in the state store.

    .venv/bin/python benchmarks/bench_trends.py [--hours 24] [--days 14] [--slice-every 60]
                                                [--backup-every 3600] [--check-every 3600] [--repeat 5] [--profile]

Seeds a fresh state store (SQLite in a temporary $FLUXA_HOME): ``--days`` of history ending now -
an archived oplog slice every ``--slice-every`` seconds (one chained window; the slice files exist,
empty, with the cataloged size), a complete full backup of every collection every
``--backup-every`` seconds with its oplog start, a check run every ``--check-every`` seconds with
40 findings sighted, and a monitor row per monitored collection and 5-minute interval (the
training window the baseline reads). Then times GET /console/trends?hours=N through TestClient
after one warm-up, and each series function alone: p50 and max, the page's size, peak RSS; JSON on
stdout. ``--profile`` prints the cProfile of one request (top 30) on stderr.
Not a timed assertion: a benchmark (DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mb  # noqa: E402

UTC = timezone.utc


def seed(store, policy, repo: Path, days: int, slice_every: int, backup_every: int, check_every: int) -> dict:
    from bson.timestamp import Timestamp
    from sqlalchemy import insert

    from fluxa_integrity.backup import catalog
    from fluxa_integrity.monitors.runner import monitored
    from fluxa_integrity.store.backup_models import OplogSlice
    from fluxa_integrity.store.models import CheckRun, Finding, Sighting
    from fluxa_integrity.store.monitor_models import MonitorInterval

    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(days=days)
    colls = list(policy.collections)
    (repo / "oplog").mkdir(parents=True, exist_ok=True)
    slices, prev = [], None
    n = int(days * 86400 / slice_every)
    for k in range(n):
        first_t = int((t0 + timedelta(seconds=k * slice_every)).timestamp()) + 1
        last_t = int((t0 + timedelta(seconds=(k + 1) * slice_every)).timestamp())
        path = repo / "oplog" / f"{first_t}.1-{last_t}.1.bson.zst"
        path.touch()
        slices.append({"repo": str(repo), "path": str(path.relative_to(repo)), "first_t": first_t, "first_i": 1,
                       "last_t": last_t, "last_i": 1, "prev_t": prev[0] if prev else None, "prev_i": prev[1] if prev else None,
                       "first_wall": datetime.fromtimestamp(first_t, UTC), "last_wall": datetime.fromtimestamp(last_t, UTC),
                       "count": 100, "size": 0, "raw_bytes": 30000, "sha256": "0" * 64,
                       "created_at": datetime.fromtimestamp(last_t + 2, UTC)})
        prev = (last_t, 1)
    backups = 0
    t = t0 + timedelta(seconds=backup_every)
    while t < now:
        bid = f"{t:%Y%m%dT%H%M%SZ}-bench"
        catalog.start_backup(store, bid, "full", "fluxa", repo, colls, t, Timestamp(int(t.timestamp()), 1))
        catalog.finish_backup(store, bid, size=1, file_count=1, finished_at=t + timedelta(seconds=90),
                              oplog_end=Timestamp(int(t.timestamp()) + 90, 1), manifest_sha256="0" * 64)
        backups += 1
        t += timedelta(seconds=backup_every)
    runs = int(days * 86400 / check_every)
    cats = ["uniqueness", "referential", "schema", "consistency"]
    interval = policy.monitors.interval_delta
    with store.session() as s:
        for k in range(0, len(slices), 1000):
            s.execute(insert(OplogSlice), slices[k:k + 1000])
        first = CheckRun(database="fluxa", started_at=t0, finished_at=t0, status="complete", rules=[], collections=[],
                         stats={})
        s.add(first)
        s.flush()
        s.execute(insert(Finding), [{"database": "fluxa", "fingerprint": f"{f:064x}", "rule_id": f"rule{f}", "variant": "",
                                     "collection": colls[f % len(colls)], "category": cats[f % len(cats)], "status": "open",
                                     "message": "m", "count": 3, "affected_users": 0, "samples": [], "opened_at": t0,
                                     "first_run_id": first.id, "last_run_id": first.id} for f in range(40)])
        fids = [r for r in range(1, 41)]
        sightings = []
        for k in range(runs):
            at = t0 + timedelta(seconds=k * check_every)
            run = CheckRun(database="fluxa", started_at=at, finished_at=at, status="complete", rules=[], collections=[],
                           stats={"findings": 40})
            s.add(run)
            s.flush()
            sightings += [{"finding_id": f, "run_id": run.id, "seen_at": at, "count": 3 + k % 5} for f in fids]
        for k in range(0, len(sightings), 5000):
            s.execute(insert(Sighting), sightings[k:k + 5000])
        rows = []
        start = t0
        while start + interval <= now:
            for c in monitored(policy):
                rows.append({"database": "fluxa", "collection": c, "start": start, "end": start + interval,
                             "hour": start.hour, "complete": True, "evaluated_at": start + interval, "findings": [],
                             "metrics": {"inserts": 30 + (start.minute % 7), "updates": 5, "deletes": 1, "sampled": 0,
                                         "fields": {}}})
            start += interval
        for k in range(0, len(rows), 5000):
            s.execute(insert(MonitorInterval), rows[k:k + 5000])
    return {"slices": len(slices), "backups": backups, "check_runs": runs, "sightings": len(sightings),
            "monitor_rows": len(rows)}


def timed(fn, repeat: int) -> dict:
    fn()
    secs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t)
    return {"p50_ms": round(statistics.median(secs) * 1000), "max_ms": round(max(secs) * 1000)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--slice-every", type=int, default=60)
    ap.add_argument("--backup-every", type=int, default=3600)
    ap.add_argument("--check-every", type=int, default=3600)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-trends-"))
    os.environ["FLUXA_HOME"] = str(home)
    from fastapi.testclient import TestClient

    from fluxa_integrity.access import tokens
    from fluxa_integrity.backup.archive_catalog import slice_lags
    from fluxa_integrity.backup.objectives import rpo_series
    from fluxa_integrity.checks.history import findings_per_run
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.monitors.series import baseline_series
    from fluxa_integrity.policy import default_policy
    from fluxa_integrity.store import open_store
    from fluxa_integrity.web.app import create_app

    store, policy = open_store(), default_policy()
    t = time.perf_counter()
    sizes = seed(store, policy, home / "repo", a.days, a.slice_every, a.backup_every, a.check_every)
    seeded = round(time.perf_counter() - t, 1)
    client = TestClient(create_app(Incidents(store, policy)), follow_redirects=False)
    client.post("/login", data={"token": tokens.create(store, "viewer", "bench")[1]})
    url = f"/console/trends?hours={a.hours}&db=fluxa"
    page = client.get(url)
    assert page.status_code == 200, page.text[:500]
    until = datetime.now(UTC)
    since = until - timedelta(hours=a.hours)
    out = {"hours": a.hours, "seeded": sizes, "seed_seconds": seeded, "page_kb": round(len(page.content) / 1024),
           "page": timed(lambda: client.get(url), a.repeat),
           "rpo_series": timed(lambda: rpo_series(store, policy, "fluxa", since, until), a.repeat),
           "slice_lags": timed(lambda: slice_lags(store, since, until), a.repeat),
           "findings_per_run": timed(lambda: findings_per_run(store, "fluxa", since, until), a.repeat),
           "baseline_series": timed(lambda: baseline_series(store, "fluxa", policy, since, until), a.repeat),
           "peak_rss_mb": round(peak_rss_mb()), "load_average": os.getloadavg()[0]}
    if a.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(lambda: client.get(url))
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    print(json.dumps(out, indent=2))
    store.dispose()


if __name__ == "__main__":
    main()
