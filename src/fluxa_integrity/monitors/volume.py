"""Write volume per collection and interval, from the oplog: inserts, updates and deletes, and a
sample of the documents written (what field_stats.py measures).

Shape: ``read_interval`` returns an ``IntervalWrites`` - ``counts[collection]`` is a Counter of
``inserts``/``updates``/``deletes``, ``samples[collection]`` up to ``sample_size`` written
documents (a seeded reservoir over the interval's inserts and updates, so a rerun samples the
same documents). The entries come from the oplog archive and the live oplog through
backup/oplog_sources.py (the same walk point-in-time restore uses), limited to ``start <= ts <
end``. ``count_entries`` does the counting over any iterable of entries, which the benchmark and
tests feed directly.

Entries: ``i`` (the document), ``u`` (FerretDB's ``{$v: 1, $set: <whole document>}`` is the
document; a MongoDB diff update is looked up by ``o2._id`` after the walk, by indexed ``_id``
queries), ``d``, and ``applyOps`` commands (their inner operations count). Other commands are
ignored.

Failure behaviour: when no source covers the interval (the live oplog was trimmed before the
archive held it) the result is ``complete=False`` with the reason, and the monitor neither
judges nor learns from it: a partial count would look like a drop.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import bson
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from ..mongo.by_id import find_by_ids
from ..errors import FluxaError
from ..store import Store

OPS = {"i": "inserts", "u": "updates", "d": "deletes"}
LOOKUP_BATCH = 500


@dataclass
class IntervalWrites:
    counts: dict[str, Counter] = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)
    entries: int = 0
    complete: bool = True
    problem: str | None = None
    sources: list[dict] = field(default_factory=list)


def _plain(doc) -> dict:
    if isinstance(doc, RawBSONDocument):
        return bson.decode(doc.raw)
    return dict(doc)


class _Reservoir:
    """Up to ``size`` items, each of the ``seen`` ones with the same chance (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.items, self.seen = size, rng, [], 0

    def offer(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = item


def _flatten(entry) -> Iterable:
    if entry.get("op") == "c":
        inner = entry.get("o") or {}
        for op in inner.get("applyOps") or []:
            yield op
        return
    yield entry


def count_entries(entries: Iterable, db: str, collections: set[str] | None, sample_size: int,
                  seed: int = 0) -> tuple[dict[str, Counter], dict[str, list], dict[str, list]]:
    """(counts per collection, sampled documents per collection, ``_id``s sampled from updates
    that carry no whole document, to look up). ``collections`` None: every collection of ``db``."""
    prefix = db + "."
    counts: dict[str, Counter] = {}
    reservoirs: dict[str, _Reservoir] = {}
    for raw in entries:
        for e in _flatten(raw):
            ns = e.get("ns") or ""
            kind = OPS.get(e.get("op"))
            if kind is None or not ns.startswith(prefix):
                continue
            coll = ns[len(prefix):]
            if collections is not None and coll not in collections:
                continue
            counts.setdefault(coll, Counter())[kind] += 1
            if kind == "deletes" or sample_size <= 0:
                continue
            res = reservoirs.get(coll)
            if res is None:
                res = reservoirs[coll] = _Reservoir(sample_size, random.Random(f"{seed}:{coll}"))
            o = e.get("o")
            if kind == "inserts":
                res.offer(("doc", o))
            else:
                whole = o.get("$set") if o is not None and "$set" in o else None
                if whole is not None and "_id" in whole:
                    res.offer(("doc", whole))
                else:
                    o2 = e.get("o2") or {}
                    if "_id" in o2:
                        res.offer(("id", o2["_id"]))
    samples: dict[str, list] = {}
    lookups: dict[str, list] = {}
    for coll, res in reservoirs.items():
        samples[coll] = [_plain(v) for k, v in res.items if k == "doc"]
        ids = [v for k, v in res.items if k == "id"]
        if ids:
            lookups[coll] = ids
    return counts, samples, lookups


def read_interval(client, store: Store | None, db: str, start: datetime, end: datetime,
                  collections: set[str] | None, sample_size: int) -> IntervalWrites:
    """The writes of ``[start, end)`` (whole seconds: oplog ``ts`` has second resolution)."""
    from ..backup.archive_catalog import just_before
    from ..backup.oplog_sources import plan_chain, read_chain, live_source

    after = just_before(Timestamp(int(start.timestamp()), 0))
    bound = Timestamp(int(end.timestamp()), 0)
    out = IntervalWrites()
    try:
        if store is not None:
            chain = plan_chain(store, client, db, after, bound)
        else:
            src, oldest = live_source(client, after, bound)
            if src is None or not src.covers(after):
                raise FluxaError(f"the live oplog does not reach back to {start:%Y-%m-%d %H:%M:%S}Z", "")
            chain = [src]
    except FluxaError as exc:
        out.complete, out.problem = False, exc.message
        return out
    entries = read_chain(chain, after, bound, out.sources)
    counts, samples, lookups = count_entries(_counting(entries, out), db, collections, sample_size,
                                             seed=int(start.timestamp()))
    for coll, ids in lookups.items():
        for i in range(0, len(ids), LOOKUP_BATCH):
            samples.setdefault(coll, []).extend(find_by_ids(client[db][coll], ids[i:i + LOOKUP_BATCH]))
    out.counts, out.samples = counts, samples
    return out


def _counting(entries: Iterable, out: IntervalWrites) -> Iterable:
    for e in entries:
        out.entries += 1
        yield e
