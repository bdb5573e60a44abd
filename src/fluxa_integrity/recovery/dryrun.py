"""The dry run of a plan: what applying it now would do, computed from the live database.

Shape: ``DryRun`` with the planned counts (``{collection: {op: n}}``), the state of every change
right now (``{collection: {todo, done, conflict}}``, see live.py), the conflicts (each with the
fields that changed in live since the plan's source point, up to ``MAX_LISTED``; the total in
``conflicts_total``; a change the recipe holds - live.held_keys - is one, with ``held`` saying
why), ``samples`` per collection and change kind with field-level before -> after
(values as BSON types: the faces render them, cli/render.py), and the plan's unresolved notes.

Reads only. A server error propagates (pymongo's), and the face says nothing was written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import bson
from pymongo.database import Database

from .diff import field_diff
from .live import CONFLICT, TODO, held_keys, read_live, raw_hash, state
from .model import Plan, content_hash
from .plans_store import CODEC

MAX_LISTED = 100  # conflicts listed one by one; the rest only counted
READ_BATCH = 500


@dataclass
class DryRun:
    plan_id: str | None
    recipe: str
    database: str
    summary: str
    source_point: datetime
    counts: dict  # planned: {collection: {op: n}}
    states: dict  # now: {collection: {"todo": n, "done": n, "conflict": n}}
    conflicts: list[dict] = field(default_factory=list)
    conflicts_total: int = 0
    samples: list[dict] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for per in self.counts.values() for n in per.values())

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def _sample(ch, fields: dict) -> dict:
    return {"collection": ch.collection, "op": ch.op, "id": ch.id, "reason": ch.reason,
            "data_class": ch.data_class, "fields": fields}


def dry_run(db: Database, plan: Plan, samples: int = 5) -> DryRun:
    out = DryRun(plan.id, plan.recipe, plan.database, plan.summary, plan.source_point, plan.counts(), {},
                 unresolved=list(plan.unresolved), verify=list(plan.verify))
    shown: dict[tuple, int] = {}
    by_coll: dict[str, list] = {}
    for ch in plan.changes:
        by_coll.setdefault(ch.collection, []).append(ch)
        k = (ch.collection, ch.op)
        if shown.get(k, 0) < samples:
            shown[k] = shown.get(k, 0) + 1
            out.samples.append(_sample(ch, field_diff(ch.before, ch.after)))
    held = held_keys(plan)
    for name, changes in by_coll.items():
        per = out.states.setdefault(name, {"todo": 0, "done": 0, "conflict": 0})
        for start in range(0, len(changes), READ_BATCH):
            batch = changes[start:start + READ_BATCH]
            live = read_live(db, name, [c.id for c in batch])
            for ch in batch:
                doc = live.get(bson.encode({"_id": ch.id}))
                st = state(raw_hash(doc), content_hash(ch.before), content_hash(ch.after))
                why = held.get((name, bson.encode({"_id": ch.id}))) if st == TODO else None
                if why is not None:  # the recipe holds it: a conflict although live is still the before-image
                    st = CONFLICT
                per[st] += 1
                if st == CONFLICT:
                    out.conflicts_total += 1
                    if len(out.conflicts) < MAX_LISTED:
                        now = None if doc is None else bson.decode(doc.raw, codec_options=CODEC)
                        # what changed in live since the plan read it (an insert: how it differs from the plan)
                        base = ch.after if ch.op == "insert" else ch.before
                        out.conflicts.append({**_sample(ch, field_diff(base, now)), "live_exists": doc is not None,
                                              "held": why})
    return out
