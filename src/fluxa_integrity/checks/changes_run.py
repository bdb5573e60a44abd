"""`check run --changes`: every rule of the policy, exact, reading from the server only what was
written since the last such run.

The database is copied locally (checks/mirror.py) and each collection's copy is cut into parts.
A part's unfinished result (checks/partitions.py ``Partial``) is stored after it is evaluated and
used again while it still holds: its documents did not change (the oplog says which did), the
rules and their parameters did not change (a fingerprint), and what it looked up in other
collections did not change its verdicts (checks/deps.py). The parts' results - stored and new -
are merged exactly as partitions are, so the findings are those of a full run over the same
documents: unique keys, counters, counts, cross-collection references and date order included
(tests/test_check_changes.py compares with a full run after each kind of write).

What it costs: the server hands over the changed documents, by ``_id``; this process evaluates
the parts that hold them (about ``PART_DOCS`` documents each), the parts whose lookups went
stale, every part of a collection with time-dependent rules (a deletion window moves with the
clock) and the unique-key pass, and merges the rest from disk. docs/checks.md, "Runs that read
only what changed".
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field, replace
from typing import Iterator

from ..policy.rules import DeletionsRule, UniqueRule
from .deps import FactChanges, changed_keys, stale
from .mirror import CollectionCopy, Mirror
from .partitions import Split, merge, run_partition
from .scan import PassResult, PassSpec
from .sources import FileSegment


@dataclass
class CollectionStats:
    parts: int = 0
    evaluated: int = 0
    reused: int = 0
    read: int = 0  # documents read from the server
    evaluated_docs: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class PartsSource:
    """All parts of a copy, one after the other: the unique-key pass reads them whole."""

    def __init__(self, segments: list[FileSegment]):
        self.segments = segments

    def batches(self, size: int) -> Iterator[list[dict]]:
        for seg in self.segments:
            yield from seg.batches(size)


def fingerprint(spec: PassSpec) -> str:
    """What a part's result depends on besides its documents and its imports."""
    # the deletion window moves with the clock, but a pass reads it only for soft deletes
    windowed = any(isinstance(r, DeletionsRule) and r.soft_delete_field for r in spec.rules)
    what = ([r.model_dump(mode="json") for r in spec.rules], spec.export_keys, spec.export_facts,
            spec.count_children, spec.user_field, spec.since.isoformat() if spec.since and windowed else None,
            sorted((k, v.isoformat()) for k, v in spec.sync_cutoffs.items()), spec.max_samples, spec.keep_ids,
            spec.watermark_field,
            # a parent collection that did not exist skips its child rules and records no lookups:
            # its arrival must send the parts back, which no recorded dependency would do
            sorted((repr(k), v is not None) for k, v in spec.imports.items()))
    return hashlib.sha256(pickle.dumps(what, protocol=4)).hexdigest()[:16]


def import_changes(spec: PassSpec, old_exports: dict) -> tuple[dict, dict]:
    """Per import of the pass: what changed in it since the exports the stored results knew."""
    keys, facts = {}, {}
    for name, new in spec.imports.items():
        old = old_exports.get(name)
        if name[0] == "keys" and new is not None:
            keys[name] = changed_keys(old, new)
        elif name[0] == "facts" and new is not None:
            facts[name[1]] = FactChanges(old, new) if old is not None else None
    return keys, facts


def evaluate(mirror: Mirror, copy: CollectionCopy, spec: PassSpec, old_exports: dict, progress,
             stats: CollectionStats) -> tuple[PassResult, dict]:
    """The collection's PassResult from its parts, and the stored results the commit must name."""
    coll = spec.collection
    uniques = [r for r in spec.rules if isinstance(r, UniqueRule)]
    base = replace(spec, rules=[r for r in spec.rules if not isinstance(r, UniqueRule)], record_deps=True,
                   source=None, filter={}, changed_since=None)
    fp = fingerprint(base)
    stored = mirror.stored(coll)
    keys, facts = import_changes(spec, old_exports)
    stats.parts, stats.read = len(copy.parts), copy.read
    partials, refs, specs = [], {}, []
    for part in copy.parts:
        pspec = replace(base, source=FileSegment(str(part.path(mirror.root, coll)), "none"))
        specs.append(pspec)
        have = stored.get(part.name)
        partial, why = None, None
        if part.name in copy.rewritten:
            why = "documents changed"
        elif have is None:
            why = "no stored result"
        elif have[1] != fp:
            why = "rules or their parameters changed"
        else:
            partial = mirror.load_result(coll, have[0])
            why = stale(partial.deps, keys, facts)
        if why is None:
            refs[part.name] = have
            stats.reused += 1
            if progress:
                progress(coll, partial.docs)
        else:
            partial = run_partition(pspec, progress)
            # stored before the merge, which adds the next parts' counts into the first one's
            refs[part.name] = [mirror.save_result(coll, part.name, partial), fp]
            stats.evaluated += 1
            stats.evaluated_docs += partial.docs
            stats.reasons[why] = stats.reasons.get(why, 0) + 1
        partials.append(partial)
    only = None
    if uniques:
        only_spec = replace(spec, rules=uniques, export_keys=[], export_facts=[], count_children=[],
                            watermark_field=None, filter={}, changed_since=None,
                            source=PartsSource([s.source for s in specs]))
        only = run_partition(only_spec, None)
    full = replace(spec, source=None, filter={}, changed_since=None)
    return merge(Split(full, specs), partials, only), refs
