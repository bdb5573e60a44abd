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

Conflict mode (``plan.on_conflict``, chosen when the plan is made): ``refuse`` (the default) as
above; ``supersede`` (`restore promote`: bringing a restored copy back is the point) writes a
conflicting change too, after keeping the live document's raw bytes in the journal
(``superseded-NNNNNN.bson``, fsynced before the batch's first write); such writes are counted as
``superseded`` and named on the timeline, so a newer app write is never lost, only set aside.

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


# the commands a face tells people to rerun, by the timeline action it records
COMMANDS = {"recipe": ("recover apply", "recover undo"), "promote": ("restore promote ... --apply", "restore undo")}


def check_writable(incidents, database: str, collections, incident_id: int | None) -> None:
    """Containment: refuse (FluxaError) when one of ``collections`` (a plan's change collections:
    "<db>.<coll>" for another database) is read-only under a live incident other than
    ``incident_id`` (None: under any incident)."""
    writable = getattr(incidents, "check_writable", None)
    if writable is None:
        return
    dbs: dict[str, set[str]] = {}
    for name in collections:
        other, coll = name.split(".", 1) if "." in name else (database, name)
        dbs.setdefault(other, set()).add(coll)
    for name, colls in dbs.items():
        writable(name, sorted(colls), incident_id)


def apply_plan(db: Database, store: Store, incidents, plan_id: str, incident_id: int | None, *,
               actor: str | None = None, force_ids=(), batch_size: int = 200, progress: Progress | None = None,
               confirmed: bool = False, action: str = "recipe", hold_lock: bool = True) -> ApplyResult:
    """``incident_id`` authorises the apply (checked open first) and gets the timeline entry;
    ``confirmed`` (the operator's explicit --yes, `restore promote`) stands in for it: nothing is
    recorded then, and every incident's containment applies. ``action`` names the timeline entry
    ("recipe", or "promote"). ``hold_lock=False``: the caller already holds the database's PlanLock."""
    row = get_row(store, plan_id)
    if row["database"] != db.name:
        raise FluxaError(f"recovery plan {plan_id} is for database {row['database']!r}, not {db.name!r}",
                         f"apply it with --db {row['database']}")
    if incident_id is None and not confirmed:
        raise FluxaError("applying a plan writes to the live database: it needs an open incident",
                         "add --incident ID (`fluxa-integrity incident list`; open one with `incident open`)")
    if incident_id is not None:
        incident_id = int(incident_id)
        incidents.require_open(incident_id)  # unknown or closed: refused before anything is written
    run = lambda: _apply_locked(db, store, incidents, plan_id, incident_id, actor,  # noqa: E731
                                {id_text(x) for x in force_ids}, max(1, int(batch_size)), progress or Progress(), action)
    if not hold_lock:
        return run()
    with PlanLock(db.name):
        return run()


def _apply_locked(db, store, incidents, plan_id, incident_id, actor, force, batch_size, progress, action) -> ApplyResult:
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
    check_writable(incidents, db.name, {ch.collection for ch in plan.changes}, incident_id)  # contained: refused
    resumed = status in ("applying", "failed")
    set_status(store, plan_id, "applying", (status,), incident_id=incident_id if incident_id is not None else row["incident_id"],
               actor=actor or row["actor"], error=None)
    journal, kept = Journal(stored.dir), Journal(stored.dir, "superseded")
    journaled = set(journal.originals())
    groups = by_collection(plan.changes)
    supersede = plan.on_conflict == "supersede"
    kinds = KINDS + ("superseded",) if supersede else KINDS
    counts = {name: dict.fromkeys(kinds, 0) for name in groups}
    conflicts: list[dict] = []
    where = f"{plan.recipe} plan {plan_id} in {plan.database}"
    inflight = None  # the batch being written: (collection, kinds by _id, _ids written so far)
    try:
        for name, idx in groups.items():
            coll = collection(db, name)
            progress.start(name, len(idx))
            for start in range(0, len(idx), batch_size):
                batch = idx[start:start + batch_size]
                live = read_live(db, name, [plan.changes[i].id for i in batch])
                writes, records, newer = [], [], []
                for i in batch:
                    ch = plan.changes[i]
                    doc = live.get(id_key(ch.id))
                    st = state(raw_hash(doc), stored.before_hashes[i], stored.after_hashes[i])
                    if st == DONE:
                        counts[name]["already"] += 1
                        continue
                    if st == CONFLICT and not supersede and id_text(ch.id) not in force:
                        counts[name]["conflicts"] += 1
                        conflicts.append({"collection": name, "op": ch.op, "id": ch.id, "reason": ch.reason})
                        continue
                    writes.append((i, st))
                    if i not in journaled:
                        records.append((i, name, ch.id, doc))
                    if st == CONFLICT and supersede and doc is not None:
                        newer.append((i, name, ch.id, doc))  # a newer write: kept before it is overwritten
                journal.append(records)  # on disk before any document of the batch is written
                kept.append(newer)
                journaled.update(r[0] for r in records)
                ins, rep, dels, kind = [], [], [], {}
                for i, st in writes:
                    ch = plan.changes[i]
                    kind[id_key(ch.id)] = (i, "written" if st != CONFLICT else "superseded" if supersede else "forced")
                    if ch.after is None:
                        dels.append(ch.id)
                        continue
                    raw = RawBSONDocument(bson.encode(ch.after, codec_options=CODEC))
                    # absent now (an insert, or a forced write over a deleted document): insert
                    (ins if live.get(id_key(ch.id)) is None else rep).append((ch.id, raw))
                inflight = (name, kind, [])
                missed = {id_key(m) for m in write_batch(coll, ins, rep, dels, inflight[2])}
                inflight = None
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
                counts.setdefault(name, dict.fromkeys(kinds, 0)).update(c)
    except (PyMongoError, FluxaError, OSError) as exc:
        msg = exc.message if isinstance(exc, FluxaError) else first_line(exc) if isinstance(exc, PyMongoError) else str(exc)
        set_status(store, plan_id, "failed", ("applying",), error=msg)
        if inflight is not None:  # what the interrupted batch wrote before the error counts too
            for _id in inflight[2]:
                counts[inflight[0]][inflight[1][id_key(_id)][1]] += 1
        done = sum(c["written"] + c["forced"] + c.get("superseded", 0) for c in counts.values())
        record(incidents, incident_id, action, plan_id, f"{where} interrupted after {done} writes: {msg}",
               counts, "partial" if done else "failed", actor)
        again, undo = COMMANDS.get(action, COMMANDS["recipe"])
        raise FluxaError(f"applying {where} was interrupted after {done} writes: {msg}",
                         f"rerun the same command to resume it (`{again}`; nothing is written twice), or put "
                         f"back what it wrote with `fluxa-integrity {undo} {plan_id}`") from exc
    outcome = "partial" if conflicts else "applied"
    superseded = sum(c.get("superseded", 0) for c in counts.values())
    summary = (f"{where}" + (" (resumed)" if resumed else "") + f": {counts_text(counts)}"
               + (f"; {len(conflicts)} conflicts left unwritten (changed in live since the plan)" if conflicts else "")
               + (f"; {superseded} newer live document(s) kept in the plan's journal (superseded-*.bson) "
                  "before being overwritten" if superseded else ""))
    timeline = record(incidents, incident_id, action, plan_id, summary, counts, outcome, actor)
    result = ApplyResult(plan_id, outcome, resumed, counts, conflicts, str(journal.dir), incident_id, timeline)
    set_status(store, plan_id, "applied", ("applying",), applied_at=datetime.now(UTC))
    merge_result(store, plan_id, "apply", {"status": outcome, "counts": counts, "resumed": resumed,
                                           "conflict_ids": [id_text(c["id"]) for c in conflicts[:1000]],
                                           "conflicts": len(conflicts)})
    return result
