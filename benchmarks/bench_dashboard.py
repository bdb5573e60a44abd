"""The console's dashboard at scale (issue 12): GET / with N incidents and M findings in the state store.

    .venv/bin/python benchmarks/bench_dashboard.py [--incidents 1000] [--live 1000] [--findings 100000]
                                                   [--open-findings 1.0] [--repeat 20] [--path /] [--profile]

Seeds a fresh state store (SQLite in a temporary $FLUXA_HOME, or --state-url): one incident opened
through the engine (``Incidents.open``: its row, checklist and timeline are the real thing), the
rest bulk-copied from it (the same columns, their own ids, titles, severities, statuses and
opening times, the policy's checklist rows; timelines are not copied: the dashboard does not read
them), a complete check run and ``--findings`` findings spread over the policy's data classes and
the categories. Then signs a responder in through /login with an API token and times GET / (or
``--path``) through FastAPI's TestClient ``--repeat`` times after one warm-up: p50, p95, max, the
page's size, the CPU time of a request (p50; wall times on a loaded machine wait for the cores),
peak RSS, the load average; JSON on stdout.
``--profile`` prints the cProfile of one request (cumulative, top 30) on stderr.
Not a timed assertion: a benchmark (DESIGN.md), recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mb  # noqa: E402

LIVE = ("open", "acknowledged", "investigating", "recovering")


def seed(store, policy, incidents: int, live: int, findings: int, open_fraction: float) -> dict:
    from sqlalchemy import insert, select

    from fluxa_integrity.incidents import phases
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.incidents.timeutil import now
    from fluxa_integrity.store.incident_models import ChecklistState, Incident
    from fluxa_integrity.store.models import CheckRun, Finding

    t0 = time.perf_counter()
    at = now()
    first = Incidents(store, policy).open("Seed incident", ["users"], at=at - timedelta(hours=3), actor="bench")
    levels = list(policy.severity.levels)
    classes = [d.name for d in policy.data_classes]
    items = phases.checklist_rows(policy)
    with store.session() as s:
        row = {c.name: getattr(s.get(Incident, first["id"]), c.name) for c in Incident.__table__.columns}
    rows, checklist = [], []
    for n in range(2, incidents + 1):
        status = LIVE[n % len(LIVE)] if n <= live else ("resolved" if n % 2 else "closed")
        opened = at - timedelta(minutes=(n * 7) % 600)
        r = {**row, "id": n, "title": f"Incident {n}: duplicate emails for user{n}@example.com",
             "severity": levels[n % len(levels)], "status": status, "opened_at": opened,
             "data_classes": [classes[n % len(classes)]], "detected_at": opened, "timeline_count": 0,
             "acknowledged_at": opened + timedelta(minutes=5) if status != "open" else None,
             "resolved_at": opened + timedelta(hours=2) if status in ("resolved", "closed") else None,
             "closed_at": opened + timedelta(hours=3) if status == "closed" else None}
        rows.append(r)
        checklist += [{"incident_id": n, "phase_id": p, "item_id": i, "owner": o} for p, i, o in items]
    with store.session() as s:
        if first["status"] != "open" or live < 1:
            raise SystemExit("the seed incident must be live")
        for chunk in range(0, len(rows), 500):
            s.execute(insert(Incident), rows[chunk:chunk + 500])
        for chunk in range(0, len(checklist), 5000):
            s.execute(insert(ChecklistState), checklist[chunk:chunk + 5000])
        run = CheckRun(database="fluxa", started_at=at, finished_at=at, status="complete", rules=[], collections=[],
                       stats={})
        s.add(run)
        s.flush()
        cats = ["uniqueness", "reference", "schema", "consistency"]
        colls = list(policy.collections)
        batch = []
        for n in range(findings):
            batch.append({"database": "fluxa", "fingerprint": f"{n:064x}", "rule_id": f"rule{n % 40}", "variant": "",
                          "collection": colls[n % len(colls)], "category": cats[n % len(cats)],
                          "data_class": classes[n % len(classes)] if n % 10 else None, "criticality": None,
                          "status": "open" if (n % 1000) < open_fraction * 1000 else "closed",
                          "message": "seeded", "count": 1, "affected_users": 1, "samples": [],
                          "opened_at": at, "first_run_id": run.id, "last_run_id": run.id})
            if len(batch) == 10000:
                s.execute(insert(Finding), batch)
                batch = []
        if batch:
            s.execute(insert(Finding), batch)
        counts = {"incidents": s.scalar(select(__import__("sqlalchemy").func.count()).select_from(Incident)),
                  "findings": s.scalar(select(__import__("sqlalchemy").func.count()).select_from(Finding))}
    return {**counts, "live": live, "seed_seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--incidents", type=int, default=1000)
    ap.add_argument("--live", type=int, default=None, help="How many of them are live (default: all).")
    ap.add_argument("--findings", type=int, default=100_000)
    ap.add_argument("--open-findings", type=float, default=1.0, help="The fraction of findings that are open.")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--path", default="/", help="The page to time (/?all=1: every live incident's card).")
    ap.add_argument("--state-url", default=None, help="A state store URL (default: SQLite in a temporary home).")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="bench-dashboard-")
    os.environ["FLUXA_HOME"] = home
    if args.state_url:
        os.environ["FLUXA_STATE_URL"] = args.state_url
    from fastapi.testclient import TestClient

    from fluxa_integrity.access import tokens
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.store import open_store
    from fluxa_integrity.web.app import create_app

    store, policy = open_store(), load_policy(None)
    seeded = seed(store, policy, args.incidents, args.live if args.live is not None else args.incidents,
                  args.findings, args.open_findings)
    _, token = tokens.create(store, "responder", "bench")
    http = TestClient(create_app(Incidents(store, policy)))
    assert http.post("/login", data={"token": token}, follow_redirects=False).status_code == 303
    first = http.get(args.path)  # warm-up: templates compiled, caches filled
    assert first.status_code == 200, first.text[:500]
    if args.profile:
        import cProfile
        import pstats

        from starlette.requests import Request

        from fluxa_integrity.web import console

        # the route function itself, in this thread (TestClient runs the app in another one)
        scope = {"type": "http", "app": http.app, "method": "GET", "path": "/", "query_string": b"",
                 "headers": [(b"cookie", f"{console.COOKIE}={token}".encode())]}
        prof = cProfile.Profile()
        prof.enable()
        console.dashboard(Request(scope), False)
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    times, cpu = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        resp = http.get(args.path)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # every thread of this process: the app's and the client's
        assert resp.status_code == 200
    times.sort()
    print(json.dumps({"page": f"GET {args.path}", **seeded, "open_findings": round(args.open_findings * args.findings),
                      "repeat": args.repeat, "p50_ms": round(statistics.median(times) * 1000, 1),
                      "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))] * 1000, 1),
                      "max_ms": round(times[-1] * 1000, 1), "cpu_p50_ms": round(statistics.median(cpu) * 1000, 1), "html_kb": round(len(resp.content) / 1024, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "load_average": [round(x, 2) for x in os.getloadavg()],
                      "state_store": store.engine.url.render_as_string(hide_password=True).split("://")[0]}))
    store.dispose()


if __name__ == "__main__":
    main()
