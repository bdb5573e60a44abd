"""The key-hash join of a Dask run (checks/shuffle.py), without a cluster: key sets cut into
buckets and references joined bucket by bucket find exactly the references a whole key set
lacks, with their evidence intact and in read order, whatever the number of buckets."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import numpy as np
import pytest
from bson import ObjectId

from fluxa_integrity.checks.facts import NONE, to_ms
from fluxa_integrity.checks.findings import Findings
from fluxa_integrity.checks.keyset import KeySet
from fluxa_integrity.checks.shuffle import ObjectColumn, RefRows, add_joined, join, split_keys, union
from fluxa_integrity.checks.values import key_hashes
from fluxa_integrity.policy.rules import ReferenceRule

UTC = timezone.utc
RULE = ReferenceRule(id="m.ref", category="referential", field="conversationId", to="conversations")


def references(rng: random.Random, n: int, known: list) -> tuple[list, list, list]:
    """``n`` references, about one in ten to nothing; ids and values of mixed BSON types."""
    values = [rng.choice(known) if rng.random() > 0.1 else rng.choice([ObjectId(), f"gone-{rng.random()}", 7.5])
              for _ in range(n)]
    ids = [ObjectId() if rng.random() > 0.2 else rng.choice([f"s{k}", k, None]) for k in range(n)]
    users = [rng.choice([None, 1, 2, 3]) for _ in range(n)]
    return ids, values, users


@pytest.mark.parametrize("buckets", [1, 3, 8])
def test_the_join_by_bucket_finds_what_the_whole_key_set_lacks(buckets):
    rng = random.Random(buckets)
    known = [ObjectId() for _ in range(500)] + ["a", "b", 3]
    whole = KeySet()
    whole.add_many(key_hashes(known))
    whole.freeze()
    parts = [references(rng, n, known) for n in (300, 0, 250)]  # three partitions, one empty
    when = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    rows = []
    for ids, values, users in parts:
        r = RefRows()
        half = len(ids) // 2  # two batches: one of objects, one with the ids as raw bytes when it can
        for a, b in ((0, half), (half, len(ids))):
            batch_ids = ids[a:b]
            raw = b"".join(i.binary for i in batch_ids) if batch_ids and all(type(i) is ObjectId for i in batch_ids) \
                else batch_ids
            r.add(key_hashes(values[a:b]), raw, values[a:b],
                  np.array([NONE if u is None else u for u in users[a:b]], dtype=np.int64),
                  np.full(b - a, to_ms(when), dtype=np.int64))
        rows.append(r)
    # the key set's buckets, from two "partitions" of it
    halves = [KeySet(), KeySet()]
    halves[0].add_many(key_hashes(known[:200]))
    halves[1].add_many(key_hashes(known[200:]))
    pieces = [split_keys(h, buckets) for h in halves]
    held = [union([p[b] for p in pieces]) for b in range(buckets)]
    for b, ks in enumerate(held):  # each bucket holds its share of the keys, and only it
        assert set((ks._chunks[0] % buckets).tolist()) <= {b}
    assert sum(len(ks) for ks in held) == len(whole)
    cut = [r.split(buckets) for r in rows]
    per_part = [[] for _ in rows]
    for b in range(buckets):
        for k, got in enumerate(join(RULE, "messages", held[b], [c[b] for c in cut])):
            per_part[k].extend(got)
    for k, (ids, values, users) in enumerate(parts):
        lacks = ~whole.contains(key_hashes(values)) if values else np.zeros(0, dtype=bool)
        want = [(i, "dangling", "messages.conversationId -> conversations._id: no such document", ids[i], values[i],
                 users[i], when, None) for i in np.flatnonzero(lacks).tolist()]
        assert sorted(per_part[k], key=lambda r: r[0]) == want
    assert sum(map(len, per_part)) > 20  # the data did hold dangling references


def test_dangling_rows_become_findings_in_read_order():
    rule = RULE
    rows = [[(5, "dangling", "m", "e", 1, 11, None, None), (1, "dangling", "m", "b", 1, None, None, None)], [],
            [(0, "dangling", "m", "z", 9, 12, None, None), (2, "dangling", "m", "y", 9, 11, None, None)]]
    out = Findings("messages", 3, True)
    add_joined(out, rule, "messages", rows)
    (res,) = out.results()
    assert res.variant == "dangling" and res.count == 4 and res.affected_users == 2
    assert [s["_id"] for s in res.samples] == ["b", "e", "z"] and res.ids == ["b", "e", "z", "y"]


def test_an_object_column_keeps_every_type_through_a_cut():
    col = ObjectColumn()
    oid = ObjectId()
    col.extend_oids(oid.binary)
    col.extend(["x", None, ObjectId(), 4])
    assert col.n == 5 and col.get(0) == oid
    cut = col.take(np.array([1, 2, 4]))
    assert [cut.get(k) for k in range(3)] == ["x", None, 4]


class _Docs:
    """A source of documents in batches, as checks/sources.py hands a backup's segment over."""

    def __init__(self, docs: list[dict]):
        self.docs = docs

    def batches(self, size: int):
        for k in range(0, len(self.docs), size):
            yield self.docs[k:k + size]


@pytest.mark.parametrize("buckets", [1, 4])
def test_unique_keys_joined_by_bucket_find_the_single_pass_duplicates_in_its_order(buckets):
    """Three partitions with duplicates inside one partition and across them (a triple whose
    first holder is in the last partition's predecessor, a pair split by a partition cut,
    case-insensitive): the join's finding is the single pass's, samples and ids in its order."""
    from dataclasses import replace

    from fluxa_integrity.checks.partitions import Split, merge, run_partition
    from fluxa_integrity.checks.scan import PassSpec, run_pass
    from fluxa_integrity.checks.shuffle import take_out, unique_join
    from fluxa_integrity.policy.rules import UniqueRule

    rng = random.Random(buckets)
    rule = UniqueRule(id="users.email.unique", fields=["email"], case_insensitive=True)
    emails = [f"u{rng.randrange(60)}@example.com" for _ in range(150)]
    emails[7] = "Twice@Example.com"  # in partition 0, its twin in partition 2
    emails[120] = "twice@example.com"
    docs = [{"_id": ObjectId(), "email": e if k % 9 else e.upper(), "userId": ObjectId(),
             "createdAt": datetime(2026, 1, 1, tzinfo=UTC)} | ({} if k % 13 else {"email": None})
            for k, e in enumerate(emails)]
    docs[30].pop("email")  # missing: not compared (ignore_missing)
    base = PassSpec(uri="", db="x", collection="users", rules=[rule], keep_ids=True, max_samples=15,
                    batch_size=16)
    whole = run_pass(replace(base, source=_Docs(docs)))
    cuts = [0, 50, 90, 150]
    parts = [replace(base, source=_Docs(docs[a:b]), join_uniques=True) for a, b in zip(cuts, cuts[1:])]
    partials = [run_partition(p) for p in parts]
    outs = [take_out(p, spec, buckets) for p, spec in zip(partials, parts)]
    per_part = [[] for _ in parts]
    for b in range(buckets):
        for k, rows in enumerate(unique_join(rule, "users", [o["refs"][rule.id][b] for o in outs])):
            per_part[k].extend(rows)
    merged = merge(Split(base, parts), partials, None, (), {rule.id: per_part})
    (want,) = whole.findings
    (got,) = merged.findings
    assert want.count > 10 and want.as_dict() == got.as_dict()
