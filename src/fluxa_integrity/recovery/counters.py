"""Parents' denormalised counters after documents come back (S26, S28): the policy's counter
rules (``kind: counter``) say which parent field counts which children, so a plan that brings
children back also sets each parent's counter to what it will be after the apply.

The new value is the live number of children pointing at the parent plus the documents the plan
brings back for it (which are absent from live by construction), i.e. the true count after the
apply - a counter that was stale before the loss is corrected too. A parent whose counter field
is absent is left alone (a missing counter is the migration rule's finding, not the counter's).

Output: ``update`` changes with the whole live parent as ``before`` and the same document with
the counter set (field order kept) as ``after``; the rule ids they close (for ``Plan.verify``).
Reads only; one count query per parent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import bson

from ..mongo.by_id import find_by_ids
from ..policy.rules import CounterRule
from .model import Change


def counter_rules(policy, child_collection: str) -> list[tuple[str, CounterRule]]:
    """(parent collection, rule) for every counter rule counting ``child_collection``."""
    return [(coll, r) for coll, r in policy.iter_rules() if isinstance(r, CounterRule)
            and r.child_collection == child_collection]


def parent_collections(policy, child_collection: str) -> dict[str, str]:
    """{child field: parent collection} from the counter rules counting this collection."""
    return {r.child_field: coll for coll, r in counter_rules(policy, child_collection)}


def _key(v: Any) -> bytes:
    return bson.encode({"v": v})


def counter_changes(db, policy, child_collection: str, added: Iterable[dict], why: str
                    ) -> tuple[list[Change], list[str]]:
    """Counter updates for the parents of ``added`` (documents about to be inserted)."""
    added = list(added)
    changes: list[Change] = []
    rules: list[str] = []
    for parent_coll, rule in counter_rules(policy, child_collection):
        per: Counter = Counter()
        ids: dict[bytes, Any] = {}
        for d in added:
            if rule.child_field in d and d[rule.child_field] is not None:
                k = _key(d[rule.child_field])
                per[k] += 1
                ids[k] = d[rule.child_field]
        dc = policy.data_class_for(parent_coll, rule.field)
        # the live children of every parent in one read (a count per parent is a full scan each on
        # FerretDB, which pushes down only _id: four conversations were four scans of 1M messages)
        live: Counter = Counter()
        if per:
            for d in db[child_collection].find({rule.child_field: {"$in": list(ids.values())}},
                                               {rule.child_field: 1, "_id": 0}):
                live[_key(d.get(rule.child_field))] += 1
        parents = {_key(d["_id"]): d for d in find_by_ids(db[parent_coll], ids.values())} if per else {}
        for k, n in sorted(per.items()):
            pid = ids[k]
            parent = parents.get(k)
            if parent is None or rule.field not in parent:
                continue
            value = live[k] + n
            if parent[rule.field] == value and not isinstance(parent[rule.field], bool):
                continue
            after = dict(parent)
            after[rule.field] = value
            changes.append(Change(parent_coll, "update", pid, parent, after,
                                  f"{parent_coll}.{rule.field} {parent[rule.field]!r} -> {value}: "
                                  f"{n} {child_collection} {why} (counter rule {rule.id})",
                                  dc.name if dc else None, [rule.field]))
        if per:
            rules.append(rule.id)
    return changes, rules
