"""The scan's column path (checks/columns.py, document_rules' screens, values.key_hashes and
dates_ms) against the per-document definitions it stands in for: equal hashes and dates, and no
document a definition would flag ever cleared by a screen. No server: batches are built here from
every odd value a field can hold."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest
from bson import Decimal128, Int64, ObjectId, Regex, Timestamp
from bson.binary import Binary
from bson.tz_util import FixedOffset, utc

from fluxa_integrity.checks.columns import Batch
from fluxa_integrity.checks.document_rules import compile_document_rule, compile_screen
from fluxa_integrity.checks.facts import to_ms
from fluxa_integrity.checks.keyset import HashCounter
from fluxa_integrity.checks.scan import PassSpec, _Scanner
from fluxa_integrity.checks.keyset import KeySet
from fluxa_integrity.checks.values import MISSING, NONE, dates_ms, key_hash, key_hashes
from fluxa_integrity.policy import default_policy
from fluxa_integrity.policy.rules import FieldOrderRule, FieldRule, MigrationRule, ReferenceRule

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=utc)
ODD = [MISSING, None, "", "user", "bot", "light", "a@b.example", "not an email", "x\x00@b.example",
       "a" * 300, 0, 5, 15, 12, 25, 2**40, -(2**31) - 1, Int64(3), Int64(2**40), 3.5, 12.0, float("nan"),
       True, False, T0, T0 - timedelta(days=400), T0.replace(tzinfo=None), ObjectId(), [], [1, "a"],
       ["user", "bot"], {}, {"theme": "dark"}, {"theme": "x", "zz": 1}, {"a": 1, "b": "s"},
       Decimal128("1.5"), Decimal("2"), b"raw", Binary(b"x", 4), Timestamp(1, 1), Regex("^a"), 2]


def _rules() -> list:
    rules = [r for _, r in default_policy().iter_rules()
             if isinstance(r, (FieldRule, FieldOrderRule, MigrationRule))]
    # every option of a field rule, alone and combined with required/only_if_present/nullable
    options = [dict(types=["string"]), dict(types=["int"]), dict(types=["int", "long"], min=12, max=20),
               dict(types=["number"]), dict(types=["date"]), dict(types=["object"]), dict(types=["array"]),
               dict(types=["null", "string"]), dict(types=["bool"]), dict(types=["decimal"]), dict(types=[]),
               dict(enum=["user", "bot"]), dict(enum=["user", None]), dict(enum=[1, 2]), dict(enum=[[1, "a"]]),
               dict(pattern="^[a-z]+$"), dict(format="email"), dict(max_length=3), dict(min=0, max=10),
               dict(allowed_keys=["theme"]), dict(key_pattern="^[a-z]$"), dict(values_types=["int"]),
               dict(values_enum=["user", "bot"]), dict(types=["string"], enum=["user", "bot"], max_length=4),
               dict()]
    presence = [dict(), dict(required=True), dict(required=True, only_if_present=True), dict(nullable=True),
                dict(nullable=False), dict(required=True, nullable=True)]
    for i, (opt, pres) in enumerate(itertools.product(options, presence)):
        rules.append(FieldRule(id=f"f{i}", field="v", **opt, **pres))
    rules.append(FieldRule(id="dotted", field="p.theme", enum=["light", "dark"], only_if_present=True))
    rules.append(FieldOrderRule(id="o", earlier="a", later="v"))
    rules.append(MigrationRule(id="m", version_field="v", expected_version=2, adds_fields=["a"]))
    return rules


def _docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        d = {"_id": ObjectId()}
        for f in ("v", "a", "p", "sender", "email", "timestamp", "createdAt", "lastUpdated", "lastLogin",
                  "preferences", "schemaVersion", "messageCount", "text", "operation", "title"):
            v = rng.choice(ODD)
            if v is not MISSING:
                d[f] = v
        if rng.random() < 0.3:
            d["p"] = {"theme": rng.choice(["light", "dark", None, 3])}
        docs.append(d)
    return docs


@pytest.mark.parametrize("uniform", [False, True])
def test_screens_never_clear_a_document_the_definition_flags(uniform):
    docs = _docs(400, 7)
    if uniform:  # batches of one value each, so the fast "every value is fine" path is taken
        batches = [[{**d, "v": v, "a": v} for d in docs[:20]] for v in ODD if v is not MISSING]
    else:
        batches = [docs]
    checked = cleared_total = 0
    for rule in _rules():
        check, screen = compile_document_rule(rule, "c"), compile_screen(rule)
        for batch in batches:
            flagged = {i for i, d in enumerate(batch) if check(d)}
            cleared = set(range(len(batch))) - set(screen(Batch(batch)))
            assert not flagged & cleared, (rule, [batch[i] for i in sorted(flagged & cleared)][:3])
            checked += len(flagged)
            cleared_total += len(cleared)
    assert checked > 1000  # the odd values do violate the rules
    assert cleared_total > 1000  # and the screens do clear documents (returning all would be no screen)


def test_key_hashes_equal_key_hash():
    oids = [ObjectId() for _ in range(5000)]
    assert key_hashes(oids).tolist() == [key_hash(o) for o in oids]
    mixed = [oids[0], "x", 3, 3.0, Int64(3), None, True, [1], {"a": 1}, T0, oids[1], Decimal128("1")]
    assert key_hashes(mixed).tolist() == [key_hash(v) for v in mixed]
    assert key_hash(3) == key_hash(3.0) and key_hash(oids[0]) != key_hash(str(oids[0]))
    assert len(set(key_hashes(oids).tolist())) == len(oids) and (key_hashes(oids) >= 0).all()
    assert key_hashes([]).tolist() == []


def test_dates_ms_equal_to_ms():
    base = [T0 + timedelta(milliseconds=997_331 * i) for i in range(-3000, 3000)]
    for tz in (utc, timezone.utc, FixedOffset(120, "plus2"), timezone(timedelta(hours=-5))):
        col = [d.astimezone(tz) for d in base]
        assert dates_ms(col).tolist() == [to_ms(d) for d in col]
    naive = [d.replace(tzinfo=None) for d in base]
    assert dates_ms(naive).tolist() == [to_ms(d) for d in naive]
    extremes = [datetime(1, 1, 1, tzinfo=utc), datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=utc)]
    assert dates_ms(extremes).tolist() == [to_ms(d) for d in extremes]
    mixed = [T0, "2026-01-01", None, MISSING, T0.replace(tzinfo=None), T0.astimezone(FixedOffset(60, "x"))]
    assert dates_ms(mixed).tolist() == [to_ms(T0), NONE, NONE, NONE, to_ms(T0), to_ms(T0)]


def test_batch_columns_match_the_documents():
    docs = _docs(300, 3)
    b = Batch(docs)
    for path in ("v", "p.theme", "_id", "timestamp"):
        from fluxa_integrity.checks.values import get_path
        vals = [get_path(d, path) for d in docs]
        assert b.values(path) == vals or all(x is y for x, y in zip(b.values(path), vals))
        assert b.hashes(path).tolist() == [NONE if v is MISSING else key_hash(v) for v in vals]
        assert b.ref_hashes(path).tolist() == [NONE if v is MISSING or v is None else key_hash(v) for v in vals]


def test_hash_counter_counts_like_a_counter():
    rng = np.random.default_rng(1)
    c, expected = HashCounter(), {}
    for _ in range(40):
        arr = rng.integers(0, 5000, rng.integers(0, 4000)).astype(np.int64)
        c.add_many(arr)
        for h in arr.tolist():
            expected[h] = expected.get(h, 0) + 1
    assert dict(c.counter()) == expected


def test_reference_odd_values_keep_document_order():
    """Missing, null, array and plain references in one batch: every violation, and the dangling
    ones in document order, as the per-document definition gives them."""
    known = [ObjectId() for _ in range(5)]
    keys = KeySet()
    keys.add_many(key_hashes(known))
    rule = ReferenceRule(id="r", field="ref", to="t", array=True)
    rng = random.Random(5)
    docs = []
    for i in range(500):
        choice = rng.choice([MISSING, None, known[0], ObjectId(), [known[1], None, ObjectId()], [], "s", 7])
        docs.append({"_id": i} if choice is MISSING else {"_id": i, "ref": choice})
    spec = PassSpec(uri="", db="d", collection="c", rules=[rule], imports={("keys", "t", "_id"): keys.freeze()},
                    user_field=None, max_samples=10_000)
    scanner = _Scanner(spec)
    scanner.batch(docs[:250])
    scanner.batch(docs[250:])
    got = {(f.variant): [s["_id"] for s in f.samples] for f in scanner.finish(0).findings}
    want_dangling, want_null = [], []
    for d in docs:
        v = d.get("ref", MISSING)
        for item in (v if isinstance(v, list) else [v]):
            if item is MISSING:
                continue
            if item is None:
                want_null.append(d["_id"])
            elif item not in known:
                want_dangling.append(d["_id"])
    assert got["dangling"] == want_dangling and got["null"] == want_null


def test_lookups_in_any_order_answer_each_query_in_place():
    """KeySet.contains and Facts.rows sort a batch's lookups for the caches: each answer must
    still land on its own query, for shuffled, sorted and repeated hashes."""
    from fluxa_integrity.checks.facts import Facts

    rng = np.random.default_rng(3)
    ids = [ObjectId() for _ in range(3000)]
    hashes = key_hashes(ids)
    keys = KeySet()
    for part in np.array_split(hashes, 7):  # several chunks, as a growing set has
        keys.add_many(part)
    facts = Facts([])
    for i in ids:
        facts.add({"_id": i})
    row_of = {int(h): r for r, h in enumerate(facts.freeze().hashes.tolist())}
    unknown = key_hashes([ObjectId() for _ in range(500)])
    for queries in (np.concatenate([rng.choice(hashes, 2000), unknown]), np.sort(hashes[:800]),
                    np.repeat(hashes[:5], 3)):
        queries = queries.copy()
        if len(queries) > 100:
            rng.shuffle(queries)
        assert keys.contains(queries).tolist() == [int(q) in row_of for q in queries]
        assert facts.rows(queries).tolist() == [row_of.get(int(q), -1) for q in queries]


def test_dates_hash_by_their_instant_one_at_a_time_and_a_column_at_a_time():
    from datetime import timedelta, timezone

    from bson.tz_util import FixedOffset

    base = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=timezone.utc)
    dates = [base + timedelta(milliseconds=k * 977) for k in range(50)]
    assert key_hashes(dates).tolist() == [key_hash(d) for d in dates]
    assert len(set(key_hashes(dates).tolist())) == 50 and min(key_hashes(dates)) >= 0
    # one instant, however a client decoded it: aware in UTC, in another offset, or naive UTC
    same = [base, base.astimezone(FixedOffset(120, "+02")), base.replace(tzinfo=None)]
    assert len({key_hash(d) for d in same}) == 1
    assert key_hash(base) != key_hash(int(base.timestamp() * 1000)) and key_hash(base) != key_hash(str(base))
    b = Batch([{"d": d} for d in dates])
    assert b.hashes("d").tolist() == [key_hash(d) for d in dates]
