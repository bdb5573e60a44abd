"""Applying a saved plan to the live database: journaled, idempotent, resumable, on the record.

Order of work, per batch of up to ``batch_size`` changes of one collection:

1. read the live documents of the batch (raw BSON) and decide each change (live.py): ``done``
   (live already is ``after``) is skipped; ``todo`` (live is ``before``) is written; a
   ``conflict`` (live changed after the plan's source point, or a change the recipe holds:
   live.held_keys) is skipped and reported, unless its _id is in ``force_ids``;
2. journal the live documents about to be overwritten or deleted (journal.py; fsynced, whole):
   a change already journaled is journaled again when its live bytes differ from its newest
   record, and such bytes - and every conflict about to be written (forced, or supersede mode) -
   also go to ``superseded-NNNNNN.bson``, so no write apply overwrites is lost;
3. write (writes.py): inserts (and forced writes over an absent document) in one
   ``insert_many``, replaces/updates as ``replace_one`` of the whole ``after`` by _id, deletes per
   document where the server makes that cheap (bytes deleted that differ from the journaled ones
   are kept and reported as a conflict) else in one ``delete_many``; a value the server refuses
   is named. A document that changed between the read and the write (an insert's _id taken, a
   replaced document gone) is counted as a conflict, not written;
4. record which changes were written (``done-NNNNNN.bson``, fsynced): undo acts on those.

Conflict mode (``plan.on_conflict``, chosen when the plan is made): ``refuse`` (the default) as
above; ``supersede`` (`restore promote`: bringing a restored copy back is the point) writes a
conflicting change too, after keeping the live document's raw bytes in the journal; such writes
are counted as ``superseded`` and named on the timeline, so a newer app write is never lost, only
set aside. ``force_ids`` must each name a change of the plan (typed as the plan stores its ids:
``resolve_force_ids``) and, for an applied plan, a conflict its apply left unwritten.

Failure behaviour. The plan row goes ``planned -> applying -> applied``. A server that goes away
or a refused value leaves it ``failed`` (a killed process leaves it ``applying``), records the
partial run on the incident's timeline, and raises a FluxaError saying to rerun. Rerunning
``apply`` on an ``applying``/``failed`` plan resumes it: changes already written read back as
``done``, the rest as ``todo``, so it completes with no duplicate and nothing lost. An
``applied`` plan is refused ("undo it first or make a new plan"), except to force conflicts it
skipped. The final status and the timeline entry are written once (record.py: pending entry in
the same statement as the status). One writer per database the plan writes (lock.py). A live
document that changes between the batch's read and a ``replace_one`` is not caught: there are no
transactions on FerretDB.

Test-only: ``FLUXA_TEST_PAUSE_APPLY=N:PATH`` makes a run, right after its Nth apply-journal file
(before that batch's writes), create PATH and wait until ``PATH.go`` exists - so a test can kill
the process or the server at a known point. Never set it outside tests.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import bson
from bson import ObjectId, json_util
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line
from ..store import Store
from .journal import Journal
from .live import CONFLICT, DONE, TODO, collection, held_keys, id_key, raw_hash, read_live, state
from .lock import plan_databases, plan_locks
from .model import _RECIPES, Plan
from .plans_store import CODEC, get_row, load, set_status
from .record import PENDING, counts_text, pending, record_pending
from .writes import write_batch

UTC = timezone.utc
KINDS = ("written", "already", "conflicts", "forced")
PAUSE_ENV = "FLUXA_TEST_PAUSE_APPLY"  # test-only (module doc)
ID_HINT = ("type an _id as Extended JSON: 42, '\"42\"' for the string \"42\", '{\"$oid\": \"65f0...\"}' or the bare "
           "24-hex ObjectId; `recover show PLAN` lists the conflicts")


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


def plan_collections(plan: Plan) -> set[str]:
    """Every collection a plan writes: its changes' and its index changes' (recipes/indexes.py)."""
    return ({ch.collection for ch in plan.changes}
            | {c["collection"] for c in (plan.params or {}).get("index_changes") or [] if isinstance(c, dict)})


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


def _candidates(x) -> list:
    """What a typed --force-id may mean, most literal first: Extended JSON, a 24-hex ObjectId,
    the text itself, an integer."""
    if not isinstance(x, str):
        return [x]
    out = []
    try:
        out.append(json_util.loads(x))
    except (ValueError, TypeError):
        pass
    if len(x) == 24 and ObjectId.is_valid(x):
        out.append(ObjectId(x))
    out.append(x)
    if re.fullmatch(r"\s*-?\d+\s*", x):
        out.append(int(x))
    return out


def resolve_force_ids(plan: Plan, row: dict, given) -> set[bytes]:
    """``given`` (values, or text as typed) as the id_keys of the plan's changes they name,
    matched the way the plan stores its ids (an int typed for an Int64 _id matches). Refused
    (FluxaError) when one names no change, is ambiguous, or - for an applied plan - is not a
    conflict its apply left unwritten."""
    if not given:
        return set()
    by_key = {id_key(ch.id): ch.id for ch in plan.changes}
    by_text: dict[str, list] = {}
    for k, _id in by_key.items():
        by_text.setdefault(id_text(_id), []).append(k)
    out: set[bytes] = set()
    unknown, ambiguous = [], []
    for x in given:
        found = None
        for c in _candidates(x):
            try:
                k = id_key(c)
            except Exception:  # noqa: BLE001 - not a value BSON holds: not this meaning
                continue
            if k in by_key:
                found = k
                break
            same = by_text.get(id_text(c), [])
            if len(same) == 1:
                found = same[0]
                break
            if len(same) > 1:
                ambiguous.append(x)
                break
        if found is not None:
            out.add(found)
        elif x not in ambiguous:
            unknown.append(x)
    if ambiguous:
        raise FluxaError(f"--force-id {', '.join(map(str, ambiguous))} matches more than one _id of plan {plan.id} "
                         "(the same value with different types)", ID_HINT)
    if unknown:
        raise FluxaError(f"--force-id {', '.join(map(str, unknown))}: plan {plan.id} has no change with that _id",
                         ID_HINT)
    if row["status"] == "applied":
        last = (row["result"] or {}).get("apply") or {}
        listed = set(last.get("conflict_ids") or [])
        if len(listed) >= int(last.get("conflicts") or 0):  # the list is whole: check against it
            not_skipped = [by_key[k] for k in out if id_text(by_key[k]) not in listed]
            if not_skipped:
                raise FluxaError(f"--force-id {', '.join(id_text(x) for x in not_skipped)}: not a conflict the apply "
                                 f"of plan {plan.id} left unwritten",
                                 "an applied plan only writes the conflicts it skipped (listed by `recover show PLAN`)")
    return out


def _pause_hook():
    """Test-only (module doc): called after each apply-journal file of this run."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return lambda: None
    n, path = spec.split(":", 1)
    seen = {"files": 0}

    def after_journal() -> None:
        seen["files"] += 1
        if seen["files"] == int(n):
            Path(path).write_text(str(os.getpid()))
            go = Path(path + ".go")
            while not go.exists():
                time.sleep(0.02)

    return after_journal


def apply_plan(db: Database, store: Store, incidents, plan_id: str, incident_id: int | None, *,
               actor: str | None = None, force_ids=(), batch_size: int = 200, progress: Progress | None = None,
               confirmed: bool = False, action: str = "recipe", hold_lock: bool = True) -> ApplyResult:
    """``incident_id`` authorises the apply (checked open first) and gets the timeline entry;
    ``confirmed`` (the operator's explicit --yes, `restore promote`) stands in for it: nothing is
    recorded then, and every incident's containment applies. ``action`` names the timeline entry
    ("recipe", or "promote"). ``force_ids``: values or text as typed (resolve_force_ids).
    ``hold_lock=False``: the caller already holds the PlanLock of every database the plan writes."""
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
                                list(force_ids or ()), max(1, int(batch_size)), progress or Progress(), action)
    if not hold_lock:
        return run()
    with plan_locks(plan_databases(db.name, (row["counts"] or {}).keys())):
        return run()


def _apply_locked(db, store, incidents, plan_id, incident_id, actor, force_given, batch_size, progress,
                  action) -> ApplyResult:
    record_pending(store, incidents, plan_id)  # a run killed after its status, before its timeline entry
    row = get_row(store, plan_id)  # again, under the lock: the status is now stable
    status = row["status"]
    if status == "applied" and not force_given:
        raise FluxaError(f"recovery plan {plan_id} is already applied",
                         f"undo it first or make a new plan (`fluxa-integrity recover undo {plan_id}`, "
                         "`recover plan ...`); --force-id ID writes a conflict it skipped")
    if status in ("undoing", "undone"):
        raise FluxaError(f"recovery plan {plan_id} is {status}: its journal now belongs to the undo",
                         "make a new plan with `fluxa-integrity recover plan`"
                         + (f", or finish the undo: `recover undo {plan_id}`" if status == "undoing" else ""))
    stored = load(store, plan_id)
    plan = stored.plan
    force = resolve_force_ids(plan, row, force_given)  # an id the plan does not hold: refused, nothing written
    check_writable(incidents, db.name, plan_collections(plan), incident_id)  # contained: refused
    resumed = status in ("applying", "failed")
    set_status(store, plan_id, "applying", (status,), incident_id=incident_id if incident_id is not None else row["incident_id"],
               actor=actor or row["actor"], error=None)
    journal, kept, done_log = Journal(stored.dir), Journal(stored.dir, "superseded"), Journal(stored.dir, "done")
    latest = journal.latest()  # each change's newest journaled live document
    paused = _pause_hook()
    groups = by_collection(plan.changes)
    held = held_keys(plan)  # written in live after the source point: conflicts while still to write
    supersede = plan.on_conflict == "supersede"
    kinds = KINDS + ("superseded",) if supersede else KINDS
    counts = {name: dict.fromkeys(kinds, 0) for name in groups}
    conflicts: list[dict] = []
    where = f"{plan.recipe} plan {plan_id} in {plan.database}"
    inflight = None  # the batch being written: (collection, {key: (i, kind, live)}, _ids written, raced deletes)

    def conflict(name, ch, why=None) -> None:
        counts[name]["conflicts"] += 1
        conflicts.append({"collection": name, "op": ch.op, "id": ch.id, "reason": why or ch.reason})

    def settle(name, kind, written, raced) -> None:
        """After a batch's writes (or an error in them): keep what a delete raced with, then the
        done records - undo acts on these."""
        racing = {id_key(_id): raw for _id, raw in raced}
        kept.append([(kind[id_key(_id)][0], name, _id, raw) for _id, raw in raced])
        done_log.append_done([(kind[id_key(_id)][0], racing.get(id_key(_id), kind[id_key(_id)][2]))
                              for _id in written])

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
                    why = held.get((name, id_key(ch.id))) if st == TODO else None
                    if why is not None:
                        st = CONFLICT
                    if st == CONFLICT and not supersede and id_key(ch.id) not in force:
                        conflict(name, ch, why and f"held: {why}")
                        continue
                    writes.append((i, st, doc))
                    moved = i in latest and raw_hash(latest[i]) != raw_hash(doc)  # written since it was journaled
                    if i not in latest or moved:
                        records.append((i, name, ch.id, doc))
                    if doc is not None and (st == CONFLICT or moved):
                        newer.append((i, name, ch.id, doc))  # a newer write: kept before it is overwritten
                kept.append(newer)
                if journal.append(records) is not None:  # on disk before any document of the batch is written
                    paused()
                latest.update((r[0], r[3]) for r in records)
                ins, rep, dels, kind = [], [], [], {}
                for i, st, doc in writes:
                    ch = plan.changes[i]
                    kind[id_key(ch.id)] = (i, "written" if st != CONFLICT else "superseded" if supersede else "forced",
                                           doc)
                    if ch.after is None:
                        dels.append((ch.id, raw_hash(doc)))
                        continue
                    raw = RawBSONDocument(bson.encode(ch.after, codec_options=CODEC))
                    # absent now (an insert, or a forced write over a deleted document): insert
                    (ins if doc is None else rep).append((ch.id, raw))
                inflight = (name, kind, [], [])
                missed = {id_key(m) for m in write_batch(coll, ins, rep, dels, inflight[2], inflight[3])}
                settle(name, kind, inflight[2], inflight[3])
                raced = {id_key(_id) for _id, _ in inflight[3]}
                inflight = None
                for key, (i, k, _) in kind.items():
                    ch = plan.changes[i]
                    if key in missed:  # changed in live between the batch read and the write
                        conflict(name, ch)
                    elif key in raced:  # deleted, but it had changed in the instant before: kept, reported
                        conflict(name, ch, "changed in live just before the delete: the newer document is kept in "
                                           "the plan's journal (superseded-*.bson) and undo puts it back")
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
        if inflight is not None:  # what the interrupted batch wrote before the error counts too
            name, kind, written, raced = inflight
            for _id in written:
                counts[name][kind[id_key(_id)][1]] += 1
            try:
                settle(name, kind, written, raced)
            except OSError:
                pass  # the journal is unwritable too: undo treats these as unsure (journal.py)
        done = sum(c["written"] + c["forced"] + c.get("superseded", 0) for c in counts.values())
        entry = pending(incident_id, action, plan_id, f"{where} interrupted after {done} writes: {msg}", counts,
                        "partial" if done else "failed", actor)
        set_status(store, plan_id, "failed", ("applying",), error=msg, results={PENDING: entry} if entry else None)
        record_pending(store, incidents, plan_id)
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
    entry = pending(incident_id, action, plan_id, summary, counts, outcome, actor)
    results = {"apply": {"status": outcome, "counts": counts, "resumed": resumed,
                         "conflict_ids": [id_text(c["id"]) for c in conflicts[:1000]], "conflicts": len(conflicts)}}
    if entry:
        results[PENDING] = entry
    # the status and the timeline entry in one statement, then the entry recorded: never twice (record.py)
    set_status(store, plan_id, "applied", ("applying",), applied_at=datetime.now(UTC), results=results)
    timeline = record_pending(store, incidents, plan_id)
    return ApplyResult(plan_id, outcome, resumed, counts, conflicts, str(journal.dir), incident_id, timeline)
