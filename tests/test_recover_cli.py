"""`fluxa-integrity recover` as a user runs it: plan (a dry run), apply with an incident, verify,
undo, list - and the failures: an apply killed midway (SIGKILL) and the server restarted midway,
both resumed by rerunning the same command with no duplicates and nothing lost; a second apply
beside a running one; bad input with exit 2 and nothing half-written.

The command line runs in a subprocess with tests/recovery_recipe.py imported first, so `recover
plan` has a subcommand for the tests' tiny recipe, built from its Params like any recipe's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.apply import PAUSE_ENV
from fluxa_integrity.store import open_store
from recovery_recipe import RECIPE, after_hashes, hashes, seed

TESTS = Path(__file__).parent
BOOT = ("import sys; sys.path.insert(0, {tests!r}); import recovery_recipe; "
        "from fluxa_integrity.cli.main import app; sys.argv[0] = 'fluxa-integrity'; app()")


def _argv(args) -> list[str]:
    return [sys.executable, "-c", BOOT.format(tests=str(TESTS)), *args]


def _env(fluxa_home) -> dict:
    return {**os.environ, "FLUXA_HOME": str(fluxa_home), "COLUMNS": "200"}


class Result:
    def __init__(self, proc):
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture()
def rcli(fluxa_home):
    def run(*args: str) -> Result:
        return Result(subprocess.run(_argv(args), capture_output=True, text=True, env=_env(fluxa_home), timeout=600))

    return run


def _start(fluxa_home, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(_argv(args), text=True, env={**_env(fluxa_home), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll a readiness signal (the pause hook's file, a row); fail if the command ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _journal_files(fluxa_home, plan_id: str) -> int:
    d = fluxa_home / "plans" / plan_id / "journal"
    return len(list(d.glob("apply-*.bson"))) if d.is_dir() else 0


def _status(plan_id: str) -> str:
    return engine.list_plans(open_store())[0]["status"] if plan_id else ""


def _incident() -> int:
    return Incidents.from_environment().open("Items mislabelled", collections=["analytics"])["id"]


def _plan(rcli, uri, db_name, *extra) -> dict:
    res = rcli("recover", "plan", RECIPE, "--collection", "items", "--uri", uri, "--db", db_name, "--json", *extra)
    assert res.code == 0, res.stderr
    return res.json()


def test_plan_apply_verify_undo_from_the_command_line(rcli, mongo_uri, db):
    seed(db)
    original = hashes(db)
    listed = rcli("recover", "recipes", "--json")
    assert listed.code == 0 and RECIPE in {r["name"] for r in listed.json()}
    plan = _plan(rcli, mongo_uri, db.name)
    pid = plan["plan_id"]
    assert plan["counts"] == {"items": {"update": 20, "delete": 4, "insert": 4}} and plan["conflicts_total"] == 0
    assert hashes(db) == original
    iid = _incident()
    dry = rcli("recover", "apply", pid, "--incident", str(iid), "--uri", mongo_uri, "--json")
    assert dry.code == 0 and dry.json()["dry_run"] is True and hashes(db) == original
    res = rcli("recover", "apply", pid, "--incident", str(iid), "--apply", "--by", "alice", "--uri", mongo_uri, "--json")
    assert res.code == 0, res.stderr
    assert res.json()["counts"]["items"]["written"] == 28 and res.json()["timeline"]["recorded"] is True
    assert res.json()["verify"]["closed"] is True and res.json()["verify"]["timeline"]["recorded"] is True
    want = after_hashes(engine.load_plan(open_store(), pid))
    now = hashes(db)
    assert {k: now[k] for k in want} == want
    twice = rcli("recover", "apply", pid, "--incident", str(iid), "--apply", "--uri", mongo_uri)
    assert twice.code == 2 and "already applied" in twice.stderr and "undo it first or make a new plan" in twice.stderr
    assert hashes(db) == now
    ver = rcli("recover", "verify", pid, "--uri", mongo_uri, "--json")
    assert ver.code == 0 and ver.json()["closed"] is True  # the test recipe names no rule
    # what a person reads: status, counts (28 already done), field-level before -> after, readable values
    shown = rcli("recover", "show", pid, "--uri", mongo_uri)
    assert shown.code == 0 and "status: applied" in shown.stderr and "incident " + str(iid) in shown.stderr
    assert "nested.a: 3 -> -3" in shown.stderr and 'label: null -> "fixed"' in shown.stderr
    assert "at: null -> 2026-05-01T00:00:00Z" in shown.stderr and "oid: null -> ObjectId(" in shown.stderr
    assert "dry run: nothing written" not in shown.stderr  # applied: no apply hint
    no_auth = rcli("recover", "undo", pid, "--uri", mongo_uri)
    assert no_auth.code == 2 and "--incident ID" in no_auth.stderr
    und = rcli("recover", "undo", pid, "--incident", str(iid), "--uri", mongo_uri, "--json")
    assert und.code == 0, und.stderr
    assert hashes(db) == original
    rows = rcli("recover", "list", "--json").json()
    assert [(r["id"], r["status"]) for r in rows if r["id"] == pid] == [(pid, "undone")]
    timeline = [e["data"] for e in Incidents.from_environment().timeline(iid) if e["kind"] == "recovery_action"]
    assert [(t["action"], t["status"]) for t in timeline] == [("recipe", "applied"), ("verify", "closed"),
                                                              ("verify", "closed"), ("recipe-undo", "applied")]


def test_bad_input_is_exit_2_with_nothing_written(rcli, mongo_uri, db):
    seed(db)
    original = hashes(db)
    unknown = rcli("recover", "plan", "no-such-recipe", "--uri", mongo_uri, "--db", db.name)
    assert unknown.code == 2 and "no-such-recipe" in unknown.stderr
    missing = rcli("recover", "plan", RECIPE, "--uri", mongo_uri, "--db", db.name, "--json")
    assert missing.code == 2 and "--collection" in missing.json()["error"]
    nope = rcli("recover", "show", "20990101T000000Z-x-000000", "--uri", mongo_uri, "--json")
    assert nope.code == 2 and "no recovery plan" in nope.json()["error"]
    pid = _plan(rcli, mongo_uri, db.name)["plan_id"]
    no_inc = rcli("recover", "apply", pid, "--apply", "--uri", mongo_uri, "--json")
    assert no_inc.code == 2 and "needs an open incident" in no_inc.json()["error"]
    # (an unknown or closed incident, a parameter of the wrong type: tests/test_recovery_engine.py)
    assert hashes(db) == original and _status(pid) == "planned"
    # undo after newer changes: refused, nothing half-written
    iid = _incident()
    assert rcli("recover", "apply", pid, "--incident", str(iid), "--apply", "--uri", mongo_uri).code == 0
    db.items.update_one({"_id": 9}, {"$set": {"name": "newer"}})
    applied = hashes(db)
    refused = rcli("recover", "undo", pid, "--incident", str(iid), "--uri", mongo_uri, "--json")
    assert refused.code == 2 and "changed in live since it was applied" in refused.json()["error"]
    assert hashes(db) == applied and _status(pid) == "applied"
    # a damaged plan file is refused by its sha256
    path = Path(os.environ["FLUXA_HOME"]) / "plans" / pid / "changes.bson"
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    damaged = rcli("recover", "show", pid, "--uri", mongo_uri, "--json")
    assert damaged.code == 2 and "sha256" in damaged.json()["error"]


def test_conflicts_are_reported_exit_1_and_forced_by_id(rcli, mongo_uri, db):
    seed(db)
    pid = _plan(rcli, mongo_uri, db.name)["plan_id"]
    db.items.update_one({"_id": 6}, {"$set": {"name": "the app wrote this"}})
    show = rcli("recover", "show", pid, "--uri", mongo_uri)
    assert "1 conflict(s)" in show.stderr and 'name: "item 6" -> "the app wrote this"' in show.stderr
    iid = _incident()
    res = rcli("recover", "apply", pid, "--incident", str(iid), "--apply", "--uri", mongo_uri, "--json")
    assert res.code == 1 and [c["id"] for c in res.json()["conflicts"]] == [6]
    assert res.json()["verify"] is None  # conflicts left: verify is not run
    assert db.items.find_one({"_id": 6})["name"] == "the app wrote this"
    # an --force-id the plan does not hold, or that is not a conflict it skipped: exit 2, nothing written
    for bad, why in (("4242", "has no change with that _id"), ("9", "not a conflict")):
        refused = rcli("recover", "apply", pid, "--incident", str(iid), "--apply", "--force-id", bad, "--uri",
                       mongo_uri, "--json")
        assert refused.code == 2 and why in refused.json()["error"], refused.stdout
    assert db.items.find_one({"_id": 6})["name"] == "the app wrote this"
    forced = rcli("recover", "apply", pid, "--incident", str(iid), "--apply", "--force-id", "6", "--no-verify",
                  "--uri", mongo_uri, "--json")
    assert forced.code == 0 and forced.json()["counts"]["items"]["forced"] == 1 and forced.json()["verify"] is None
    assert db.items.find_one({"_id": 6})["label"] == "fixed"
    assert [t["data"]["action"] for t in Incidents.from_environment().timeline(iid)
            if t["kind"] == "recovery_action"].count("verify") == 0
    # --yes records the undo on the apply's incident: closed, the undo is refused (exit 2), nothing written
    inc = Incidents.from_environment()
    inc.acknowledge(iid)
    inc.resolve(iid, "done")
    inc.review(iid, root_cause="test")
    inc.close(iid)
    applied = hashes(db)
    closed = rcli("recover", "undo", pid, "--yes", "--uri", mongo_uri, "--json")
    assert closed.code == 2 and "closed" in closed.json()["error"] and "--incident" in closed.json()["hint"]
    assert hashes(db) == applied and _status(pid) == "applied"


def test_apply_killed_midway_then_rerun_completes_without_duplicates(rcli, mongo_uri, db, fluxa_home):
    seed(db, 300)
    original = hashes(db)
    pid = _plan(rcli, mongo_uri, db.name, "--insert", "20")["plan_id"]
    want = after_hashes(engine.load_plan(open_store(), pid))
    deleted = {c.id for c in engine.load_plan(open_store(), pid).changes if c.op == "delete"}
    iid = _incident()
    cmd = ["recover", "apply", pid, "--incident", str(iid), "--apply", "--batch-size", "10", "--uri", mongo_uri,
           "--json"]
    ready = fluxa_home / "paused"
    # the test-only hook (recovery/apply.py): after its 3rd journal file, before that batch's writes,
    # the apply signals `ready` and waits - the kill lands at a known point, however fast the machine
    proc = _start(fluxa_home, *cmd, env={PAUSE_ENV: f"3:{ready}"})
    try:
        _wait_for(ready.exists, proc, "the apply to pause after three journal batches")
        assert _journal_files(fluxa_home, pid) == 3 and _status(pid) == "applying"
        # a second apply beside the running one is refused, naming it, and writes nothing
        beside = rcli(*cmd)
        assert beside.code == 2 and "another recovery apply" in beside.json()["error"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert _status(pid) == "applying"  # a killed apply is visible as unfinished, never as done
    now = hashes(db)
    assert any(now.get(k) != v for k, v in want.items()), "nothing left to resume"
    again = rcli(*cmd)
    assert again.code == 0, again.stderr
    out = again.json()
    assert out["resumed"] is True and out["counts"]["items"]["already"] > 0
    assert out["counts"]["items"]["written"] + out["counts"]["items"]["already"] == len(want) + len(deleted)
    now = hashes(db)
    assert {k: now[k] for k in want} == want and not deleted & set(now)
    assert db.items.count_documents({}) == 300 - len(deleted) + 20  # no duplicate, nothing lost
    und = rcli("recover", "undo", pid, "--incident", str(iid), "--uri", mongo_uri, "--json")
    assert und.code == 0, und.stderr
    assert hashes(db) == original  # the journal kept the first image of every document


def test_server_restarted_midway_then_rerun_completes(rcli, private_server, fluxa_home):
    uri = private_server.status().uri
    c = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    app = c["app"]
    seed(app, 300)
    original = hashes(app)
    pid = _plan(rcli, uri, "app")["plan_id"]
    plan = engine.load_plan(open_store(), pid)
    want = after_hashes(plan)
    iid = _incident()
    cmd = ["recover", "apply", pid, "--incident", str(iid), "--apply", "--batch-size", "10", "--json"]
    ready = fluxa_home / "paused"
    proc = _start(fluxa_home, *cmd, "--uri", uri, env={PAUSE_ENV: f"2:{ready}"})
    try:
        _wait_for(ready.exists, proc, "the apply to pause after two journal batches")
        private_server.kill()
    finally:
        Path(f"{ready}.go").touch()  # the apply goes on, against a server that is gone
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2 and "Traceback" not in err, (out, err)
    assert "interrupted" in json.loads(out)["error"] and "rerun" in json.loads(out)["hint"]
    assert _status(pid) == "failed"
    uri = private_server.start(progress=lambda m: None).uri
    again = rcli(*cmd, "--uri", uri)
    assert again.code == 0, again.stderr
    assert again.json()["resumed"] is True
    c = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    now = hashes(c["app"])
    assert {k: now[k] for k in want} == want
    assert c["app"].items.count_documents({}) == 300 - sum(1 for ch in plan.changes if ch.op == "delete") + 4
    statuses = [e["data"]["status"] for e in Incidents.from_environment().timeline(iid)
                if e["kind"] == "recovery_action" and e["data"]["action"] == "recipe"]
    assert statuses[-1] == "applied" and statuses[0] in ("partial", "failed") and len(statuses) == 2
    und = rcli("recover", "undo", pid, "--incident", str(iid), "--uri", uri, "--json")
    assert und.code == 0, und.stderr
    assert hashes(c["app"]) == original
    c.close()
