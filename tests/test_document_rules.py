"""The per-document evaluator on documents FerretDB refuses to store (nested arrays, NaN, keys
with dots or a leading $, NUL in strings): decoded straight from BSON bytes, as the backup
reader will feed them."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import bson
from bson import Int64, ObjectId

from fluxa_integrity.checks.document_rules import compile_field_rule, compile_migration_rule
from fluxa_integrity.checks.values import MISSING, bson_type, get_path, key_hash
from fluxa_integrity.policy.rules import FieldRule, MigrationRule


def _roundtrip(doc: dict) -> dict:
    return bson.decode(bson.encode(doc), codec_options=bson.CodecOptions(tz_aware=True))


def test_odd_documents_are_evaluated_not_crashed_on():
    doc = _roundtrip({"_id": ObjectId(), "grid": [[1, 2], [3]], "score": float("nan"), "big": float("inf"),
                      "a.b": "dotted key", "$weird": 1, "name": "nul\x00inside", "n": Int64(5)})
    assert bson_type(doc["grid"]) == "array" and bson_type(doc["n"]) == "long"
    assert get_path(doc, "a.b") is MISSING  # a dotted path never matches a key with a dot in it
    check = compile_field_rule(FieldRule(id="s", field="score", types=["number"], min=0, max=10), "c")
    assert check(doc) == []  # NaN is a double; it compares false to every bound
    check = compile_field_rule(FieldRule(id="b", field="big", types=["double"], max=1e300), "c")
    assert [v for v, _, _ in check(doc)] == ["range"]
    check = compile_field_rule(FieldRule(id="n", field="name", types=["string"], max_length=5), "c")
    assert [v for v, _, _ in check(doc)] == ["length"]
    check = compile_field_rule(FieldRule(id="g", field="grid", types=["object"]), "c")
    assert [v for v, _, _ in check(doc)] == ["type"]
    assert math.isnan(doc["score"]) and key_hash(doc["score"]) == key_hash(float("nan"))


def test_field_rule_variants():
    rule = FieldRule(id="e", field="email", required=True, nullable=False, types=["string"], format="email")
    check = compile_field_rule(rule, "users")
    assert [v for v, _, _ in check({})] == ["missing"]
    assert [v for v, _, _ in check({"email": None})] == ["null"]
    assert [v for v, _, _ in check({"email": 5})] == ["type"]
    assert [v for v, _, _ in check({"email": "nope"})] == ["format"]
    assert check({"email": "a@b.co"}) == []
    prefs = compile_field_rule(FieldRule(id="p", field="p", types=["object"], allowed_keys=["a"]), "u")
    assert prefs({"p": {"a": 1, "zz": 2}})[0][:2] == ("unknown_keys", ["zz"])
    lazy = compile_field_rule(FieldRule(id="l", field="lastLogin", types=["date"], only_if_present=True, required=True), "u")
    assert lazy({}) == [] and lazy({"lastLogin": datetime.now(timezone.utc)}) == []
    assert [v for v, _, _ in lazy({"lastLogin": 1700000000000})] == ["type"]


def test_migration_rule_variants():
    check = compile_migration_rule(MigrationRule(id="m", expected_version=2, adds_fields=["messageCount"]), "conv")
    assert check({"schemaVersion": 2, "messageCount": 1}) == []
    assert [v for v, _, _ in check({"schemaVersion": 1})] == ["version", "missing:messageCount"]
    assert [v for v, _, _ in check({"schemaVersion": 2})] == ["missing:messageCount"]


def test_key_hash_matches_mongodb_equality():
    assert key_hash(3) == key_hash(3.0) == key_hash(Int64(3))
    assert key_hash("3") != key_hash(3)
    oid = ObjectId()
    assert key_hash(oid) == key_hash(ObjectId(str(oid))) and key_hash(oid) != key_hash(str(oid))
