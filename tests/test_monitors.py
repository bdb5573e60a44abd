"""Anomaly monitors (S10, S11): a clean generated load raises nothing; injected spikes, drops and
type drift raise the findings named for them - on the judging alone (series from the generator's
timeline) and end to end through the oplog of the dev server, with the fault injector's ground
truth, the findings store and the CLI."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId
from bson.timestamp import Timestamp

from fluxa_integrity.backup.oplog import newest_oplog_ts
from fluxa_integrity.checks.history import list_findings
from fluxa_integrity.fluxa import model as fm
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.monitors.baseline import judge, learn
from fluxa_integrity.monitors.field_stats import profile_of
from fluxa_integrity.monitors.runner import Judge, Row, due_intervals, learn_profiles, run_monitors, save_rows
from fluxa_integrity.monitors.synthetic import clean_series
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.monitors import Monitors
from fluxa_integrity.store import open_store
from fluxa_integrity.store.monitor_models import MonitorInterval
from waiting import wait_until

UTC = timezone.utc
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def series():
    # 600 users over 12 days in 1-hour intervals: ~60 messages an hour, bursty (heavy-tailed conversations)
    return clean_series(600, 12, HOUR, seed=5, skip_days=2)


@pytest.fixture()
def policy():
    p = default_policy()
    p.monitors.training_window = "7d"
    return p


def _judge_all(policy, series, profiles=None, mutate=None):
    """Judge every interval against the ones before it; ``mutate(coll, i, row)`` may change a row
    (an injected anomaly) before it is judged. Returns {(rule, variant): [interval index]}."""
    j = Judge(policy, "bench", profiles or {})
    raised: dict[tuple[str, str], list[int]] = {}
    for coll, rows in series.rows.items():
        hist: list[Row] = []
        for i, row in enumerate(rows):
            row = mutate(coll, i, row) if mutate else row
            before = {k: len(f.samples) for k, f in j.found.items()}  # a sample per raising interval
            j.collection(row, row.start + series.interval, hist)
            for key, f in j.found.items():
                if len(f.samples) != before.get(key, 0):
                    raised.setdefault(key, []).append(i)
            hist.append(row)
    return j, raised


def test_robust_baseline_and_noise_floors():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pts = [(t0 + HOUR * i, v) for i, v in enumerate([10, 12, 9, 11, 10, 500, 10, 11, 9, 10, 12, 10])]
    b = learn(pts, t0 + HOUR * 12, min_history=12, seasonal_min_days=3)
    # the 500 outlier neither moves the median nor widens the band: the scale is the Poisson floor
    assert b.median == 10 and b.scale == pytest.approx(10 ** 0.5)
    assert judge(40, b, 6, 10).direction == "spike" and judge(0, b, 6, 10).direction is None  # 0 is within 10
    assert learn(pts[:11], t0, min_history=12, seasonal_min_days=3) is None  # too little history: no verdict
    quiet = learn([(t0 + HOUR * i, 0.0) for i in range(12)], t0, min_history=12, seasonal_min_days=3)
    assert quiet.scale == 1.0  # MAD 0: the Poisson floor keeps one stray write from being an anomaly


def test_seasonality_by_hour_of_day_when_enough_days():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # busy at 15:00 (100), quiet otherwise (10), over 4 days of hourly points
    pts = [(t0 + HOUR * i, 100.0 if (t0 + HOUR * i).hour == 15 else 10.0) for i in range(24 * 4)]
    at = t0 + timedelta(days=4, hours=15)
    b = learn(pts, at, min_history=3, seasonal_min_days=3)
    assert b.seasonal and b.median == 100  # the 15:00 of other days, not the day's median of 10
    assert judge(100, b, 6, 10).direction is None
    flat = learn(pts, at, min_history=3, seasonal_min_days=5)  # not enough days yet: all hours
    assert not flat.seasonal and judge(100, flat, 6, 10).direction == "spike"


def test_a_clean_generated_load_raises_nothing(series, policy):
    j, raised = _judge_all(policy, series)
    assert raised == {}, {k: v[:5] for k, v in raised.items()}
    # and it was judged: volume of every collection, fields of the busy ones
    assert {f"monitor.volume.{c}.inserts" for c in series.rows} <= j.judged
    assert any(r.startswith("monitor.fields.messages.") for r in j.judged)


def test_injected_spike_drop_null_surge_and_type_drift_are_found(series, policy):
    msgs = series.rows[fm.MESSAGES]
    n = len(msgs)
    at = {"spike": n - 40, "drop": n - 30, "nulls": n - 20, "drift": n - 10}
    profile = {fm.MESSAGES: profile_of(fm.MESSAGES, [d for s in series.samples[fm.MESSAGES][:48] for d in s])[1]}
    from fluxa_integrity.monitors.field_stats import field_metrics

    def mutate(coll, i, row):
        if coll != fm.MESSAGES or i not in at.values():
            return row
        mt = copy.deepcopy(row.metrics)
        sample = copy.deepcopy(series.samples[coll][i])
        if i == at["spike"]:
            mt["deletes"] = 150  # a cleanup script gone wrong
            mt["count_change"] -= 150
        elif i == at["drop"]:
            mt["count_change"] = mt["inserts"] - 800  # 800 documents gone with no delete in the oplog
        elif i == at["nulls"]:
            for d in sample[: len(sample) // 2]:
                d["sender"] = None
        elif i == at["drift"]:
            for d in sample[:5]:
                d["timestamp"] = d["timestamp"].isoformat()
        if i in (at["nulls"], at["drift"]):
            mt["fields"] = field_metrics(coll, sample)
        return Row(coll, row.start, True, mt)

    _, raised = _judge_all(policy, series, profile, mutate)
    assert raised.pop(("monitor.volume.messages.deletes", "spike")) == [at["spike"]]
    assert raised.pop(("monitor.volume.messages.count", "drop")) == [at["drop"]]
    assert raised.pop(("monitor.fields.messages.sender.null", "spike")) == [at["nulls"]]
    assert raised.pop(("monitor.fields.messages.timestamp.type", "drift:string")) == [at["drift"]]
    assert raised == {}  # nothing else, before or after


def test_due_intervals_follow_the_grid_and_cap_catch_up(fluxa_home):
    store = open_store()
    m = Monitors(interval="5m", max_catch_up=3)
    now = datetime(2026, 3, 1, 12, 17, 30, tzinfo=UTC)
    assert due_intervals(store, "d", m, now) == [(datetime(2026, 3, 1, 12, 10, tzinfo=UTC),
                                                  datetime(2026, 3, 1, 12, 15, tzinfo=UTC))]
    save_rows(store, "d", [(Row("users", datetime(2026, 3, 1, 11, 0, tzinfo=UTC), True, {}),
                            datetime(2026, 3, 1, 11, 5, tzinfo=UTC), [])], None)
    due = due_intervals(store, "d", m, now)  # 13 missed; the newest 3 measured
    assert [s.minute for s, _ in due] == [0, 5, 10] and all(s.hour == 12 for s, _ in due)


# --- end to end through the oplog of the dev server -----------------------------------------------

def _server_second(client) -> int:
    return int(client.admin.command("hello")["localTime"].timestamp())


def _newest_second(client) -> int:
    """The second of the newest oplog entry, or a later one: a replica set's lastWrite, else the
    server's clock now (oplog ``ts`` seconds come from it). Not the newest entry itself: on
    FerretDB that read sorts the whole oplog (backup/oplog.py), seconds each on a full one."""
    ts, _, _ = newest_oplog_ts(client, mode="clock")
    return ts.time if isinstance(ts, Timestamp) else _server_second(client)


def _fresh_window(client) -> int:
    """A second after every oplog entry so far, once the server's clock has reached it."""
    start = _newest_second(client) + 1
    wait_until(lambda: _server_second(client) >= start, "the server clock to pass the window start")
    return start


def _close_window(client) -> int:
    end = _newest_second(client) + 1
    wait_until(lambda: _server_second(client) >= end, "the server clock to pass the window end")
    return end


def _seed_history(store, db, start: datetime, step: timedelta, inserts: list[int]) -> None:
    rows = []
    for k, n in enumerate(reversed(inserts), start=1):
        s = start - step * k
        rows.append((Row(fm.MESSAGES, s, True, {"inserts": n, "updates": 0, "deletes": 0, "sampled": 0, "fields": {}}),
                     s + step, []))
        for coll in (fm.USERS, fm.CONVERSATIONS):
            rows.append((Row(coll, s, True, {"inserts": 0, "updates": 0, "deletes": 0, "sampled": 0, "fields": {}}),
                         s + step, []))
    save_rows(store, db, rows, None)


def _copies(db, n: int) -> list[dict]:
    """New messages shaped like the existing ones (a clean interval's writes)."""
    base = list(db[fm.MESSAGES].find().sort("_id", 1).limit(n))
    out = []
    for i in range(n):
        d = dict(base[i % len(base)])
        d["_id"] = ObjectId()
        out.append(d)
    return out


def test_through_the_oplog_clean_then_deletes_spike_and_injected_type_drift(client, db, policy, tmp_path):
    generate(db, GenerateOptions(users=25, seed=11, conversations_per_user=2, messages_per_conversation=4,
                                 secondary=False))
    store = open_store()
    learn_profiles(db, store, policy)
    step = policy.monitors.interval_delta

    def window(write):
        start = _fresh_window(client)
        write()
        end = _close_window(client)
        return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)

    # a clean interval: as many new messages as the history says is usual
    s, e = window(lambda: db[fm.MESSAGES].insert_many(_copies(db, 30)))
    _seed_history(store, db.name, s, step, [28, 31, 30, 33, 29, 30, 27, 32, 30, 31, 29, 30, 30, 28])
    rep = run_monitors(client, store, db.name, policy, intervals=[(s, e)])
    assert rep.intervals[0]["complete"] and rep.intervals[0]["collections"][fm.MESSAGES]["inserts"] == 30
    assert rep.findings == [], [(f.rule_id, f.variant, f.message) for f in rep.findings]
    assert "monitor.volume.messages.deletes" in rep.judged
    assert any(r.startswith("monitor.fields.messages.") for r in rep.judged)  # 30 sampled: fields judged

    # the next interval: 40 messages deleted and the fault injector's wrong-type createdAt on users
    manifest = Manifest(tmp_path / "m.json", db.name)
    victims = [d["_id"] for d in db[fm.MESSAGES].find({}, {"_id": 1}).sort("_id", -1).limit(40)]
    s2, e2 = window(lambda: (db[fm.MESSAGES].insert_many(_copies(db, 30)),
                             db[fm.MESSAGES].delete_many({"_id": {"$in": victims}}),
                             inject(db, manifest, "wrong-type-createdat", 4, seed=3)))
    _seed_history(store, db.name, s2, step, [28, 31, 30, 33, 29, 30, 27, 32, 30, 31, 29, 30, 30, 28])
    rep = run_monitors(client, store, db.name, policy, intervals=[(s2, e2)])
    got = {(f.rule_id, f.variant): f for f in rep.findings}
    assert set(got) == {("monitor.volume.messages.deletes", "spike"), ("monitor.fields.users.createdAt.type", "drift:string")}
    injected = manifest.injections[0].ids
    assert rep.intervals[0]["collections"][fm.USERS]["updates"] == len(injected)
    drift = got[("monitor.fields.users.createdAt.type", "drift:string")]
    assert drift.count == len(injected) and drift.category == "schema" and drift.data_class == "user_accounts"
    assert got[("monitor.volume.messages.deletes", "spike")].count == 40
    assert got[("monitor.volume.messages.deletes", "spike")].data_class == "chat_history"

    # the same findings store as the checks: open, then closed by a clean interval of the same rules
    open_ = {(f.rule_id, f.variant) for f in list_findings(store, db.name)}
    assert set(got) <= open_
    s3, e3 = window(lambda: db[fm.MESSAGES].insert_many(_copies(db, 30)))
    _seed_history(store, db.name, s3, step, [28, 31, 30, 33, 29, 30, 27, 32, 30, 31, 29, 30, 30, 28])
    rep = run_monitors(client, store, db.name, policy, intervals=[(s3, e3)])
    assert rep.findings == []
    still = {(f.rule_id, f.variant) for f in list_findings(store, db.name)}
    assert ("monitor.volume.messages.deletes", "spike") not in still
    # the drift finding stays open: no users were written, so createdAt was not judged again
    assert ("monitor.fields.users.createdAt.type", "drift:string") in still


def test_an_interval_the_oplog_no_longer_covers_is_incomplete_and_never_judged(client, db, policy):
    db[fm.MESSAGES].insert_one({"_id": ObjectId(), "text": "x"})
    store = open_store()
    s = datetime(2020, 1, 1, tzinfo=UTC)
    _seed_history(store, db.name, s, policy.monitors.interval_delta, [30] * 14)
    rep = run_monitors(client, store, db.name, policy, intervals=[(s, s + timedelta(minutes=5))])
    assert rep.intervals[0]["complete"] is False and "point-in-time window is broken" in rep.intervals[0]["problem"]
    assert rep.findings == []  # zero inserts against a median of 30 would be a drop: not judged
    assert not any(r.startswith("monitor.volume.") for r in rep.judged)
    with store.session() as ses:
        row = ses.query(MonitorInterval).filter_by(database=db.name, collection=fm.MESSAGES, start=s).one()
        assert row.complete is False


def test_monitor_cli_run_status_baseline(cli, client, db, mongo_uri):
    generate(db, GenerateOptions(users=20, seed=4, conversations_per_user=1, messages_per_conversation=3,
                                 secondary=False))
    target = ("--uri", mongo_uri, "--db", db.name)
    start = _fresh_window(client)
    db[fm.MESSAGES].insert_many(_copies(db, 5))
    end = _close_window(client)
    iso = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    res = cli("monitor", "run", *target, "--start", iso(start), "--end", iso(end), "--json")
    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["intervals"][0]["collections"]["messages"]["inserts"] == 5 and out["findings"] == []
    assert "learned the field profile" in " ".join(out["warnings"])  # first run: profiles learned
    res = cli("monitor", "status", "--db", db.name, "--json")
    assert res.code == 0, res.stderr
    st = json.loads(res.stdout)
    assert {c["collection"] for c in st["collections"]} >= {"messages", "$logs"} and st["open_findings"] == []
    assert {p["collection"] for p in st["profiles"]} >= {"users", "messages"}
    res = cli("monitor", "baseline", *target, "--learn", "--collection", "users", "--json")
    assert res.code == 0, res.stderr
    b = json.loads(res.stdout)
    assert b["learned"] == {"users": 20} and b["profiles"]["users"]["createdAt"]["types"] == {"date": 1.0}
    res = cli("monitor", "run", *target, "--start", iso(end), "--json")  # bad input: exit 2
    assert res.code == 2 and "--start and --end go together" in res.stdout
