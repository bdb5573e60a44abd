"""Undoing an applied plan: every document the apply wrote goes back to its journaled bytes.

For each change in the apply journal (journal.py), the live document now is compared with:

- the journaled original: already back (or never written by a killed apply) - skipped;
- the plan's ``after``: written by the apply - put back (writes.py): the original's raw bytes by
  ``replace_one``, or inserted when the apply deleted it, or deleted when the apply inserted
  it; the content hash afterwards equals the one before the apply;
- anything else: changed in live since the apply. Without ``force`` the whole undo is refused
  BEFORE any write, naming the documents; with ``force`` the newer document is first kept in the
  journal (``superseded-*.bson``, fsynced), then replaced. A plan applied in ``supersede`` mode
  (`restore promote`) is always undone this way: newer writes are set aside, never refused.

Containment: a collection read-only under another live incident (under any, when no incident
authorises the undo) is refused before anything is written, as apply refuses it.

Failure behaviour. The row goes ``-> undoing -> undone``; a server error leaves it ``undoing``,
records the partial undo on the timeline and raises a FluxaError saying to rerun, and the rerun
resumes (documents already back are skipped). One writer per live database (lock.py). A
document that changes between the batch's read and its write is not caught (no transactions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line
from ..store import Store
from .apply import COMMANDS, Progress, check_writable, id_text
from .journal import Journal
from .live import collection, id_key, raw_hash, read_live
from .lock import PlanLock
from .model import _RECIPES
from .plans_store import get_row, load, merge_result, set_status
from .record import counts_text, record
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
    incident that authorised the apply when that one still takes records. Containment as apply:
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
    with PlanLock(db.name):
        return _undo_locked(db, store, incidents, plan_id, incident_id, force, progress or Progress(), actor, action)


def _undo_locked(db, store, incidents, plan_id, incident_id, force, progress, actor, action) -> UndoResult:
    row = get_row(store, plan_id)
    status = row["status"]
    if status == "planned":
        raise FluxaError(f"recovery plan {plan_id} was never applied: there is nothing to undo", None)
    if status == "undone":
        raise FluxaError(f"recovery plan {plan_id} is already undone", "nothing to do")
    stored = load(store, plan_id)
    plan = stored.plan
    originals = Journal(stored.dir).originals()
    todo: dict[str, list[int]] = {}
    for i in sorted(originals):
        todo.setdefault(plan.changes[i].collection, []).append(i)
    check_writable(incidents, db.name, set(todo), incident_id)  # contained: refused
    # a plan applied in supersede mode (restore promote) is undone the same way: newer writes are
    # kept in the journal, then the pre-apply documents go back
    force = force or plan.on_conflict == "supersede"
    _, undo_cmd = COMMANDS.get("promote" if action == "undo" else "recipe")
    # read everything first: a refused undo writes nothing
    changed = []
    for name, idx in todo.items():
        for start in range(0, len(idx), 500):
            live = read_live(db, name, [plan.changes[i].id for i in idx[start:start + 500]])
            for i in idx[start:start + 500]:
                ch = plan.changes[i]
                h = raw_hash(live.get(id_key(ch.id)))
                if h not in (raw_hash(originals[i]), stored.after_hashes[i]):
                    changed.append({"collection": name, "op": ch.op, "id": ch.id})
    if changed and not force:
        named = ", ".join(f"{c['collection']}/{id_text(c['id'])}" for c in changed[:MAX_NAMED])
        raise FluxaError(f"{len(changed)} document(s) the plan wrote changed in live since it was applied "
                         f"({named}{', ...' if len(changed) > MAX_NAMED else ''}): undo would overwrite newer writes",
                         "look at them first; --force puts the pre-apply documents back anyway and keeps the newer "
                         "ones in the plan's journal (superseded-*.bson)")
    incident = incident_id if incident_id is not None else row["incident_id"]
    set_status(store, plan_id, "undoing", (status,))
    resumed = status == "undoing"
    counts = {name: {"restored": 0, "deleted": 0, "already": 0, "superseded": 0} for name in todo}
    kept = Journal(stored.dir, "superseded")
    raced: list[dict] = []  # changed in live while this undo ran: skipped, the undo stays unfinished
    where = f"undo of {plan.recipe} plan {plan_id} in {plan.database}"
    inflight = None  # the batch being written: (collection, _ids written so far)
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
                    h, original = raw_hash(doc), originals[i]
                    if h == raw_hash(original):
                        counts[name]["already"] += 1
                        continue
                    if h != stored.after_hashes[i]:
                        if not force:  # changed after the check above: skipped, reported
                            raced.append({"collection": name, "op": ch.op, "id": ch.id})
                            continue
                        if doc is not None:
                            newer.append((i, name, ch.id, doc))
                        counts[name]["superseded"] += 1
                    writes.append(i)
                kept.append(newer)  # the newer documents are on disk before they are replaced
                ins, rep, dels = [], [], []
                for i in writes:
                    ch, original = plan.changes[i], originals[i]
                    if original is None:
                        dels.append(ch.id)
                    else:
                        (ins if live.get(id_key(ch.id)) is None else rep).append((ch.id, original))
                inflight = (name, [])
                missed = {id_key(m) for m in write_batch(coll, ins, rep, dels, inflight[1])}
                inflight = None
                for i in writes:
                    ch = plan.changes[i]
                    if id_key(ch.id) in missed:  # changed between the batch read and the write
                        raced.append({"collection": name, "op": ch.op, "id": ch.id})
                    else:
                        counts[name]["deleted" if originals[i] is None else "restored"] += 1
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
            for _id in inflight[1]:
                counts[inflight[0]]["deleted" if originals[pos[id_key(_id)]] is None else "restored"] += 1
        done = sum(c["restored"] + c["deleted"] for c in counts.values())
        record(incidents, incident, action, plan_id, f"{where} interrupted after {done} writes: {msg}",
               counts, "partial" if done else "failed", actor)
        raise FluxaError(f"{where} was interrupted after {done} writes: {msg}",
                         f"rerun `fluxa-integrity {undo_cmd} {plan_id}` to resume it (a document already put "
                         "back is skipped)") from exc
    superseded = sum(c["superseded"] for c in counts.values())
    summary = (f"{where}" + (" (resumed)" if resumed else "") + f": {counts_text(counts)}"
               + (f"; {superseded} newer live document(s) kept in the plan's journal (superseded-*.bson) "
                  "before being put back" if superseded else ""))
    skipped = raced
    timeline = record(incidents, incident, action, plan_id, summary, counts,
                      "partial" if skipped else "applied", actor)
    if skipped:  # a document changed in the instant after the check: the undo is not finished
        merge_result(store, plan_id, "undo", {"counts": counts, "changed": len(skipped)})
    else:
        set_status(store, plan_id, "undone", ("undoing",), undone_at=datetime.now(UTC))
        merge_result(store, plan_id, "undo", {"counts": counts, "superseded": sum(c["superseded"] for c in counts.values())})
    return UndoResult(plan_id, resumed, counts, changed + raced, str(stored.dir / "journal"), incident, timeline,
                      finished=not raced)
