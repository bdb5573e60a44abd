"""What one partition's result depended on in other collections, and whether it still holds.

`check run --changes` (checks/changes_run.py) keeps each partition's unfinished result and
re-evaluates only partitions whose documents changed - unless what the partition looked up in
*other* collections changed in a way that alters its verdicts. A pass records (``Deps``):

- per cross-collection reference, the key hashes it looked up: the partition's verdicts on them
  change only if one of those keys appeared or disappeared in the target collection;
- per parent rule (a child's date against its parent's, a field copied from the parent), for
  each parent the child documents name, the extreme child value (the earliest date for
  ``not_before``, the latest for ``not_after``) or the set of child values (``copied_field``).

``stale()`` compares the parent collections' exports of the last run with this run's: a
partition must be evaluated again if a parent it names appeared or disappeared, or if a parent
value it compares with changed and any of its children violates the rule under the old or the
new value. A parent value that moved without any child crossing it leaves every verdict as it
was: a conversation's ``lastUpdated`` that advances with a new message does not send the
partitions holding its earlier messages back to be read. Exact by construction: the verdict of
every document of a reused partition is the same under both states.
"""

from __future__ import annotations

import numpy as np

from ..policy.rules import TimestampOrderRule
from .facts import NONE, Facts
from .keyset import KeySet


class Deps:
    def __init__(self) -> None:
        self.keys: dict[tuple, KeySet] = {}
        self._parents: dict[str, tuple[object, list, list]] = {}  # while the pass runs: batches
        self.parent_rules: dict[str, tuple[object, np.ndarray, np.ndarray]] = {}  # after finish()

    def looked_up(self, key: tuple, hashes: np.ndarray) -> None:
        self.keys.setdefault(key, KeySet()).add_many(hashes)

    def parents(self, rule, refs: np.ndarray, values: np.ndarray) -> None:
        got = self._parents.setdefault(rule.id, (rule, [], []))
        got[1].append(refs)
        got[2].append(values)

    def finish(self) -> "Deps":
        """Compact: per parent one extreme value (order rules) or its distinct values (copied)."""
        for ks in self.keys.values():
            ks.freeze()
        for rid, (rule, refs, values) in self._parents.items():
            r = np.concatenate(refs) if refs else np.empty(0, dtype=np.int64)
            v = np.concatenate(values) if values else np.empty(0, dtype=np.int64)
            self.parent_rules[rid] = (rule, *_aggregate(rule, r, v))
        self._parents = {}
        return self


def _aggregate(rule, refs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(refs):
        return refs, values
    if isinstance(rule, TimestampOrderRule):
        # per parent the child value closest to crossing: the minimum for not_before, else the maximum
        sign = 1 if rule.relation == "not_before" else -1
        order = np.lexsort((values * sign, refs))
        refs, values = refs[order], values[order]
        first = np.concatenate([[True], refs[1:] != refs[:-1]])
        return refs[first], values[first]
    pairs = np.unique(np.stack([refs, values], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


# -- what changed in a parent collection between two runs ------------------------------------
def changed_keys(old: KeySet | None, new: KeySet) -> np.ndarray | None:
    """Keys present in one state and not the other; None when the old state is unknown."""
    if old is None:
        return None
    a, b = (ks.freeze()._chunks[0] if ks.freeze()._chunks else np.empty(0, dtype=np.int64) for ks in (old, new))
    return np.setxor1d(a, b, assume_unique=True)


class FactChanges:
    """Between two states of a parent collection's facts: who appeared or disappeared, and
    per field the parents whose value changed, with both values."""

    def __init__(self, old: Facts, new: Facts):
        old.freeze()
        new.freeze()
        self.presence = np.setxor1d(old.hashes, new.hashes, assume_unique=True)
        common, io, inew = np.intersect1d(old.hashes, new.hashes, assume_unique=True, return_indices=True)
        self.fields: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        for f in set(old.cols) & set(new.cols):
            (oh, oms, _), (nh, nms, _) = old.cols[f], new.cols[f]
            moved = (oh[io] != nh[inew]) | (oms[io] != nms[inew])
            self.fields[f] = (common[moved], oh[io][moved], nh[inew][moved], oms[io][moved], nms[inew][moved])
        self.unknown_fields = set(new.cols) - set(old.cols)


def _violates(rule, child: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Which (child extreme or value, parent value) pairs break the rule, as the scan decides."""
    ok = parent != NONE
    if isinstance(rule, TimestampOrderRule):
        if rule.relation == "not_before":
            return ok & (child < parent)
        if rule.relation == "not_after":
            return ok & (child > parent)
        return np.zeros(len(child), dtype=bool)
    return ok & (child != parent)


def stale(deps: Deps | None, key_changes: dict, fact_changes: dict) -> str | None:
    """Why a stored partition result no longer holds, or None when it does. ``key_changes``:
    ("keys", coll, field) -> changed keys or None (unknown); ``fact_changes``: parent collection
    -> FactChanges or None (unknown)."""
    if deps is None:
        return "no record of what it looked up"
    for key, looked in deps.keys.items():
        changed = key_changes.get(key)
        if changed is None:
            return f"{key[1]}.{key[2]} has no earlier state to compare with"
        if len(changed) and looked.contains(changed).any():
            return f"a {key[1]} it references appeared or disappeared"
    for rid, (rule, parents, values) in deps.parent_rules.items():
        fc = fact_changes.get(rule.parent_collection)
        if fc is None or rule.parent_field in fc.unknown_fields or rule.parent_field not in fc.fields:
            return f"{rule.parent_collection} has no earlier state to compare with"
        if not len(parents):
            continue
        if len(fc.presence) and np.isin(parents, fc.presence).any():
            return f"a {rule.parent_collection} document it names appeared or disappeared ({rid})"
        moved, old_h, new_h, old_ms, new_ms = fc.fields[rule.parent_field]
        if not len(moved):
            continue
        hit = np.isin(parents, moved)
        if not hit.any():
            continue
        at = np.searchsorted(moved, parents[hit])
        is_order = isinstance(rule, TimestampOrderRule)
        before, after = (old_ms, new_ms) if is_order else (old_h, new_h)
        child = values[hit]
        if (_violates(rule, child, before[at]) | _violates(rule, child, after[at])).any():
            return f"a {rule.parent_collection}.{rule.parent_field} it compares with changed ({rid})"
    return None
