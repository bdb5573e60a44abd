"""Rules decided per collection rather than per document: counters against child counts (S3),
count drops and audit-log deletions (S10), the server's validate verdict and expected indexes
(S7), and ids only the secondary system has (S8)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pymongo.database import Database
from pymongo.errors import OperationFailure

from ..policy.rules import CorruptionRule, CountDropRule, CounterRule, DeletionsRule, SyncRule
from .facts import NONE, Facts
from .findings import Findings
from .keyset import KeySet
from .values import MISSING, doc_time, get_path, key_hash

import numpy as np


def counter_findings(rule: CounterRule, collection: str, facts: Facts | None, counts: Counter, out: Findings) -> None:
    """facts: the parent collection's columns; counts: {hash(parent id): number of children}."""
    add_counter_violations(rule, collection, counter_violations(rule, facts, counts), out)


def counter_violations(rule: CounterRule, facts: Facts | None, counts: Counter) -> list[tuple]:
    """``(id hash, _id, counter value, children counted)`` of each parent whose counter is wrong,
    in id-hash order (a Dask run evaluates this per key-hash bucket and sorts the union). Compared
    in numpy: a Python loop over every parent was ~0.8 s of a run's serial end at 100k parents."""
    if facts is None:
        return []
    facts.freeze()
    hashes, values, present = facts.hashes, facts.number(rule.field), facts.value_hash(rule.field)
    keys = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    n = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    order = np.argsort(keys)
    keys, n = keys[order], n[order]
    actual = np.zeros(len(hashes), dtype=np.int64)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
        hit = keys[at] == hashes
        actual[hit] = n[at[hit]]
    # a missing counter is the migration rule's finding; NONE: the counter is not an integer at all
    bad = (present != NONE) & ((values == NONE) | (values != actual))
    return [(int(hashes[row]), facts.ids[row], int(values[row]) if values[row] != NONE else "not an integer",
             int(actual[row])) for row in np.flatnonzero(bad).tolist()]


def add_counter_violations(rule: CounterRule, collection: str, rows: list[tuple], out: Findings) -> None:
    for _h, _id, value, actual in rows:
        out.get(rule, "mismatch",
                f"{collection}.{rule.field} differs from the number of {rule.child_collection} "
                f"pointing at it ({rule.child_collection}.{rule.child_field})").add(_id, value, None, None,
                                                                                     {"actual": actual})


def count_drop_findings(rule: CountDropRule, collection: str, count: int, previous: int | None, out: Findings) -> None:
    if previous is None or previous == 0:
        return  # no baseline yet: this run sets it
    drop = 100.0 * (previous - count) / previous
    if drop > rule.max_drop_percent:
        out.get(rule, "count_drop",
                f"{collection} count fell {drop:.1f}% since the last run ({previous} -> {count}), "
                f"more than {rule.max_drop_percent}%").add(None, {"previous": previous, "now": count}, None, None)


def audit_deletion_findings(db: Database, rule: DeletionsRule, collection: str, since: datetime | None,
                            user_field: str | None, out: Findings) -> None:
    if not rule.audit_collection:
        return
    flt = {rule.audit_operation_field: "delete", rule.audit_collection_field: collection}
    if since is not None:
        flt[rule.audit_timestamp_field] = {"$gt": since}
    msg = f"{collection} documents deleted (audit log)" + (f" since {since:%Y-%m-%d %H:%M}Z" if since else "")
    for entry in db[rule.audit_collection].find(flt):
        before = entry.get("before") if isinstance(entry.get("before"), dict) else {}
        user = get_path(before, user_field) if user_field and before else MISSING
        if user_field == "_id" and before:
            user = before.get("_id", MISSING)
        when = entry.get(rule.audit_timestamp_field)
        out.get(rule, "audit_delete", msg).add(
            get_path(entry, rule.audit_document_field), {"actor": entry.get("actor"), "auditId": entry.get("_id")},
            None if user is MISSING or user is None else key_hash(user),
            when if isinstance(when, datetime) else doc_time(entry))


def corruption_findings(db: Database, rule: CorruptionRule, collection: str, out: Findings,
                        warnings: list[str]) -> None:
    if rule.validate_collection:
        try:
            verdict = db.command("validate", collection)
        except OperationFailure as exc:
            warnings.append(f"{collection}: validate is not available here ({exc.details.get('errmsg', exc)})")
            verdict = None
        if verdict is not None and (not verdict.get("valid", True) or verdict.get("errors")
                                     or verdict.get("corruptRecords")):
            out.get(rule, "validate", f"{collection}: the server's validate reports corruption").add(
                None, {"errors": verdict.get("errors", [])[:10], "corruptRecords": len(verdict.get("corruptRecords", []))},
                None, None)
    if rule.expected_indexes:
        present = {tuple((k, int(v)) for k, v in ix["key"].items()): ix for ix in db[collection].list_indexes()}
        for spec in rule.expected_indexes:
            key = tuple((k, int(v)) for k, v in spec.keys)
            ix = present.get(key)
            if ix is None or (spec.unique and not ix.get("unique")):
                out.get(rule, "index_missing", f"{collection}: an index the policy expects is missing").add(
                    None, {"keys": [list(k) for k in key], "unique": spec.unique}, None, None)


def sync_extra_findings(db_client, rule: SyncRule, collection: str, secondary_db: str, primary: KeySet,
                        out: Findings) -> None:
    """Ids in the secondary system that the primary does not have."""
    batch: list = []

    def flush():
        arr = np.fromiter((key_hash(i) for i in batch), dtype=np.int64, count=len(batch))
        for i in np.flatnonzero(~primary.contains(arr)):
            out.get(rule, "extra_in_secondary", f"{secondary_db}.{rule.secondary_collection} has ids {collection} lacks"
                    ).add(batch[i], batch[i], None, None)

    for d in db_client[secondary_db][rule.secondary_collection].find({}, {"_id": 1}, batch_size=5000):
        batch.append(d["_id"])
        if len(batch) >= 5000:
            flush()
            batch = []
    if batch:
        flush()
