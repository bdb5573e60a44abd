"""`fluxa-integrity drill`: the playbook's four scenarios end to end on a scratch database.

Ground truth twice over: the drill's own report (every affected document equal to its pre-fault
copy by content hash, checks clean, 0 lost), and, independently of the drill's code, the same
dataset generated again from the same seed into another database: every document the last
scenario's manifest names must be byte-for-byte what the generator makes.
"""

from __future__ import annotations

import uuid

import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from fluxa_integrity.drill import runner
from fluxa_integrity.drill.scenarios import SCENARIOS, Scenario, Step
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import load_policy
from fluxa_integrity.recovery.model import content_hash
from fluxa_integrity.recovery.provenance import content_hash_without, provenance_field

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
USERS, SEED = 20, 7


@pytest.fixture()
def scratch(client):
    name = f"drill_{uuid.uuid4().hex[:8]}"
    yield name
    for suffix in ("", m.SECONDARY_SUFFIX, "_restored"):
        client.drop_database(name + suffix)


def test_drill_all_brings_every_document_back(cli, client, mongo_uri, scratch, fluxa_home):
    r = cli("drill", "all", "--uri", mongo_uri, "--db", scratch, "--users", str(USERS), "--seed", str(SEED), "--json")
    assert r.code == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = r.json()
    assert out["ok"] is True
    assert [x["scenario"] for x in out["scenarios"]] == list(SCENARIOS)
    assert out["total"]["documents_lost"] == 0 and out["total"]["checks_clean"] is True
    incidents = Incidents.from_environment()  # the store the CLI wrote ($FLUXA_HOME of this test)
    for x in out["scenarios"]:
        cmp = x["comparison"]
        assert x["ok"] and x["documents_lost"] == 0 and x["checks_after"] == [], x["scenario"]
        assert cmp["compared"] > 0 and cmp["equal"] == cmp["compared"] and not x["differing_ids"]
        assert all(f["detected"] == f["documents"] > 0 for f in x["faults"]), x["faults"]
        assert {p["phase"] for p in x["phases"]} == set(runner.PHASES)
        assert all(p["status"] in ("ok", "skipped") for p in x["phases"])
        assert x["rpo"]["achieved_seconds"] == 0 and x["rpo"]["met"] is True
        assert x["rto"]["achieved_seconds"] is not None and x["rto"]["met"] is True
        assert x["time_to_detect_seconds"] > 0 and x["time_to_recover_seconds"] > 0
        assert all(s.get("verified") in (True, None) and s["status"] != "missing" for s in x["steps"])
        # the incident is a closed drill (read in-process: a CLI subprocess per scenario costs its
        # import each time, and `incident show` has its own CLI tests in test_incidents.py)
        inc = incidents.get(x["incident"])
        assert inc["status"] == "closed" and inc["drill"] is True, inc

    # independent ground truth: the last scenario's documents as the generator makes them
    twin = scratch + "_twin"
    policy = load_policy(None)
    try:
        generate(client[twin], GenerateOptions(users=USERS, seed=SEED), drop=True)
        man = Manifest(fluxa_home / "drills" / f"{scratch}-{list(SCENARIOS)[-1]}.faults.json", scratch)
        assert man.injections
        for inj in man.injections:
            where = {inj.collection: list(inj.ids) + list(inj.related)}
            for coll, key in ((m.MESSAGES, "messages"), (m.CONVERSATIONS, "conversations")):
                where.setdefault(coll, []).extend(inj.details.get(key, []))  # lost-messages, deleted-messages
            for c, ids in where.items():
                if not ids:
                    continue
                # a rebuilt message carries the policy's provenance mark; without it, it is the original
                mark = provenance_field(policy, c)
                want = {d["_id"]: content_hash(d) for d in client[twin].get_collection(c, codec_options=RAW).find({"_id": {"$in": ids}})}
                got = {d["_id"]: content_hash_without(d, mark) for d in client[scratch].get_collection(c, codec_options=RAW).find({"_id": {"$in": ids}})}
                assert len(want) == len(set(ids)), f"{inj.kind}: the twin lacks some of {c}'s ids"
                assert got == want, f"{inj.kind} in {c}: documents differ from a fresh generation"
    finally:
        client.drop_database(twin)
        client.drop_database(m.secondary_db_name(twin))


def test_unknown_scenario_is_bad_input(cli, mongo_uri):
    r = cli("drill", "earthquake", "--uri", mongo_uri, "--json")
    assert r.code == 2
    assert "unknown drill scenario 'earthquake'" in r.json()["error"]


def test_a_database_the_generator_did_not_make_is_never_dropped(cli, client, mongo_uri, scratch):
    client[scratch]["orders"].insert_one({"_id": 1, "total": 10})
    r = cli("drill", "corruption", "--uri", mongo_uri, "--db", scratch, "--json")
    assert r.code == 2
    assert "did not make" in r.json()["error"]
    assert client[scratch]["orders"].find_one({"_id": 1}) == {"_id": 1, "total": 10}


def test_a_missing_recipe_is_said_and_fails(client, mongo_uri, scratch, monkeypatch):
    """Never pretend: a scenario whose recipe is not installed fails in the recover phase, says
    which recipe, and leaves no live drill incident behind."""
    fake = Scenario(name="corruption", title="Database Corruption", faults=SCENARIOS["corruption"].faults[:1],
                    steps=(Step("no-such-recipe", lambda f: {}, "a recipe nobody wrote"),),
                    compare=(m.USERS,), root_cause="test", contain=(m.USERS,))
    monkeypatch.setitem(SCENARIOS, "corruption", fake)
    incidents = Incidents.from_environment()
    res = runner.run_scenario(mongo_uri, client, scratch, "corruption", incidents.policy, incidents.store, incidents,
                              runner.DrillOptions(users=10))
    assert not res.ok
    recover = next(p for p in res.phases if p.name == "recover")
    assert recover.status == "missing" and "no-such-recipe" in recover.note
    assert res.steps[0]["status"] == "missing"
    assert incidents.get(res.incident_id)["status"] == "closed"
    assert incidents.containment(scratch) == {}


def test_a_drill_killed_midway_leaves_nothing_that_swallows_the_next_one(client, mongo_uri, scratch, monkeypatch):
    """A drill whose process died left its incident open and its collections read-only; the next
    drill on that scratch database closes and lifts it (said in the notes), opens its own, and
    never touches an incident that is not a drill's."""
    fake = Scenario(name="corruption", title="Database Corruption", faults=SCENARIOS["corruption"].faults[:1],
                    steps=(Step("no-such-recipe", lambda f: {}, "a recipe nobody wrote"),),
                    compare=(m.USERS,), root_cause="test", contain=(m.USERS,))
    monkeypatch.setitem(SCENARIOS, "corruption", fake)
    incidents = Incidents.from_environment()
    left = incidents.open("drill left behind", [m.USERS], database=scratch, drill=True)["id"]
    incidents.contain(left, client[scratch], read_only=True, collections=[m.USERS])
    real = incidents.open("a real incident on the same database", [m.USERS], database=scratch)["id"]
    assert incidents.containment(scratch) != {}

    res = runner.run_scenario(mongo_uri, client, scratch, "corruption", incidents.policy, incidents.store, incidents,
                              runner.DrillOptions(users=10))
    assert incidents.get(left)["status"] == "closed"
    assert any(f"closed drill incident {left}" in n for n in res.notes)
    assert res.incident_id not in (None, left, real)
    assert incidents.get(real)["status"] == "open"
    assert incidents.containment(scratch) == {}  # the leftover's read-only was lifted, and this drill's too
