"""The console's trends page (/console/trends) against a history seeded through the real domain
functions on a private server: a full backup, two archived oplog slices, two check runs (the
second after injected faults) and a monitor run over 14 seeded intervals. The series and the
SVG are checked against the ground truth seeded: the RPO age at a moment is that moment minus
the backup's start or the newest archived entry's wall time read from the server's oplog, the
lag is a slice's close time minus its newest entry's wall time, the findings per run are the
findings the runs recorded, the band is the median and robust scale of the seeded history.
"""

from __future__ import annotations

import math
import re
import statistics
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
from bson import ObjectId

from backup_helpers import make_data
from fluxa_integrity.access import tokens
from fluxa_integrity.backup import archive_catalog as ac
from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
from fluxa_integrity.backup.catalog import get_backup
from fluxa_integrity.backup.objectives import rpo_series, rpo_status
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.checks.history import findings_per_run, list_findings, record_run
from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.fluxa import model as fm
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.monitors.runner import Row, run_monitors, save_rows
from fluxa_integrity.monitors.series import baseline_series
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store
from fluxa_integrity.web.plots import time_ticks
from fluxa_integrity.web.trends import over_target
from waiting import wait_until

UTC = timezone.utc
SVG = "{http://www.w3.org/2000/svg}"
HISTORY = [28, 31, 30, 33, 29, 30, 27, 32, 30, 31, 29, 30, 30, 28]  # inserts per interval before the judged one
BURST = 90  # messages inserted in the judged interval: far above the band


def _aware(t):
    return t if t is None or t.tzinfo else t.replace(tzinfo=UTC)


def _server_second(client) -> int:
    return int(client.admin.command("hello")["localTime"].timestamp())


def _walls(client) -> list[tuple]:
    """(ts, wall) of every oplog entry of the private server, read once (FerretDB scans the
    capped collection for any filter on it)."""
    return sorted((e["ts"], _aware(e["wall"])) for e in client.local["oplog.rs"].find({}, {"ts": 1, "wall": 1})
                  if "wall" in e)


def _newest_wall(walls, last) -> datetime:
    """The wall time of the newest oplog entry at or before ``last``, as the server wrote it."""
    return [w for ts, w in walls if ts <= last][-1]


@pytest.fixture()
def seeded(private_server, tmp_path):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client["fluxa"]
    store = open_store()
    policy = default_policy()
    make_data(db, users=20)
    backup = run_backup(uri, db.name, store, BackupOptions(repo=tmp_path / "repo", schema=False))
    once = ArchiveOptions(once=True, poll_ms=200)
    db[fm.MESSAGES].insert_many([{"_id": ObjectId(), "text": f"after the backup {i}"} for i in range(5)])
    archive_oplog(uri, store, tmp_path / "repo", once)
    db[fm.USERS].update_many({}, {"$set": {"seen": 1}})
    archive_oplog(uri, store, tmp_path / "repo", once)
    # two check runs: clean, then with orphaned messages injected
    runs = []
    for faults in (0, 4):
        if faults:
            inject(db, Manifest(tmp_path / "m.json", db.name), "orphan-messages", faults, seed=3)
        runs.append(record_run(store, run_checks(uri, db.name, policy)))
    # a monitor run over one real interval with a burst of inserts, after 14 seeded intervals
    step = policy.monitors.interval_delta
    start = _server_second(client) + 1
    wait_until(lambda: _server_second(client) >= start, "the server clock to pass the interval's start")
    db[fm.MESSAGES].insert_many([{"_id": ObjectId(), "text": f"burst {i}"} for i in range(BURST)])
    newest = client.local["oplog.rs"].find().sort("$natural", -1).limit(1).next()["ts"].time
    wait_until(lambda: _server_second(client) >= newest + 1, "the server clock to pass the interval's end")
    s, e = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(newest + 1, UTC)
    rows = []
    for k, n in enumerate(reversed(HISTORY), start=1):
        rows.append((Row(fm.MESSAGES, s - step * k, True, {"inserts": n, "updates": 0, "deletes": 0, "sampled": 0,
                                                           "fields": {}}), s - step * (k - 1), []))
    save_rows(store, db.name, rows, None)
    monitor = run_monitors(client, store, db.name, policy, intervals=[(s, e)])
    yield {"uri": uri, "client": client, "db": db, "store": store, "policy": policy, "backup": backup,
           "runs": runs, "monitor": monitor, "interval": (s, e)}
    client.close()
    store.dispose()


def _page(seeded, role: str, query: str = ""):
    from fastapi.testclient import TestClient

    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.web.app import create_app

    app = create_app(Incidents(seeded["store"], seeded["policy"]))
    token = tokens.create(seeded["store"], role, f"{role}-1")[1]
    c = TestClient(app, follow_redirects=False)
    assert c.post("/login", data={"token": token}).status_code == 303
    return c.get("/console/trends" + query)


def _svgs(html: str) -> dict[str, ET.Element]:
    """Every chart of the page by its <title>, parsed as XML (so the SVG is well formed)."""
    out = {}
    for m in re.finditer(r"<svg .*?</svg>", html, re.S):
        el = ET.fromstring(m.group(0))
        out[el.find(f"{SVG}title").text] = el
    return out


def _points(svg: ET.Element) -> list[tuple[datetime, float]]:
    return [(datetime.fromisoformat(c.get("data-t")), float(c.get("data-v"))) for c in svg.iter(f"{SVG}circle")]


def test_trends_series_and_charts_match_the_seeded_history(seeded):
    store, policy, client = seeded["store"], seeded["policy"], seeded["client"]
    until = datetime.now(UTC)
    since = until - timedelta(hours=24)
    b = get_backup(store, seeded["backup"].id)
    started, finished = _aware(b.started_at), _aware(b.finished_at)
    slices = ac.slices(store)
    assert len(slices) == 2
    walls = _walls(client)

    # --- RPO: exact at the breakpoints, the present value is rpo status's ---------------------
    series = {s["data_class"]: s for s in rpo_series(store, policy, "fluxa", since, until)}
    now_status = {r["data_class"]: r for r in rpo_status(store, policy, "fluxa", until)}
    covered = [dc.name for dc in policy.data_classes if {c.collection for c in dc.covers} <= set(b.collections)]
    assert covered, "the backup holds every collection of some data class"
    for name in covered:
        pts = series[name]["points"]
        at = dict(pts)  # the value after each breakpoint (the later of two points at one time)
        assert pts[0] == (since, None)  # nothing restorable before the backup finished
        assert at[finished] == pytest.approx((finished - started).total_seconds(), abs=0.1)
        for sl in slices:  # each archived slice moves the point to its newest entry, read from the oplog
            wall = _newest_wall(walls, ac.last_ts(sl))
            assert at[_aware(sl.created_at)] == pytest.approx((_aware(sl.created_at) - wall).total_seconds(), abs=0.1)
        assert series[name]["latest"] == pytest.approx(now_status[name]["age_seconds"], abs=0.1)
        assert now_status[name]["source"] == "oplog archive"
        # between two breakpoints the age grows a second a second
        (t1, a1), (t2, a2) = pts[-2], pts[-1]
        assert a2 - a1 == pytest.approx((t2 - t1).total_seconds(), abs=0.1)
        # never over its RPO once a point existed; no point from the window's start until the backup finished
        over, none = over_target(pts, series[name]["rpo_seconds"])
        assert over == 0 and none == pytest.approx((finished - since).total_seconds(), abs=0.1)

    # --- archiver lag per slice ---------------------------------------------------------------
    lags = ac.slice_lags(store, since, until)
    assert [r["path"] for r in lags] == [s.path for s in slices]
    for r, sl in zip(lags, slices):
        truth = (_aware(sl.created_at) - _newest_wall(walls, ac.last_ts(sl))).total_seconds()
        assert r["lag_seconds"] == pytest.approx(truth, abs=0.01) and r["lag_seconds"] >= 0

    # --- findings per check run: the monitor run is not a check run -----------------------------
    per_run = findings_per_run(store, "fluxa", since, until)
    assert [r["run_id"] for r in per_run] == [x["run_id"] for x in seeded["runs"]]
    open_now = list_findings(store, "fluxa")
    check_open = [f for f in open_now if not f.rule_id.startswith("monitor.")]
    by_cat: dict[str, list[int]] = {}
    for f in check_open:
        by_cat.setdefault(f.category, [0, 0])
        by_cat[f.category][0] += 1
        by_cat[f.category][1] += f.count
    assert {c: [v["findings"], v["documents"]] for c, v in per_run[-1]["by_category"].items()} == by_cat
    orphans = [f for f in check_open if f.first_run_id == per_run[-1]["run_id"]]
    assert orphans and sum(f.count for f in orphans) >= 4  # the injected orphans opened in the second run
    assert per_run[-1]["findings"] == per_run[0]["findings"] + len(orphans)

    # --- the anomaly series: the band is the seeded history's median and robust scale ----------
    mon = {s["collection"]: s for s in baseline_series(store, "fluxa", policy, since, until)}
    last = mon[fm.MESSAGES]["points"][-1]
    assert last["start"] == seeded["interval"][0] and last["value"] == BURST
    med = statistics.median(HISTORY)
    mad = statistics.median(abs(v - med) for v in HISTORY)
    m = policy.monitors
    threshold = max(m.z * max(1.4826 * mad, math.sqrt(med)), m.min_volume_change)
    assert last["median"] == med and last["low"] == pytest.approx(med - threshold) and last["high"] == pytest.approx(med + threshold)
    assert last["direction"] == "spike"
    assert ("monitor.volume.messages.inserts", "spike") in {(f.rule_id, f.variant) for f in seeded["monitor"].findings}
    assert all(p["median"] is None for p in mon[fm.MESSAGES]["points"][:12])  # under min_history: no band

    # --- the page draws the same numbers, for a viewer too ---------------------------------------
    r = _page(seeded, "viewer", "?db=fluxa")
    assert r.status_code == 200, r.text
    charts = _svgs(r.text)
    for name in covered:
        title = next(dc.title for dc in policy.data_classes if dc.name == name)
        svg = charts[f"RPO age, {title}"]
        assert float(svg.find(f"{SVG}line[@class='target']").get("data-v")) == series[name]["rpo_seconds"]
        drawn = _points(svg)
        expect = [(t, v) for t, v in series[name]["points"] if v is not None]
        # the page's window ends when it rendered, a little later: every breakpoint before is drawn
        assert [t for t, _ in drawn[:-1]] == [t.replace(microsecond=0) for t, _ in expect[:-1]]
        assert [v for _, v in drawn[:-1]] == [pytest.approx(v, abs=0.05) for _, v in expect[:-1]]
        assert drawn[-1][0] >= until.replace(microsecond=0) and drawn[-1][1] >= expect[-1][1] - 0.05
        assert "Now " in svg.find(f"{SVG}desc").text and f"RPO of {series[name]['rpo']}" in svg.find(f"{SVG}desc").text
    lag_pts = _points(charts["Archiver lag per slice"])
    assert [v for _, v in lag_pts] == [pytest.approx(x["lag_seconds"], abs=1e-3) for x in lags]
    bars = charts["Findings per check run"].findall(f".//{SVG}rect[@data-category]")
    # the last run's bars by its label: two seeded runs may start within one second, so the time is ambiguous
    assert {(b.get("data-category"), float(b.get("data-v"))) for b in bars if b.find(f"{SVG}title").text.startswith(
        f"#{per_run[-1]['run_id']}:")} == {(c, v[0]) for c, v in by_cat.items()}
    anomaly = charts[f"{fm.MESSAGES} inserts"]
    assert anomaly.find(f"{SVG}polygon[@class='band']") is not None
    flagged = [c for c in anomaly.iter(f"{SVG}circle") if "anomaly" in c.get("class")]
    assert [float(c.get("data-v")) for c in flagged] == [BURST]
    assert "a spike" in anomaly.find(f"{SVG}desc").text
    assert 'href="/console/trends"' in r.text  # the nav links here


def test_trends_needs_a_session_and_checks_its_window(fluxa_home):
    from fastapi.testclient import TestClient

    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.web.app import create_app

    store = open_store()
    app = create_app(Incidents(store, default_policy()))
    anon = TestClient(app, follow_redirects=False)
    r = anon.get("/console/trends")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    anon.post("/login", data={"token": tokens.create(store, "viewer", "v")[1]})
    assert anon.get("/console/trends?hours=0").status_code == 422
    assert anon.get("/console/trends?metric=bogus").status_code == 422
    empty = anon.get("/console/trends?hours=6")
    assert empty.status_code == 200
    assert "No oplog slice was archived in the last 6 h" in empty.text and "No complete check run" in empty.text
    store.dispose()


def test_time_ticks_are_round_and_few():
    t0 = datetime(2026, 11, 25, 20, 47, 13, tzinfo=UTC)
    ticks = time_ticks(t0, t0 + timedelta(hours=24))
    assert 4 <= len(ticks) <= 8 and all(t.minute == 0 and t.hour % 3 == 0 for t in ticks)
    ticks = time_ticks(t0, t0 + timedelta(minutes=30))
    assert all(t.minute % 5 == 0 and t.second == 0 for t in ticks) and len(ticks) <= 8


def test_the_plotted_baseline_is_the_judges_own_at_every_interval():
    """monitors/series.py hands ``learn`` only the points it can use; the baseline must be the one
    ``Judge`` learns from the whole training window, seasonal or not, for every interval."""
    from fluxa_integrity.monitors.runner import Judge
    from fluxa_integrity.monitors.series import _baselines
    from fluxa_integrity.monitors.synthetic import clean_series

    series = clean_series(150, 12, timedelta(hours=1), seed=5, diurnal=0.6, skip_days=2,
                          collections=(fm.MESSAGES, fm.USERS))
    get = lambda mt: mt.get("inserts", 0)  # noqa: E731
    for recent in (48, 5):  # 5 < min_history: the history-length test must still agree
        policy = default_policy()
        policy.monitors.training_window = "7d"
        policy.monitors.min_history = 6  # the same hour of 7 days can then hold enough for a seasonal baseline
        policy.monitors.recent_history = recent
        judge_ = Judge(policy, "d", {})
        kinds = set()
        for rows in series.rows.values():
            base_of = _baselines(rows, get, policy.monitors)
            for r in rows:
                want, got = judge_._baseline(rows, r.start, get), base_of(r.start)
                assert (want is None) == (got is None), r.start
                if want is not None:
                    assert (got.n, got.median, got.scale, got.seasonal) == (want.n, want.median, want.scale, want.seasonal)
                kinds.add(None if want is None else want.seasonal)
        assert kinds == {None, True, False}  # learning, seasonal and recent baselines were all compared
