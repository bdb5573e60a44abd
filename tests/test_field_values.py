"""Lossless conversions (recovery/field_values.py) are checked, not assumed: an integer string
beyond int64 is not an Int64 (BSON cannot hold it), "1e400" is not infinity, and a string whose
digits a double cannot carry is not that double. End to end: such a value in a document makes a
correct-by-policy plan that leaves it unresolved, saved whole (no traceback, no leftover files).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import bson
import pytest
from bson import Int64

from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery import engine
from fluxa_integrity.recovery.field_values import NO_VALUE, coerce
from fluxa_integrity.recovery.model import RecipeContext
from fluxa_integrity.recovery.plans_store import plans_root
from fluxa_integrity.store import open_store

UTC = timezone.utc
INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("text,types,expected", [
    ("42", ["int", "long"], 42),
    ("3000000000", ["int", "long"], Int64(3000000000)),
    (str(INT64_MAX), ["long"], Int64(INT64_MAX)),
    (str(-(2**63)), ["long"], Int64(-(2**63))),
    ("0.1", ["double"], 0.1),
    ("1.50", ["double"], 1.5),
    ("-2.5e3", ["number"], -2500.0),
    ("10000000000000000000", ["double"], 1e19),  # beyond int64, but a double holds it exactly
])
def test_conversions_that_keep_every_digit(text, types, expected):
    out = coerce(text, types)
    assert out == expected and type(out) is type(expected)
    bson.encode({"v": out})  # storable


@pytest.mark.parametrize("text,types", [
    (str(INT64_MAX + 1), ["long"]),
    ("9999999999999999999", ["int", "long"]),
    ("9999999999999999999", ["number"]),  # nor a double that lost its last digits
    ("-9999999999999999999", ["long", "double"]),
    ("1e400", ["double"]),
    ("-1e400", ["number"]),
    ("12345678901234567890123", ["double"]),
    ("0.1000000000000000000001", ["double"]),
])
def test_conversions_that_would_lose_or_overflow_are_refused(text, types):
    assert coerce(text, types) is NO_VALUE


def test_widening_a_huge_whole_double_to_an_integer_is_refused():
    assert coerce(1e300, ["long"], widen=True) is NO_VALUE
    assert coerce(math.inf, ["long"], widen=True) is NO_VALUE
    assert coerce(4.0, ["long"], widen=True) == 4


def test_a_too_big_number_string_is_unresolved_and_the_plan_is_saved(db, fluxa_home):
    generate(db, GenerateOptions(users=4, seed=2, conversations_per_user=1, messages_per_conversation=1,
                                 secondary=False))
    big, fine = [u["_id"] for u in db[m.USERS].find({}, {"_id": 1}).sort("_id", 1).limit(2)]
    db[m.USERS].update_one({"_id": big}, {"$set": {"preferences.fontSize": "9999999999999999999"}})
    db[m.USERS].update_one({"_id": fine}, {"$set": {"preferences.fontSize": "16"}})
    ctx = RecipeContext(db=db, policy=default_policy(), store=open_store(), now=datetime.now(UTC))
    plan = engine.make_plan(ctx, "correct-by-policy", {"collection": m.USERS, "defaults_only": True})
    by = {c.id: c for c in plan.changes}
    assert by[fine].after["preferences"]["fontSize"] == 16 and "converted" in by[fine].reason
    assert big not in by and any(str(big) in u and "fontSize" in u for u in plan.unresolved)
    root = plans_root()
    assert sorted(p.name for p in root.iterdir()) == [plan.id]  # saved whole, nothing left over
