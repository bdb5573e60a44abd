"""Interval rows of a clean load, from the dataset generator's timeline - the history the tests
seed and the benchmark measures false positives on.

How (docs/monitors.md, docs/performance.md): the generator (fluxa/generator.py) is run in memory
- no server - and each document is placed in the interval of its own creation time (users
``createdAt``, conversations ``createdAt``, messages, logs, audit and analytics ``timestamp``).
Inserts are those documents; updates are what the application does around them: every message
bumps its conversation (``messageCount``/``lastUpdated``), every login sets the user's
``lastLogin``; the generator deletes nothing, so a clean load has no deletes. The written-document
sample of an interval is its inserted documents plus the final state of the updated ones. The
generator's timeline has no daily rhythm; ``diurnal`` (0..1) thins documents by hour of day
(keeps ``1 - diurnal * (1 + cos(2pi (h - 15) / 24)) / 2`` of them: busiest at 15:00 UTC, quietest at
03:00) to give the series the seasonality real chat traffic has. The load grows over the span, as
users sign up: a trend the rolling training window follows.

Deterministic: same options, same rows. Pure (memory only); a span of ``days`` with
``users`` users costs about what generating them costs, held in memory at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..fluxa import model as fm
from ..fluxa.generator import BLOCK_USERS, GenerateOptions, _Builder, plan_sizes
from .field_stats import field_metrics
from .runner import Row, floor

TIME_FIELD = {fm.USERS: "createdAt", fm.CONVERSATIONS: "createdAt", fm.MESSAGES: "timestamp", fm.LOGS: "timestamp",
              fm.AUDIT_LOG: "timestamp", fm.ANALYTICS: "timestamp"}


@dataclass
class Series:
    interval: timedelta
    starts: list[datetime]
    rows: dict[str, list[Row]]  # collection -> one row per interval, in order
    samples: dict[str, list[list[dict]]]  # collection -> the written documents sampled per interval


def clean_series(users: int, days: int, interval: timedelta, *, seed: int = 1, sample_size: int = 200,
                 diurnal: float = 0.0, collections: tuple[str, ...] = (fm.USERS, fm.CONVERSATIONS, fm.MESSAGES, fm.LOGS),
                 skip_days: int = 0) -> Series:
    """Rows of every interval of the generated span (the first ``skip_days`` left out: the first
    days hold a handful of users and say little; the last day too: conversations start at least a
    day before the span ends, so its traffic fades out)."""
    opts = GenerateOptions(users=users, seed=seed, days=days, secondary=False)
    convs, msgs = plan_sizes(opts)
    builder = _Builder(opts)
    start0 = floor(opts.start, interval)
    n = int((timedelta(days=days) + (opts.start - start0)) / interval) + 1
    rng = random.Random(seed)
    ins: dict[str, list[list[dict]]] = {c: [[] for _ in range(n)] for c in collections}
    upd_ids: dict[str, list[dict]] = {c: [dict() for _ in range(n)] for c in collections}
    final: dict[str, dict] = {c: {} for c in collections}

    def slot(t: datetime) -> int:
        return int((t - start0) / interval)

    def keep(t: datetime) -> bool:
        if not diurnal:
            return True
        h = t.hour + t.minute / 60
        return rng.random() < 1 - diurnal * (1 + math.cos(2 * math.pi * (h - 15) / 24)) / 2

    for b, first in enumerate(range(0, users, BLOCK_USERS)):
        block = builder.block(b, min(BLOCK_USERS, users - first), convs, msgs)
        for coll in collections:
            for d in block[coll]:
                final[coll][d["_id"]] = d
        for coll in collections:
            for d in block[coll]:
                t = d[TIME_FIELD[coll]]
                if not keep(t):
                    continue
                ins[coll][slot(t)].append(d)
                if coll == fm.MESSAGES and fm.CONVERSATIONS in collections:
                    upd_ids[fm.CONVERSATIONS][slot(t)].setdefault(d["conversationId"], 0)
                    upd_ids[fm.CONVERSATIONS][slot(t)][d["conversationId"]] += 1
                if coll == fm.LOGS and d["operation"] == "login" and fm.USERS in collections:
                    upd_ids[fm.USERS][slot(t)].setdefault(d["userId"], 0)
                    upd_ids[fm.USERS][slot(t)][d["userId"]] += 1
    skip = int(timedelta(days=skip_days) / interval)
    # the last day left out, and with it the interval that starts at its boundary (no conversation
    # can start in it: a whole interval of the fade-out, not clean traffic)
    n = slot(opts.start + timedelta(days=days - 1))
    starts = [start0 + interval * i for i in range(skip, n)]
    rows: dict[str, list[Row]] = {}
    samples: dict[str, list[list[dict]]] = {}
    for coll in collections:
        count = sum(len(ins[coll][i]) for i in range(skip))
        rows[coll], samples[coll] = [], []
        for i in range(skip, n):
            updates = sum(upd_ids[coll][i].values())
            written = ins[coll][i] + [final[coll][k] for k in upd_ids[coll][i] if k in final[coll]]
            sample = written if len(written) <= sample_size else random.Random(f"{seed}:{coll}:{i}").sample(written, sample_size)
            count += len(ins[coll][i])
            metrics = {"inserts": len(ins[coll][i]), "updates": updates, "deletes": 0, "count": count,
                       "count_change": len(ins[coll][i]), "sampled": len(sample),
                       "fields": field_metrics(coll, sample)}
            rows[coll].append(Row(coll, starts[i - skip], True, metrics))
            samples[coll].append(sample)
    return Series(interval, starts, rows, samples)
