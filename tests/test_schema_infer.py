"""Schema inference on any database: what it reports is true of the data, and the policy
snippet it prints is a valid policy that passes on the data it was inferred from."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import yaml
from bson import ObjectId

from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.models import Policy
from fluxa_integrity.schema.infer import infer, policy_snippet


def _policy_with(collections: dict) -> Policy:
    base = default_policy().model_dump(mode="json")
    base["collections"] = collections
    base["data_classes"][0]["covers"] = []  # the snippet's collections are unclassified
    for dc in base["data_classes"]:
        dc["covers"] = []
    return Policy.model_validate(base)


def test_infer_an_undocumented_shop(db, mongo_uri):
    rng = random.Random(1)
    customers = [{"_id": ObjectId(), "email": f"c{i}@shop.test", "tier": rng.choice(["gold", "silver", "basic"]),
                  "since": datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(days=i)} for i in range(60)]
    db.customers.insert_many(customers)
    orders = [{"_id": i, "customerId": rng.choice(customers)["_id"], "total": rng.randint(1, 500) + 0.5,
               "note": "gift"} if i % 4 == 0 else
              {"_id": i, "customerId": rng.choice(customers)["_id"], "total": rng.randint(1, 500) + 0.5}
              for i in range(200)]
    db.orders.insert_many(orders)
    inf = infer(db, "orders").as_dict()
    assert inf["docs"] == 200
    assert inf["fields"]["customerId"]["reference"] == ["customers", 1.0] or \
        tuple(inf["fields"]["customerId"]["reference"]) == ("customers", 1.0)
    assert inf["fields"]["note"]["presence"] == 0.25
    assert inf["fields"]["total"]["types"] == {"double": 1.0}
    assert inf["fields"]["customerId"]["unique_candidate"] is False  # 200 orders, 60 customers
    cust = infer(db, "customers").as_dict()
    assert cust["fields"]["email"]["unique_candidate"] is True
    assert cust["fields"]["tier"]["enum_candidate"] == ["basic", "gold", "silver"]
    # the snippets form a policy that passes on this data, and catches a broken order
    snippet = {**policy_snippet(infer(db, "orders")), **policy_snippet(infer(db, "customers"))}
    policy = _policy_with(yaml.safe_load(yaml.safe_dump(snippet)))
    assert run_checks(mongo_uri, db.name, policy).findings == []
    db.orders.insert_one({"_id": 999, "customerId": ObjectId(), "total": "12"})
    found = {(f.rule_id, f.variant) for f in run_checks(mongo_uri, db.name, policy, RunOptions()).findings}
    assert found == {("orders.customerId.ref", "dangling"), ("orders.total.type", "type")}


def test_infer_on_fluxa_users_is_clean_on_clean_data(db, mongo_uri):
    generate(db, GenerateOptions(users=80, seed=3))
    snippet = policy_snippet(infer(db, "users"))
    rules = {r["id"]: r for r in snippet["users"]["rules"]}
    assert rules["users.email.unique"]["kind"] == "unique"
    assert rules["users.preferences.theme.type"]["enum"] == ["dark", "light", "system"]
    assert rules["users.lastLogin.type"].get("only_if_present") is True  # ~10% never logged in
    assert set(rules["users.preferences.keys"]["allowed_keys"]) == {"theme", "notifications", "language", "fontSize"}
    policy = _policy_with(snippet)
    assert run_checks(mongo_uri, db.name, policy).findings == []


def test_cli_prints_a_valid_snippet_and_errors_on_unknown_collection(cli, db, mongo_uri):
    generate(db, GenerateOptions(users=30, seed=1))
    res = cli("schema", "infer", "--collection", "conversations", "--uri", mongo_uri, "--db", db.name)
    assert res.code == 0, res.stderr
    doc = yaml.safe_load(res.stdout)
    ids = {r["id"] for r in doc["collections"]["conversations"]["rules"]}
    assert "conversations.userId.ref" in ids and "conversations.messageCount.type" in ids
    res = cli("schema", "infer", "--collection", "nope", "--uri", mongo_uri, "--db", db.name)
    assert res.code == 2 and "does not exist" in res.stderr and "conversations" in res.stderr

