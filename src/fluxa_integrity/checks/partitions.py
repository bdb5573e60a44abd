"""Partitions inside one collection: a pass split into pieces that run in separate processes and
are merged into exactly the result one pass would give.

Shape: ``split()`` turns one PassSpec into partition specs - byte segments of a backup file cut
on document boundaries (checks/sources.py: at zstd frames from a seekable file's seek table, or
by walking the length prefixes), or ``_id`` ranges on a server (bounds read from the
``_id`` index in sorted order; ids of another BSON type than the bounds go to the first range,
since the server compares ranges within one type only) - plus, when the collection has unique
rules, one extra pass that evaluates only those over the whole collection (a duplicate may span
two partitions; unique rules belong on user-sized collections, so reading one twice is cheap).
``run_partition()`` is the worker: a pass left unfinished (checks/scan.py ``scan``), returned
as a picklable ``Partial``: its findings' accumulators (counts, samples, ids, the set of user
hashes), key sets, per-id facts (rows in read order), child counts, self-references not yet
resolved, and the rows of a same-collection date-order rule. ``merge()`` adds them up in
partition order and finishes once: key sets are unions, counters sums, facts and date-order rows
concatenated, pending self-references resolved against the union of all partitions' ids, and
samples are the first N in read order - so on backup files (whose read order is the file's for
any number of partitions) the findings are identical to a single pass, samples included. On a
server the ranges are read in ``_id`` order rather than natural order: counts, ids, affected
users and dates are identical, the samples may be other documents of the same finding.

On a Dask cluster (checks/dask_pool.py) the key sets, facts, child counts and date-order rows
do not reach ``merge()``: they are held on the cluster by key hash and the rules that read them
are joined there (checks/shuffle.py); ``merge()`` gets the joins' violations (``joined``) and
adds them in read order.

Failure behaviour: a partition that fails fails the pass (the error propagates; nothing is
merged or recorded as complete).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime

from ..policy.rules import UniqueRule
from .facts import Facts
from .findings import Accumulator
from .keyset import KeySet
from .scan import PassResult, PassSpec, _Scanner, scan
from .self_order import SelfOrder
from .shuffle import add_joined
from .sources import FileSegment, frame_segments, segments
from .values import bson_type


@dataclass
class Partial:
    collection: str
    docs: int
    seconds: float
    accs: dict  # (rule id, variant) -> Accumulator, not finished
    keys: dict[str, KeySet]
    facts: Facts | None  # not frozen: rows in read order
    child_counts: dict[str, Counter]
    pending: list
    self_order: SelfOrder | None
    watermark: datetime | None
    deps: object = None  # checks/deps.Deps when the spec asked for them (check run --changes)
    outbox: dict | None = None  # rule id -> shuffle.RefRows: references left to the cluster's join


@dataclass
class Split:
    """The pieces of one pass: ``parts`` in read order, and the unique-only pass if any."""
    spec: PassSpec
    parts: list[PassSpec]
    uniques: PassSpec | None = None


def jobs(splits: list[Split]) -> list[tuple[int, object, PassSpec]]:
    """The tasks of one level, for any pool: ``(split index, kind, spec)``, kind ``"whole"`` (a
    pass not split), a partition number, or ``"uniques"`` (the unique-only pass)."""
    return [(i, kind, spec) for i, sp in enumerate(splits)
            for kind, spec in zip(tasks_of(splits, i), sp.parts + ([sp.uniques] if sp.uniques is not None else []))]


def tasks_of(splits: list[Split], i: int) -> list:
    """The kinds of split ``i``'s tasks, as ``jobs()`` names them."""
    sp = splits[i]
    if len(sp.parts) == 1 and sp.uniques is None:
        return ["whole"]
    return list(range(len(sp.parts))) + (["uniques"] if sp.uniques is not None else [])


def assemble_one(sp: Split, i: int, got: dict) -> PassResult:
    """Split ``i``'s PassResult from its tasks' results, ``got[(i, kind)]``: a whole pass as it
    came, partitions merged in their read order."""
    if (i, "whole") in got:
        return got[(i, "whole")]
    return merge(sp, [got[(i, k)] for k in range(len(sp.parts))], got.get((i, "uniques")))


def assemble(splits: list[Split], got: dict) -> list[PassResult]:
    """One PassResult per split from the tasks' results, ``got[(split index, kind)]``."""
    return [assemble_one(sp, i, got) for i, sp in enumerate(splits)]


def split(spec: PassSpec, parts: int, min_docs: int, db=None, uniques_pass: bool = True) -> Split:
    """Up to ``parts`` partitions of at least ``min_docs`` documents each. ``db``: the server's
    database handle when the pass reads a server (``spec.source`` None). ``uniques_pass``
    False: the unique rules stay in the partitions (a Dask run joins their keys by hash)."""
    if parts <= 1:
        return Split(spec, [spec])
    if isinstance(spec.source, FileSegment) and spec.source.start == 0 and spec.source.end is None:
        src = spec.source
        cut = frame_segments(src.path, src.compression, parts, min_docs)
        if cut is None:  # not a seekable file: walk its length prefixes
            cut = [FileSegment(src.path, src.compression, a, b) for a, b, _n in
                   segments(src.path, src.compression, parts, min_docs)]
        pieces = [replace(spec, source=seg) for seg in cut]
    elif spec.source is None and db is not None:
        pieces = [replace(spec, filter={"$and": [spec.filter, f]} if spec.filter else f)
                  for f in id_ranges(db, spec.collection, parts, min_docs)]
    else:
        return Split(spec, [spec])
    if len(pieces) == 1:
        return Split(spec, [spec])
    uniques = [r for r in spec.rules if isinstance(r, UniqueRule)]
    if not uniques or not uniques_pass:
        return Split(spec, pieces)
    others = [r for r in spec.rules if not isinstance(r, UniqueRule)]
    only = replace(spec, rules=uniques, export_keys=[], export_facts=[], count_children=[], watermark_field=None)
    return Split(spec, [replace(p, rules=others) for p in pieces], only)


_RANGE_TYPES = {"objectId": "objectId", "string": "string", "int": "number", "long": "number", "double": "number",
                "date": "date"}


def id_ranges(db, collection: str, parts: int, min_docs: int) -> list[dict]:
    """Filters of ``_id`` ranges of about equal size, from the ``_id`` index in sorted order."""
    from ..mongo.connection import fast_count

    n = fast_count(db, collection)
    parts = max(1, min(parts, n // max(1, min_docs)))
    if parts == 1:
        return [{}]
    bounds = []
    for k in range(1, parts):
        got = list(db[collection].find({}, {"_id": 1}).sort("_id", 1).skip(n * k // parts).limit(1))
        if got and (not bounds or got[0]["_id"] != bounds[-1]):
            bounds.append(got[0]["_id"])
    kinds = {_RANGE_TYPES.get(bson_type(b)) for b in bounds}
    if not bounds or len(kinds) != 1 or None in kinds:
        return [{}]  # ids of mixed or exotic types: one range is the honest answer
    (kind,) = kinds
    out = [{"$or": [{"_id": {"$lt": bounds[0]}}, {"_id": {"$not": {"$type": kind}}}]}]
    out += [{"_id": {"$gte": a, "$lt": b}} for a, b in zip(bounds, bounds[1:])]
    out.append({"_id": {"$gte": bounds[-1]}})
    return out


def run_partition(spec: PassSpec, progress=None) -> Partial:
    """A worker's part: the pass over one partition, left unfinished for the merge."""
    began = time.perf_counter()
    sc = scan(spec, progress)
    for ks in sc.keys.values():
        ks.freeze()
    counts = {f: c.counter() if hasattr(c, "counter") else Counter(c) for f, c in sc.child_counts.items()}
    return Partial(spec.collection, sc.docs, time.perf_counter() - began, dict(sc.findings._acc), sc.keys,
                   sc.facts, counts, sc.pending, sc.self_order, sc.watermark,
                   sc.deps.finish() if sc.deps is not None else None, sc.outbox)


def _add_acc(into: dict, key, acc: Accumulator, max_samples: int) -> None:
    have = into.get(key)
    if have is None:
        into[key] = acc
        return
    r, s = have.result, acc.result
    r.count += s.count
    r.samples.extend(s.samples[:max(0, max_samples - len(r.samples))])
    if have.keep_ids:
        r.ids.extend(s.ids or [])
    have.users |= acc.users
    for t in (s.first_doc_time, s.last_doc_time):
        if t is not None:
            r.first_doc_time = t if r.first_doc_time is None or t < r.first_doc_time else r.first_doc_time
            r.last_doc_time = t if r.last_doc_time is None or t > r.last_doc_time else r.last_doc_time


def merge(sp: Split, partials: list[Partial], uniques: Partial | None = None, held: tuple = (),
          joined: dict | None = None) -> PassResult:
    """One PassResult from the partials of ``sp.parts`` (in that order) and its unique-only pass.
    With a Dask run's key-hash join (checks/shuffle.py): ``held``, the key sets the cluster holds
    by bucket (not merged here; exported empty, the pool hands out its handle), and
    ``joined``, rule id -> what the join found per partition (dangling references, dates out of
    order with their parent in the same collection)."""
    spec = replace(sp.spec, source=None, filter={}, record_deps=False)
    sc = _Scanner(spec)  # its finish() resolves self-references and date order on the merged state
    sc.docs = sum(p.docs for p in partials)
    marks = [p.watermark for p in partials if p.watermark is not None]
    sc.watermark = max(marks) if marks else None
    accs: dict = {}
    unique_ids = {r.id for r in spec.rules if isinstance(r, UniqueRule)}
    for p in partials + ([uniques] if uniques is not None else []):
        for key, acc in p.accs.items():
            # unique rules: decided by their own pass when the split has one, else by the partial
            if uniques is None or (key[0] in unique_ids) == (p is uniques):
                _add_acc(accs, key, acc, spec.max_samples)
    sc.findings._acc = accs
    for f in sc.keys:
        if f in held:
            continue
        ks = KeySet()
        for p in partials:
            for chunk in p.keys[f]._chunks:
                ks.add_many(chunk)
        sc.keys[f] = ks
    if sc.facts is not None:
        for p in partials:
            if p.facts is not None:  # None: taken to the cluster, held there by key hash
                sc.facts.extend(p.facts)
    sc.pending = [x for p in partials for x in p.pending]
    if sc.self_order is not None:
        for p in partials:
            if p.self_order is not None:  # None: taken to the cluster's join
                sc.self_order.extend(p.self_order)
    for r in spec.rules:
        if joined and r.id in joined:
            add_joined(sc.findings, r, spec.collection, joined[r.id])
    seconds = max([p.seconds for p in partials] + ([uniques.seconds] if uniques else []))
    res = sc.finish(seconds)
    res.child_counts = {f: sum((p.child_counts[f] for p in partials), Counter()) for f in spec.count_children
                        if f not in held}
    return res
