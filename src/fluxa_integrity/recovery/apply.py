"""Applying a saved plan to the live database: journaled, idempotent, resumable, on the record.

Order of work, per batch of up to ``batch_size`` changes of one collection:

1. read the live documents of the batch (raw BSON) and decide each change (live.py): ``done``
   (live already is ``after``) is skipped; ``todo`` (live is ``before``) is written; a
   ``conflict`` (live changed after the plan's source point) is skipped and reported, unless its
   _id is in ``force_ids``;
2. journal the live documents about to be overwritten or deleted (journal.py; fsynced, whole);
3. write (writes.py): inserts (and forced writes over an absent document) in one
   ``insert_many``, replaces/updates as ``replace_one`` of the whole ``after`` by _id, deletes in
   one ``delete_many`` by _id; a value the server refuses is named. A document that changed
   between the read and the write (an insert's _id taken, a replaced document gone) is counted
   as a conflict, not written.

Failure behaviour. The plan row goes ``planned -> applying -> applied``. A server that goes away
or a refused value leaves it ``failed`` (a killed process leaves it ``applying``), records the
partial run on the incident's timeline, and raises a FluxaError saying to rerun. Rerunning
``apply`` on an ``applying``/``failed`` plan resumes it: changes already written read back as
``done``, the rest as ``todo``, so it completes with no duplicate and nothing lost, and the
journal keeps the first (pre-apply) image of every change. An ``applied`` plan is refused ("undo
it first or make a new plan"), except to force conflicts it skipped (``force_ids``). One writer
per live database (lock.py). A live document that changes between the batch's read and its
write is not caught: there are no transactions on FerretDB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line
from ..store import Store
from .journal import Journal
from .live import CONFLICT, DONE, collection, id_key, raw_hash, read_live, state
from .lock import PlanLock
from .model import _RECIPES
from .plans_store import CODEC, get_row, load, merge_result, set_status
from .record import counts_text, record
from .writes import write_batch

UTC = timezone.utc
KINDS = ("written", "already", "conflicts", "forced")


def id_text(_id) -> str:
    """An _id as people type it back (relaxed Extended JSON): the key --force-id matches on."""
    return json_util.dumps(_id, json_options=json_util.RELAXED_JSON_OPTIONS)


@dataclass
class ApplyResult:
    plan_id: str
    status: str  # applied | partial (conflicts left unwritten)
    resumed: bool
    counts: dict  # {collection: {written, already, conflicts, forced}}
    conflicts: list[dict] = field(default_factory=list)  # {collection, op, id, reason}
    journal: str = ""
    incident_id: int | None = None
    timeline: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Progress:
    """What a face shows: one bar per collection (the CLI's BarSink fits)."""

    def start(self, collection: str, total: int | None) -> None: ...
    def advance(self, collection: str, n: int) -> None: ...
    def done(self, collection: str) -> None: ...


def by_collection(changes) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, ch in enumerate(changes):
        out.setdefault(ch.collection, []).append(i)
    return out


def apply_plan(db: Database, store: Store, incidents, plan_id: str, incident_id: int, *, actor: str | None = None,
               force_ids=(), batch_size: int = 200, progress: Progress | None = None) -> ApplyResult:
    row = get_row(store, plan_id)
    if row["database"] != db.name:
        raise FluxaError(f"recovery plan {plan_id} is for database {row['database']!r}, not {db.name!r}",
                         f"apply it with --db {row['database']}")
    if incident_id is None:
        raise FluxaError("applying a plan writes to the live database: it needs an open incident",
                         "add --incident ID (`fluxa-integrity incident list`; open one with `incident open`)")
    incident_id = int(incident_id)
    incidents.require_open(incident_id)  # unknown or closed: refused before anything is written
    with PlanLock(db.name):
        return _apply_locked(db, store, incidents, plan_id, incident_id, actor, {id_text(x) for x in force_ids},
                             max(1, int(batch_size)), progress or Progress())


def _apply_locked(db, store, incidents, plan_id, incident_id, actor, force, batch_size, progress) -> ApplyResult:
    row = get_row(store, plan_id)  # again, under the lock: the status is now stable
    status = row["status"]
    if status == "applied" and not force:
        raise FluxaError(f"recovery plan {plan_id} is already applied",
                         f"undo it first or make a new plan (`fluxa-integrity recover undo {plan_id}`, "
                         "`recover plan ...`); --force-id ID writes a conflict it skipped")
    if status in ("undoing", "undone"):
        raise FluxaError(f"recovery plan {plan_id} is {status}: its journal now belongs to the undo",
                         "make a new plan with `fluxa-integrity recover plan`"
                         + (f", or finish the undo: `recover undo {plan_id}`" if status == "undoing" else ""))
    stored = load(store, plan_id)
    plan = stored.plan
    writable = getattr(incidents, "check_writable", None)
    if writable is not None:
        dbs: dict[str, set[str]] = {}
        for ch in plan.changes:
            other, coll = ch.collection.split(".", 1) if "." in ch.collection else (db.name, ch.collection)
            dbs.setdefault(other, set()).add(coll)
        for name, colls in dbs.items():
            writable(name, sorted(colls), incident_id)  # raises FluxaError when contained by another incident
    resumed = status in ("applying", "failed")
    set_status(store, plan_id, "applying", (status,), incident_id=incident_id, actor=actor or row["actor"], error=None)
    journal = Journal(stored.dir)
    journaled = set(journal.originals())
    groups = by_collection(plan.changes)
    counts = {name: dict.fromkeys(KINDS, 0) for name in groups}
    conflicts: list[dict] = []
    where = f"{plan.recipe} plan {plan_id} in {plan.database}"
    try:
        for name, idx in groups.items():
            coll = collection(db, name)
            progress.start(name, len(idx))
            for start in range(0, len(idx), batch_size):
                batch = idx[start:start + batch_size]
                live = read_live(db, name, [plan.changes[i].id for i in batch])
                writes, records = [], []
                for i in batch:
                    ch = plan.changes[i]
                    doc = live.get(id_key(ch.id))
                    st = state(raw_hash(doc), stored.before_hashes[i], stored.after_hashes[i])
                    if st == DONE:
                        counts[name]["already"] += 1
                        continue
                    if st == CONFLICT and id_text(ch.id) not in force:
                        counts[name]["conflicts"] += 1
                        conflicts.append({"collection": name, "op": ch.op, "id": ch.id, "reason": ch.reason})
                        continue
                    writes.append((i, st))
                    if i not in journaled:
                        records.append((i, name, ch.id, doc))
                journal.append(records)  # on disk before any document of the batch is written
                journaled.update(r[0] for r in records)
                ins, rep, dels, kind = [], [], [], {}
                for i, st in writes:
                    ch = plan.changes[i]
                    kind[id_key(ch.id)] = (i, "forced" if st == CONFLICT else "written")
                    if ch.after is None:
                        dels.append(ch.id)
                        continue
                    raw = RawBSONDocument(bson.encode(ch.after, codec_options=CODEC))
                    # absent now (an insert, or a forced write over a deleted document): insert
                    (ins if live.get(id_key(ch.id)) is None else rep).append((ch.id, raw))
                missed = {id_key(m) for m in write_batch(coll, ins, rep, dels)}
                for key, (i, k) in kind.items():
                    ch = plan.changes[i]
                    if key in missed:  # changed in live between the batch read and the write
                        counts[name]["conflicts"] += 1
                        conflicts.append({"collection": name, "op": ch.op, "id": ch.id, "reason": ch.reason})
                    else:
                        counts[name][k] += 1
                progress.advance(name, len(batch))
            progress.done(name)
        spec = _RECIPES.get(plan.recipe)
        if spec is not None and spec.apply_extra is not None:  # index changes (recipes/indexes.py)
            for name, c in spec.apply_extra(db, plan, stored.dir).items():
                counts.setdefault(name, dict.fromkeys(KINDS, 0)).update(c)
    except (PyMongoError, FluxaError, OSError) as exc:
        msg = exc.message if isinstance(exc, FluxaError) else first_line(exc) if isinstance(exc, PyMongoError) else str(exc)
        set_status(store, plan_id, "failed", ("applying",), error=msg)
        done = sum(c["written"] + c["forced"] for c in counts.values())
        record(incidents, incident_id, "recipe", plan_id, f"{where} interrupted after {done} writes: {msg}",
               counts, "partial" if done else "failed", actor)
        raise FluxaError(f"applying {where} was interrupted after {done} writes: {msg}",
                         "rerun the same `recover apply` to resume it (nothing is written twice), or put back "
                         f"what it wrote with `fluxa-integrity recover undo {plan_id}`") from exc
    outcome = "partial" if conflicts else "applied"
    summary = (f"{where}" + (" (resumed)" if resumed else "") + f": {counts_text(counts)}"
               + (f"; {len(conflicts)} conflicts left unwritten (changed in live since the plan)" if conflicts else ""))
    timeline = record(incidents, incident_id, "recipe", plan_id, summary, counts, outcome, actor)
    result = ApplyResult(plan_id, outcome, resumed, counts, conflicts, str(journal.dir), incident_id, timeline)
    set_status(store, plan_id, "applied", ("applying",), applied_at=datetime.now(UTC))
    merge_result(store, plan_id, "apply", {"status": outcome, "counts": counts, "resumed": resumed,
                                           "conflict_ids": [id_text(c["id"]) for c in conflicts[:1000]],
                                           "conflicts": len(conflicts)})
    return result
