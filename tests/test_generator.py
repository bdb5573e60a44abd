"""The generator: deterministic, realistic, consistent with itself, and safe to interrupt."""

from __future__ import annotations

import os
import threading
import time
from statistics import median

import pymongo
import pytest

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.generator import GenerateOptions, generate, planned_counts
from fluxa_integrity.mongo.hashing import database_hash


def test_same_seed_same_hash_other_seed_other_hash(client, db):
    a = generate(db, GenerateOptions(users=150, seed=42))
    other = client[db.name + "_b"]
    try:
        b = generate(other, GenerateOptions(users=150, seed=42))
        assert a.counts == b.counts
        ha, hb = database_hash(db, list(m.COLLECTIONS)), database_hash(other, list(m.COLLECTIONS))
        assert ha == hb
        generate(other, GenerateOptions(users=150, seed=43), drop=True)
        assert database_hash(other, list(m.COLLECTIONS))["*"] != ha["*"]
    finally:
        client.drop_database(other.name)
        client.drop_database(m.secondary_db_name(other.name))


def test_counts_match_plan_and_are_heavy_tailed(db):
    opts = GenerateOptions(users=400, seed=9)
    res = generate(db, opts)
    plan = planned_counts(opts)
    for name in (m.USERS, m.CONVERSATIONS, m.MESSAGES):
        assert res.counts[name] == plan[name] == db[name].count_documents({})
    per_conv = [c["messageCount"] for c in db[m.CONVERSATIONS].find({}, {"messageCount": 1})]
    assert max(per_conv) > 5 * median(per_conv)  # a long tail, not a uniform spread
    assert 7 <= sum(per_conv) / len(per_conv) <= 13  # around the requested mean of 10


def test_clean_data_is_internally_consistent(db):
    generate(db, GenerateOptions(users=100, seed=2))
    users = {u["_id"]: u for u in db[m.USERS].find()}
    convs = {c["_id"]: c for c in db[m.CONVERSATIONS].find()}
    msgs = list(db[m.MESSAGES].find())
    msg_ids = {x["_id"] for x in msgs}
    assert len({u["email"].lower() for u in users.values()}) == len(users)
    assert all(c["userId"] in users for c in convs.values())
    counts: dict = {}
    for x in msgs:
        assert x["conversationId"] in convs
        assert x.get("parentId", "absent") == "absent" or x["parentId"] in msg_ids
        assert x["timestamp"] >= convs[x["conversationId"]]["createdAt"]
        counts[x["conversationId"]] = counts.get(x["conversationId"], 0) + 1
    assert all(c["messageCount"] == counts[cid] for cid, c in convs.items())
    firsts = [x for x in msgs if "parentId" not in x]
    assert len(firsts) == len(convs)  # exactly one first message per conversation
    # chat history can be rebuilt from logs: one log per message with its text and direction
    logs = {lg["messageId"]: lg for lg in db[m.LOGS].find({"messageId": {"$exists": True}})}
    assert set(logs) == msg_ids
    for x in msgs:
        lg = logs[x["_id"]]
        assert lg["messageContent"] == x["text"] and lg["timestamp"] == x["timestamp"]
        assert lg["operation"] == ("message_sent" if x["sender"] == "user" else "message_received")
    # lastLogin is the last login in the logs (one pass over the logs, not a filter per user:
    # FerretDB scans the whole collection for each); every user has an audit insert
    logins: dict = {}
    for lg in db[m.LOGS].find({"operation": "login"}, {"userId": 1, "timestamp": 1}):
        logins.setdefault(lg["userId"], []).append(lg["timestamp"])
    assert set(logins) <= set(users)
    for uid, u in users.items():
        assert u.get("lastLogin") == (max(logins[uid]) if uid in logins else None)
    assert db[m.AUDIT_LOG].count_documents({"operation": "insert", "collection": "users"}) == len(users)
    sec = db.client[m.secondary_db_name(db.name)]
    assert sec[m.USERS].count_documents({}) == len(users)
    last_sync = sec[m.SYNC_STATE].find_one({"_id": "users"})["lastSyncAt"]
    assert all(u["lastUpdated"] <= last_sync for u in users.values())


def test_refuses_to_overwrite_without_drop(db):
    generate(db, GenerateOptions(users=20, seed=1))
    with pytest.raises(FluxaError, match="already holds data"):
        generate(db, GenerateOptions(users=20, seed=1))
    assert generate(db, GenerateOptions(users=20, seed=1), drop=True).counts[m.USERS] == 20


@pytest.mark.skipif(bool(os.environ.get("FLUXA_TEST_MONGODB_URI")), reason="kills the server")
def test_server_killed_mid_generation_then_rerun_starts_clean(private_server, cli):
    uri = private_server.status().uri
    args = ("fluxa", "generate", "--users", "250", "--seed", "4", "--uri", uri, "--db", "killme")
    c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000)

    def kill_when_loading():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if c.killme[m.MESSAGES].estimated_document_count() > 5_000:  # of ~12k (batches of 5000): mid-load
                    break
            except pymongo.errors.PyMongoError:
                pass
            time.sleep(0.05)
        private_server.kill()

    killer = threading.Thread(target=kill_when_loading)
    killer.start()
    res = cli(*args)
    killer.join()
    c.close()
    assert res.code == 2, res.stderr[-3000:]
    assert "generation failed after" in res.stderr and "rerun the same command" in res.stderr
    assert "Traceback" not in res.stderr

    private_server.start()
    again = cli(*args, "--json")
    assert again.code == 0, again.stderr
    out = again.json()
    assert out["restarted"] is True
    c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000, tz_aware=True)
    assert c.killme[m.META_COLLECTION].find_one({"_id": "generation"})["status"] == "complete"
    for name, n in out["counts"].items():
        assert c.killme[name].count_documents({}) == n  # nothing duplicated from the first try
    c.close()
