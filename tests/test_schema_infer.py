"""Schema inference on any database: what it reports is true of the data, and the policy
snippet it prints is a valid policy that passes on the data it was inferred from."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import yaml
from bson import ObjectId
from bson.regex import Regex

from fluxa_integrity.checks.runner import RunOptions, run_checks
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.models import Policy
from fluxa_integrity.schema.infer import infer
from fluxa_integrity.schema.policy import collection_rules as policy_snippet


def _policy_with(collections: dict) -> Policy:
    base = default_policy().model_dump(mode="json")
    base["collections"] = collections
    base["migrations"] = []  # the packaged migration is Fluxa's conversations-v2
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
    assert inf["fields"]["customerId"]["reference"] == {"collection": "customers", "field": "_id", "share": 1.0}
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



# --- a database shaped like real ones: maps keyed by hashes, string keys, arrays of references -----

def _shop(db, rng: random.Random) -> dict:
    """customers with a map of carts keyed by sha1-like hashes, regex values, non-ASCII and empty
    keys; products keyed by a string sku; orders pointing at both by strings and arrays, with tags
    from a small set and an order number repeated once among 2,000."""
    products = [{"_id": ObjectId(), "sku": f"SKU-{i:04d}", "price": rng.randint(1, 90) + 0.99} for i in range(40)]
    db.products.insert_many(products)
    customers = []
    for i in range(300):
        carts = {"%040x" % rng.getrandbits(160): {"total": rng.randint(1, 300) + 0.5, "items": rng.randint(1, 9)}
                 for _ in range(rng.randint(1, 3))}
        customers.append({"_id": ObjectId(), "code": f"C{i:05d}", "email": f"c{i}@shop.test",
                          "tier": rng.choice(["gold", "silver", "basic"]), "prénom": rng.choice(["Zoé", "Émile", "Ana"]),
                          "": "empty key", "birthDate": datetime(1960, 1, 1, tzinfo=timezone.utc) + timedelta(days=41 * i),
                          "searchFilter": Regex(f"^c{i}", "i"), "carts": carts})
    db.customers.insert_many(customers)
    orders = []
    for i in range(2000):
        orders.append({"_id": ObjectId(), "orderNumber": f"ORD-{i:06d}" if i != 1500 else "ORD-000700",
                       "customerCode": rng.choice(customers)["code"],
                       "skus": [p["sku"] for p in rng.sample(products, rng.randint(1, 4))],
                       "tags": rng.sample(["gift", "express", "fragile"], rng.randint(0, 2)),
                       "total": rng.randint(5, 900) + 0.25})
    db.orders.insert_many(orders)
    return {"customers": customers, "orders": orders, "products": products}


def test_infer_a_real_world_shop_prints_a_policy_that_validates_and_holds(cli, db, mongo_uri, tmp_path):
    _shop(db, random.Random(7))
    res = cli("schema", "infer", "--uri", mongo_uri, "--db", db.name)
    assert res.code == 0, res.stderr
    path = tmp_path / "inferred.yaml"
    path.write_text(res.stdout, encoding="utf-8")
    valid = cli("policy", "validate", str(path))
    assert valid.code == 0, valid.stderr
    doc = yaml.safe_load(res.stdout)
    customers = {r["id"]: r for r in doc["collections"]["customers"]["rules"]}
    orders = {r["id"]: r for r in doc["collections"]["orders"]["rules"]}

    # ~600 hash keys: one rule for the map, none per key
    carts = [r for r in customers.values() if r.get("field", "").startswith("carts")]
    assert len(carts) == 1 and carts[0]["key_pattern"] == "^[0-9a-f]{40}$" and carts[0]["values_types"] == ["object"]
    assert len(customers) < 20, sorted(customers)
    # keys a policy id cannot spell, and a type it could not name before
    assert customers["customers.prenom.type"]["field"] == "prénom"
    assert customers["customers._empty.type"]["field"] == ""
    assert customers["customers.searchFilter.type"]["types"] == ["regex"]
    # keys: a key-like name holds in 300 documents, a birth date distinct in 300 does not
    assert customers["customers.code.unique"]["kind"] == "unique"
    assert "customers.birthDate.unique" not in customers
    # references by strings and arrays of strings, to fields other than _id
    ref = orders["orders.customerCode.ref"]
    assert (ref["to"], ref["to_field"], ref.get("array", False)) == ("customers", "code", False)
    ref = orders["orders.skus.ref"]
    assert (ref["to"], ref["to_field"], ref["array"]) == ("products", "sku", True)
    assert "orders.total.ref" not in orders and "orders.tags.ref" not in orders
    # an enum inside an array
    assert orders["orders.tags.type"]["values_enum"] == ["express", "fragile", "gift"]
    # one repeated order number among 2,000: a likely key, reported with its duplicate, not enforced yet
    near = orders["orders.orderNumber.unique"]
    assert near["enabled"] is False and "'ORD-000700' x2" in near["description"]
    assert "likely a unique key" in res.stderr and "ORD-000700" in res.stderr

    js = cli("schema", "infer", "--collection", "orders", "--uri", mongo_uri, "--db", db.name, "--json")
    assert js.code == 0, js.stderr
    fields = js.json()["collections"][0]["fields"]
    assert fields["orderNumber"]["near_unique"] == {"repeats": 1, "duplicates": [{"value": "ORD-000700", "count": 2}]}
    assert fields["orderNumber"]["unique_candidate"] is False
    assert fields["skus[]"]["reference"] == {"collection": "products", "field": "sku", "share": 1.0}
    assert set(js.json()["policy"]["collections"]) == {"orders", "customers", "products"}  # targets declared

    # the inferred rules hold on the data they came from, and catch what breaks them
    policy = _policy_with(doc["collections"])
    assert run_checks(mongo_uri, db.name, policy).findings == []
    db.customers.insert_one({"_id": ObjectId(), "code": "C99999", "email": "x@shop.test", "tier": "gold",
                             "prénom": "Ana", "": "e", "birthDate": datetime(2000, 1, 1, tzinfo=timezone.utc),
                             "searchFilter": Regex("^x"), "carts": {"not-a-hash": {"total": 1.5, "items": 1}}})
    db.orders.insert_one({"_id": ObjectId(), "orderNumber": "ORD-999999", "customerCode": "C77777",
                          "skus": ["SKU-0001", "SKU-9999"], "tags": ["bogus"], "total": 1.25})
    found = {(f.rule_id, f.variant) for f in run_checks(mongo_uri, db.name, policy).findings}
    assert ("customers.carts.type", "key_pattern") in found
    assert ("orders.tags.type", "values_enum") in found
    assert {r for r, _ in found} >= {"orders.customerCode.ref", "orders.skus.ref"}


def test_documents_the_dev_server_cannot_store_still_give_a_policy_that_loads():
    """Keys with dots or a leading $, nested arrays, NaN, Decimal128, code, MinKey: real MongoDB
    stores them; FerretDB refuses them, so they are fed to the inference as decoded documents."""
    from bson import Code, Decimal128, MaxKey, MinKey

    from fluxa_integrity.schema.infer import infer_documents
    from fluxa_integrity.schema.policy import policy_document, render_policy

    docs = [{"_id": i, "a.b": 1, "$weird": 2, "grid": [[1, 2], [3]], "ratio": float("nan") if i % 2 else 0.5,
             "price": Decimal128("1.10"), "script": Code("return 1"), "low": MinKey(), "high": MaxKey(),
             "名前": "x", "": {"": 1}, "ctrl": "a\x00b", "tags": ["a", "b"] if i % 3 else []} for i in range(30)]
    inf = infer_documents("odd", docs)
    text = render_policy(policy_document([inf], "odd"))
    rules = {r["id"]: r for r in yaml.safe_load(text)["collections"]["odd"]["rules"]}
    assert rules["odd.u540du524d.type"]["field"] == "名前"
    assert rules["odd._empty._empty.type"]["field"] == "."  # the empty key inside the empty key
    assert "types" not in rules["odd.script.type"] and "cannot name" in rules["odd.script.type"]["description"]
    assert rules["odd.price.type"]["types"] == ["decimal"]
    assert not any(r.get("field") in ("a.b", "$weird") for r in rules.values())
    assert "a.b" in yaml.safe_load(text)["collections"]["odd"]["description"]


def test_a_field_always_present_but_sometimes_null_passes_the_rules_inferred_from_it(db, mongo_uri):
    # review 1, item 3: required + types [string, null] used to leave nullable unset, which on a
    # required field refuses null: the snippet flagged the very documents it was inferred from
    db.tickets.insert_many([{"_id": i, "assignee": None if i % 3 == 0 else f"agent{i % 5}", "title": f"t{i}"}
                            for i in range(60)])
    snippet = policy_snippet(infer(db, "tickets"))
    rules = {r["id"]: r for r in snippet["tickets"]["rules"]}
    policy = _policy_with(yaml.safe_load(yaml.safe_dump(snippet)))
    assert [(f.rule_id, f.variant) for f in run_checks(mongo_uri, db.name, policy).findings] == []
    rule = rules["tickets.assignee.type"]
    assert rule["required"] is True and "null" in rule["types"] and rule["nullable"] is True
    assert rules["tickets.title.type"]["nullable"] is False  # never null: null stays refused
    db.tickets.insert_one({"_id": 999, "assignee": None, "title": None})
    found = {(f.rule_id, f.variant) for f in run_checks(mongo_uri, db.name, policy).findings}
    assert found == {("tickets.title.type", "null")}


def test_a_maps_key_pattern_covers_the_keys_seen_before_it_was_recognised_as_a_map(db, mongo_uri):
    # review 1, item 4: the field becomes a map past 50 distinct keys (doc 50 here); the key shapes
    # of docs 0-49 (1- and 2-digit keys) must count too, or the snippet flags docs 0-9
    db.shops.insert_many([{"_id": i, "stock": {str(i): i % 7}} for i in range(199)])
    snippet = policy_snippet(infer(db, "shops"))
    rule = {r["id"]: r for r in snippet["shops"]["rules"]}["shops.stock.type"]
    assert rule["key_pattern"] == "^[0-9a-f]{1,3}$", rule
    policy = _policy_with(yaml.safe_load(yaml.safe_dump(snippet)))
    assert [(f.rule_id, f.variant, f.count) for f in run_checks(mongo_uri, db.name, policy).findings] == []
    db.shops.insert_one({"_id": 999, "stock": {"apples": 1}})
    found = [(f.rule_id, f.variant, f.count) for f in run_checks(mongo_uri, db.name, policy).findings]
    assert found == [("shops.stock.type", "key_pattern", 1)]
