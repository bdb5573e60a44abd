"""Rules between a child document and its parent in another collection (S2, S3): a date not
before (or after) the parent's, a field copied from the parent. One definition, used where the
child is read (checks/scan.py, the parent's facts imported) and, on a Dask cluster, where the
parent's facts are held by key hash (checks/shuffle.py's join).

Shape: ``verdict`` compares a column of child values with the parent column at the children's
parent rows: dates as epoch ms for ``timestamp_order``, value hashes for ``copied_field``.

Failure behaviour: a child without a parent (the reference rule's finding), or whose value or
its parent's is missing or not a date (the type rule's finding) is never a violation here.
"""

from __future__ import annotations

import numpy as np

from ..policy.rules import TimestampOrderRule
from .facts import NONE, Facts, from_ms


def child_column(rule, batch) -> np.ndarray:
    """What the child side of ``rule`` compares: its date's ms, or its value's hash."""
    return batch.ms(rule.field) if isinstance(rule, TimestampOrderRule) else batch.hashes(rule.field)


def verdict(rule, collection: str, facts: Facts, rows: np.ndarray, child: np.ndarray):
    """``(bad, variant, message)``: which children (``rows``: their parents' facts rows, -1 for
    none) break the rule, or None when the rule's relation is not one this decides."""
    is_order = isinstance(rule, TimestampOrderRule)
    ok = rows >= 0
    column = facts.ms(rule.parent_field) if is_order else facts.value_hash(rule.parent_field)
    parent = column[np.where(ok, rows, 0)]
    ok &= parent != NONE
    if is_order:
        ok &= child != NONE  # NONE: a missing or mistyped date is the type rule's finding
        if rule.relation == "not_before":
            bad, variant, word = ok & (child < parent), "before_parent", "before"
        elif rule.relation == "not_after":
            bad, variant, word = ok & (child > parent), "after_parent", "after"
        else:
            return None
        return bad, variant, f"{collection}.{rule.field} is {word} {rule.parent_collection}.{rule.parent_field}"
    # NONE when absent (not compared); a null never matches
    bad = ok & (child != NONE) & (child != parent)
    return bad, "mismatch", f"{collection}.{rule.field} differs from {rule.parent_collection}.{rule.parent_field}"


def extra(rule, facts: Facts, row: int) -> dict:
    """The parent's side of a violation's sample."""
    if isinstance(rule, TimestampOrderRule):
        return {"parent": facts.ids[row], "parent_value": from_ms(facts.ms(rule.parent_field)[row])}
    return {"parent": facts.ids[row]}
