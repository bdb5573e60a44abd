"""Undoing an applied plan: every document the apply wrote goes back to its journaled bytes.

What the apply wrote comes from its journal (journal.py ``undo_entries``): a change with a done
record was written, over the journaled document whose hash its first done record names - that
document (live right before the apply first wrote it) goes back; a journaled change with no done record (killed before its write, an insert that hit a
duplicate key, a conflict on a rerun) was written only if the live document is the plan's
``after`` (killed between the write and its done record) - then its newest journal record goes
back; otherwise the apply never wrote it and undo leaves it alone. The live document now is
compared with:

- the document to put back: already back - skipped;
- the plan's ``after``: written by the apply - put back (writes.py): the original's raw bytes by
  ``replace_one``, or inserted when the apply deleted it, or deleted when the apply inserted
  it; the content hash afterwards equals the one before the apply;
- anything else (for a written change): changed in live since the apply. Without ``force`` the
  whole undo is refused BEFORE any write, naming the documents; with ``force`` the newer document
  is first kept in the journal (``superseded-*.bson``, fsynced), then replaced. A plan applied in
  ``supersede`` mode (`restore promote`) is always undone this way: newer writes are set aside,
  never refused.

Before any write: containment - a collection (documents or index changes) read-only under another
live incident (under any, when no incident authorises the undo) is refused, as apply refuses it;
and the timeline - the entry goes to ``incident_id``, else to the incident that authorised the
apply, which must still take records (not closed): otherwise the undo is refused asking for
``--incident`` of an open incident, nothing written.

Failure behaviour. The row goes ``-> undoing -> undone``; a server error leaves it ``undoing``,
records the partial undo on the timeline and raises a FluxaError saying to rerun, and the rerun
resumes (documents already back are skipped). The final status and its timeline entry are
written once (record.py). One writer per database the plan writes (lock.py). A document that
changes between the batch's read and a ``replace_one`` is not caught (no transactions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line
from ..store import Store
from .apply import COMMANDS, Progress, check_writable, id_text, plan_collections
from .journal import Journal, undo_entries
from .live import collection, id_key, raw_hash, read_live
from .lock import plan_databases, plan_locks
from .model import _RECIPES
from .plans_store import get_row, load, merge_result, set_status
from .record import PENDING, counts_text, pending, record_pending
from .writes import write_batch

UTC = timezone.utc
MAX_NAMED = 5


@dataclass
class UndoResult:
    plan_id: str
    resumed: bool
    counts: dict  # {collection: {restored, deleted, already, superseded}}
    changed: list[dict] = field(default_factory=list)  # documents changed since the apply (forced or skipped)
    journal: str = ""
    incident_id: int | None = None
    timeline: dict | None = None
    finished: bool = True  # False: a document changed while the undo ran; rerun (with --force) to finish

    def as_dict(self) -> dict:
        return asdict(self)


def undo_plan(db: Database, store: Store, incidents, plan_id: str, *, incident_id: int | None = None,
              force: bool = False, progress: Progress | None = None, actor: str | None = None,
              action: str = "recipe-undo") -> UndoResult:
    """``incident_id`` authorises the undo (checked open first) and gets the timeline entry;
    without it the face has the operator's explicit confirmation, and the entry goes to the
    incident that authorised the apply, which must still take records (else refused, nothing
    written: give an open ``incident_id``). Containment as apply:
    a collection read-only under another live incident (any, without ``incident_id``) is refused
    before any write. ``action`` names the timeline entry ("recipe-undo", or "undo" for
    `restore undo`)."""
    row = get_row(store, plan_id)
    if row["database"] != db.name:
        raise FluxaError(f"recovery plan {plan_id} is for database {row['database']!r}, not {db.name!r}",
                         f"undo it with --db {row['database']}")
    if incident_id is not None:
        incident_id = int(incident_id)
        incidents.require_open(incident_id)
    with plan_locks(plan_databases(db.name, (row["counts"] or {}).keys())):
        return _undo_locked(db, store, incidents, plan_id, incident_id, force, progress or Progress(), actor, action)


def _recording_incident(incidents, row: dict, incident_id: int | None, plan_id: str) -> int | None:
    """The incident the undo's timeline entry goes to; refused (FluxaError) before any write when
    that incident no longer takes records (closed), so an undo is never left off the record."""
    if incident_id is not None or row["incident_id"] is None or incidents is None:
        return incident_id if incident_id is not None else row["incident_id"]
    iid = int(row["incident_id"])
    status = incidents.get(iid).get("status")
    if status == "closed":
        raise FluxaError(f"the undo of plan {plan_id} would be recorded on incident {iid}, which authorised the apply, "
                         "but that incident is closed and its record is final",
                         "tie the undo to an open incident: add --incident ID (open one with `fluxa-integrity "
                         "incident open`)")
    return iid


def _undo_locked(db, store, incidents, plan_id, incident_id, force, progress, actor, action) -> UndoResult:
    record_pending(store, incidents, plan_id)  # a run killed after its status, before its timeline entry
    row = get_row(store, plan_id)
    status = row["status"]
    if status == "planned":
        raise FluxaError(f"recovery plan {plan_id} was never applied: there is nothing to undo", None)
    if status == "undone":
        raise FluxaError(f"recovery plan {plan_id} is already undone", "nothing to do")
    stored = load(store, plan_id)
    plan = stored.plan
    entries = undo_entries(stored.dir)
    todo: dict[str, list[int]] = {}
    for i in sorted(entries):
        todo.setdefault(plan.changes[i].collection, []).append(i)
    check_writable(incidents, db.name, set(todo) | plan_collections(plan), incident_id)  # contained: refused
    incident = _recording_incident(incidents, row, incident_id, plan_id)  # a closed one: refused, nothing written
    # a plan applied in supersede mode (restore promote) is undone the same way: newer writes are
    # kept in the journal, then the pre-apply documents go back
    force = force or plan.on_conflict == "supersede"
    _, undo_cmd = COMMANDS.get("promote" if action == "undo" else "recipe")

    def decide(i: int, doc) -> str:
        """back (nothing to do), undo (the apply's write: put back), newer (changed since), unwritten."""
        h, entry = raw_hash(doc), entries[i]
        if h == raw_hash(entry.original):
            return "back"
        if h == stored.after_hashes[i]:
            return "undo"
        return "newer" if entry.written else "unwritten"

    # read everything first: a refused undo writes nothing
    changed = []
    for name, idx in todo.items():
        for start in range(0, len(idx), 500):
            live = read_live(db, name, [plan.changes[i].id for i in idx[start:start + 500]])
            for i in idx[start:start + 500]:
                ch = plan.changes[i]
                if decide(i, live.get(id_key(ch.id))) == "newer":
                    changed.append({"collection": name, "op": ch.op, "id": ch.id})
    if changed and not force:
        named = ", ".join(f"{c['collection']}/{id_text(c['id'])}" for c in changed[:MAX_NAMED])
        raise FluxaError(f"{len(changed)} document(s) the plan wrote changed in live since it was applied "
                         f"({named}{', ...' if len(changed) > MAX_NAMED else ''}): undo would overwrite newer writes",
                         "look at them first; --force puts the pre-apply documents back anyway and keeps the newer "
                         "ones in the plan's journal (superseded-*.bson)")
    set_status(store, plan_id, "undoing", (status,))
    resumed = status == "undoing"
    counts = {name: {"restored": 0, "deleted": 0, "already": 0, "superseded": 0} for name in todo}
    kept = Journal(stored.dir, "superseded")
    raced: list[dict] = []  # changed in live while this undo ran: skipped, the undo stays unfinished
    where = f"undo of {plan.recipe} plan {plan_id} in {plan.database}"
    inflight = None  # the batch being written: (collection, _ids written so far, deletes that raced)
    try:
        for name, idx in todo.items():
            coll = collection(db, name)
            progress.start(name, len(idx))
            for start in range(0, len(idx), 200):
                batch = idx[start:start + 200]
                live = read_live(db, name, [plan.changes[i].id for i in batch])
                writes, newer = [], []
                for i in batch:
                    ch = plan.changes[i]
                    doc = live.get(id_key(ch.id))
                    got = decide(i, doc)
                    if got in ("back", "unwritten"):  # nothing of the apply's to put back
                        counts[name]["already"] += 1
                        continue
                    if got == "newer":
                        if not force:  # changed after the check above: skipped, reported
                            raced.append({"collection": name, "op": ch.op, "id": ch.id})
                            continue
                        if doc is not None:
                            newer.append((i, name, ch.id, doc))
                        counts[name]["superseded"] += 1
                    writes.append((i, doc))
                kept.append(newer)  # the newer documents are on disk before they are replaced
                ins, rep, dels = [], [], []
                for i, doc in writes:
                    ch, original = plan.changes[i], entries[i].original
                    if original is None:
                        dels.append((ch.id, raw_hash(doc)))
                    else:
                        (ins if doc is None else rep).append((ch.id, original))
                inflight = (name, [], [])
                missed = {id_key(m) for m in write_batch(coll, ins, rep, dels, inflight[1], inflight[2])}
                pos = {id_key(plan.changes[i].id): i for i, _ in writes}
                kept.append([(pos[id_key(_id)], name, _id, raw) for _id, raw in inflight[2]])
                lost = {id_key(_id) for _id, _ in inflight[2]}
                inflight = None
                for i, _ in writes:
                    ch = plan.changes[i]
                    if id_key(ch.id) in missed or id_key(ch.id) in lost:  # changed between the read and the write
                        raced.append({"collection": name, "op": ch.op, "id": ch.id})
                    else:
                        counts[name]["deleted" if entries[i].original is None else "restored"] += 1
                progress.advance(name, len(batch))
            progress.done(name)
        spec = _RECIPES.get(plan.recipe)
        if spec is not None and spec.undo_extra is not None:  # index changes (recipes/indexes.py)
            for name, c in spec.undo_extra(db, plan, stored.dir).items():
                counts.setdefault(name, {"restored": 0, "deleted": 0, "already": 0, "superseded": 0}).update(c)
    except (PyMongoError, FluxaError, OSError) as exc:
        msg = exc.message if isinstance(exc, FluxaError) else first_line(exc) if isinstance(exc, PyMongoError) else str(exc)
        if inflight is not None:  # what the interrupted batch put back before the error counts too
            pos = {id_key(plan.changes[i].id): i for i in todo[inflight[0]]}
            try:
                kept.append([(pos[id_key(_id)], inflight[0], _id, raw) for _id, raw in inflight[2]])
            except OSError:
                pass
            for _id in inflight[1]:
                counts[inflight[0]]["deleted" if entries[pos[id_key(_id)]].original is None else "restored"] += 1
        done = sum(c["restored"] + c["deleted"] for c in counts.values())
        entry = pending(incident, action, plan_id, f"{where} interrupted after {done} writes: {msg}", counts,
                        "partial" if done else "failed", actor)
        if entry:
            merge_result(store, plan_id, PENDING, entry)
        record_pending(store, incidents, plan_id)
        raise FluxaError(f"{where} was interrupted after {done} writes: {msg}",
                         f"rerun `fluxa-integrity {undo_cmd} {plan_id}` to resume it (a document already put "
                         "back is skipped)") from exc
    superseded = sum(c["superseded"] for c in counts.values())
    summary = (f"{where}" + (" (resumed)" if resumed else "") + f": {counts_text(counts)}"
               + (f"; {superseded} newer live document(s) kept in the plan's journal (superseded-*.bson) "
                  "before being put back" if superseded else ""))
    entry = pending(incident, action, plan_id, summary, counts, "partial" if raced else "applied", actor)
    if raced:  # a document changed in the instant after the check: the undo is not finished
        merge_result(store, plan_id, "undo", {"counts": counts, "changed": len(raced)})
        if entry:
            merge_result(store, plan_id, PENDING, entry)
    else:  # the status and the timeline entry in one statement (record.py)
        results = {"undo": {"counts": counts, "superseded": superseded}}
        if entry:
            results[PENDING] = entry
        set_status(store, plan_id, "undone", ("undoing",), undone_at=datetime.now(UTC), results=results)
    timeline = record_pending(store, incidents, plan_id)
    return UndoResult(plan_id, resumed, counts, changed + raced, str(stored.dir / "journal"), incident, timeline,
                      finished=not raced)
