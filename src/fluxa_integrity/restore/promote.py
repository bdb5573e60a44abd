"""`restore promote` and `restore undo`: bring restored collections or documents back to the
live database, reversibly, and resumably.

Before any write, every live document that will be overwritten is saved (raw BSON, exactly as
it was) and every _id that will be inserted is noted, in ``$FLUXA_HOME/undo/<promotion-id>/``
(``<coll>.overwritten.bson``, ``<coll>.inserted.bson``, ``manifest.json`` with sha256s and the
selection the promotion was made for), and a ``promotions`` row is written (``applying``).
Undo replaces the saved documents and deletes the inserted ones, so the live collections come
back byte for byte. Promotion upserts and never deletes: a live document absent from the
restored copy (created after the backup) is left alone.

Failure behaviour. A server that goes away mid-way leaves the promotion ``failed`` (a killed
process leaves it ``applying``) and the command exits 2 saying "rerun to resume". Rerunning the
same promote command (same live and source databases, collections and --ids) resumes THAT
promotion: it rewrites every document of the saved plan from the restored copy (replace by _id,
upsert: a document written before the failure is written again identically, so no duplicate and
nothing lost) and keeps the original undo store, which still describes the live data as it was
before the first write. Any other promotion into a database that holds an unfinished one is
refused until it is finished or undone. Undo is resumable the same way (``undoing``): putting a
saved document back and deleting an inserted _id are both idempotent. A failure while saving the
undo store removes it and writes nothing to the live database.

Newer app writes are never lost. Right before each replace or delete (promotion, resumed
promotion, undo), the live document is read: if it is neither what this step expects there (the
saved original or absence, for a promotion; the promoted document or the put-back original, for
an undo) nor already what is about to be written, it is a newer write by the app: its raw bytes
are appended (fsynced) to ``<coll>.superseded.bson`` in the undo store, listed in the manifest,
and counted as ``superseded`` in the result and on the timeline. (A live document that changes in
the instant between that read and the write is not caught: there are no transactions here.)
Promote, resume and undo into one live database hold an exclusive lock (promotion_lock.py) from
the check for unfinished promotions to the last write, and every status change is conditional
on the status it expects, so a second writer is refused, naming the first, never run beside it.
Each run (applied, failed or partial) is recorded on the authorising incident's timeline
(authority.py). A collection held read-only by another incident's containment is refused before
anything is written (``Authority.check_writable``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database
from pymongo.errors import PyMongoError
from sqlalchemy import select, update

from ..backup.files import file_sha256, iter_raw_documents
from ..home import fluxa_home
from ..errors import FluxaError
from ..mongo.connection import first_line
from ..mongo.unsupported import refused_values
from ..store import Store
from ..store.backup_models import Promotion, RestoreRun
from .authority import Authority
from .compare import RAW, fingerprints, field_diff, id_key
from .promotion_lock import PromotionLock

UTC = timezone.utc
UNFINISHED = ("applying", "failed", "undoing")


def undo_root() -> Path:
    return fluxa_home() / "undo"


def selection_text(ids: list | None) -> str | None:
    """The --ids a promotion was made for, canonical Extended JSON (None: whole collections)."""
    return None if ids is None else json_util.dumps(ids, json_options=json_util.CANONICAL_JSON_OPTIONS)


def plan_promotion(live: Database, source: Database, collections: list[str], ids: list | None,
                   samples: int = 3) -> dict:
    plan = {}
    query = {"_id": {"$in": ids}} if ids is not None else None
    for name in collections:
        theirs = fingerprints(live, name, query=query)
        ours = fingerprints(source, name, query=query)
        over = [k for k in ours if k in theirs and theirs[k][1] != ours[k][1]]
        ins = [k for k in ours if k not in theirs]
        sample_diffs = []
        for k in over[:samples]:
            _id = ours[k][0]
            sample_diffs.append({"_id": _id, "fields": field_diff(live[name].find_one({"_id": _id}),
                                                                  source[name].find_one({"_id": _id}))})
        plan[name] = {"overwrite": over, "insert": ins, "unchanged": len(ours) - len(over) - len(ins),
                      "ids": {k: ours[k][0] for k in over + ins}, "sample_diffs": sample_diffs,
                      "missing_ids": (len(ids) - len(ours)) if ids is not None else 0,
                      "live_count": len(theirs), "source_count": len(ours)}
    return plan


def summarize(plan: dict) -> dict:
    return {n: {"overwrite": len(p["overwrite"]), "insert": len(p["insert"]), "unchanged": p["unchanged"],
                "missing_ids": p["missing_ids"], "sample_diffs": p["sample_diffs"]} for n, p in plan.items()}


def _read_manifest(undo: Path) -> dict:
    try:
        return json.loads((undo / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise FluxaError(f"undo store {undo} is unreadable: {exc}", "it must not be edited or moved") from exc


def unfinished_promotions(store: Store, live_db: str) -> list[dict]:
    """Promotions into ``live_db`` that were interrupted: applying, failed, or undoing."""
    with store.session() as s:
        rows = s.scalars(select(Promotion).where(Promotion.live_db == live_db, Promotion.status.in_(UNFINISHED))
                         .order_by(Promotion.created_at)).all()
        return [{"id": r.id, "status": r.status, "from_db": r.from_db, "collections": list(r.collections),
                 "undo_dir": r.undo_dir} for r in rows]


def resumable_promotion(store: Store, live_db: str, from_db: str, collections: list[str], ids: list | None) -> str | None:
    """The id of the interrupted promotion this command would resume, or None. Raises when
    another promotion into ``live_db`` is unfinished: two half-done promotions of one database
    could not both be undone exactly."""
    wanted = (from_db, sorted(collections), selection_text(ids))
    for p in unfinished_promotions(store, live_db):
        m = _read_manifest(Path(p["undo_dir"]))
        if p["status"] != "undoing" and (m["from_db"], sorted(m["collections"]), m.get("selection")) == wanted:
            return p["id"]
        finish = (f"rerun `fluxa-integrity restore undo {p['id']}`" if p["status"] == "undoing" else
                  f"rerun it (restore promote --from-db {p['from_db']} --collections {','.join(p['collections'])}"
                  + (" --ids ..." if m.get("selection") else "") + f" --apply) or undo it (`restore undo {p['id']}`)")
        raise FluxaError(f"promotion {p['id']} into {live_db!r} is unfinished ({p['status']})", f"finish it first: {finish}")
    return None


def _write_raw(path: Path, docs) -> dict:
    with open(path, "wb") as f:
        for raw in docs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    return {"path": path.name, "sha256": file_sha256(path)}


def _write_manifest(undo: Path, manifest: dict) -> None:
    tmp = undo / "manifest.json.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, undo / "manifest.json")  # never a half-written manifest


class _Superseded:
    """Newer live documents about to be overwritten or deleted: kept byte for byte, first."""

    def __init__(self, undo: Path, manifest: dict):
        self.undo, self.manifest = undo, manifest
        self.counts: dict[str, int] = {}

    def keep(self, name: str, raw: bytes) -> None:
        path = self.undo / f"{name}.superseded.bson"
        with open(path, "ab") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        entry = self.manifest["collections"][name]
        total = entry.get("superseded", {}).get("count", 0) + 1
        entry["superseded"] = {"path": path.name, "sha256": file_sha256(path), "count": total}
        _write_manifest(self.undo, self.manifest)
        self.counts[name] = self.counts.get(name, 0) + 1

    def check(self, name: str, live_doc, expected: tuple, about_to_write: bytes | None) -> None:
        """Keep ``live_doc`` unless it is absent, one of ``expected`` (raw bytes) or what is written."""
        if live_doc is not None and live_doc.raw != about_to_write and live_doc.raw not in expected:
            self.keep(name, live_doc.raw)

    def add_to(self, counts: dict) -> dict:
        for name, n in self.counts.items():
            counts[name]["superseded"] = n
        return counts


def _originals(undo: Path, entry: dict) -> dict[bytes, bytes]:
    return {id_key(RawBSONDocument(raw)["_id"]): raw for raw in iter_raw_documents(undo / entry["overwritten"]["path"], "none")}


def _set_status(store: Store, pid: str, status: str, expected: tuple[str, ...], **values) -> None:
    """Move ``pid`` to ``status`` only from one of ``expected``: a change made underneath is refused."""
    with store.session() as s:
        res = s.execute(update(Promotion).where(Promotion.id == pid, Promotion.status.in_(expected))
                        .values(status=status, **values))
        if res.rowcount != 1:
            now = s.scalar(select(Promotion.status).where(Promotion.id == pid))
            raise FluxaError(f"promotion {pid} is {now}, not {' or '.join(expected)}: another command changed it",
                             "check `restore promote` / `restore undo` runs on this database, then rerun")


def _save_undo_store(store: Store, live: Database, source: Database, plan: dict, authorized_by: str,
                     selection: str | None) -> tuple[str, dict]:
    now = datetime.now(UTC)
    pid = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    undo = undo_root() / pid
    undo.mkdir(parents=True)
    manifest = {"id": pid, "live_db": live.name, "from_db": source.name, "created_at": now.isoformat(),
                "authorized_by": authorized_by, "selection": selection, "collections": {}}
    live_raw = {n: live.get_collection(n, codec_options=RAW) for n in plan}
    try:
        for name, p in plan.items():  # save first: nothing is written before the undo store is on disk
            saved, inserted = [], []
            for k in p["overwrite"] + p["insert"]:
                # read now, not from the plan: a document created or deleted since is saved as it is
                doc = live_raw[name].find_one({"_id": p["ids"][k]})
                if doc is None:  # absent now: the promotion inserts it, undo deletes it
                    inserted.append(bson.encode({"_id": p["ids"][k]}))
                else:
                    saved.append(doc.raw)
            entry = {"overwritten": _write_raw(undo / f"{name}.overwritten.bson", saved),
                     "inserted": _write_raw(undo / f"{name}.inserted.bson", inserted),
                     "counts": {"overwritten": len(saved), "inserted": len(inserted)}}
            manifest["collections"][name] = entry
        _write_manifest(undo, manifest)
    except (PyMongoError, OSError) as exc:
        shutil.rmtree(undo, ignore_errors=True)
        msg = first_line(exc) if isinstance(exc, PyMongoError) else str(exc)
        raise FluxaError(f"saving the undo store of the promotion failed: {msg}; nothing was written to {live.name!r}",
                         "fix the cause and rerun the same command") from exc
    with store.session() as s:
        s.add(Promotion(id=pid, from_db=source.name, live_db=live.name, collections=list(plan), authorized_by=authorized_by,
                        status="applying", undo_dir=str(undo), created_at=now,
                        counts={n: e["counts"] for n, e in manifest["collections"].items()}))
    return pid, manifest


def _ids_of(undo: Path, entry: dict) -> list:
    """The _ids a promotion writes, from its undo store: overwritten documents, then inserted ones."""
    return [RawBSONDocument(raw)["_id"] for part in ("overwritten", "inserted")
            for raw in iter_raw_documents(undo / entry[part]["path"], "none")]


def _plan_ids(plan: dict, name: str) -> list:
    p = plan[name]
    return [p["ids"][k] for k in p["overwrite"] + p["insert"]]


def _counts_text(counts: dict) -> str:
    return "; ".join(f"{n} " + ", ".join(f"{v} {k}" for k, v in c.items()) for n, c in counts.items()) or "nothing"


def apply_promotion(store: Store, live: Database, source: Database, plan: dict, authority: Authority,
                    ids: list | None = None) -> dict:
    """Write the plan to ``live`` (or finish the interrupted promotion made for the same
    selection), recording the outcome on the authorising incident's timeline."""
    with PromotionLock(live.name):
        return _apply_locked(store, live, source, plan, authority, ids)


def require_whole_source(store: Store, from_db: str) -> None:
    """Refuse a restored database whose newest restore did not complete: it holds part of a backup.
    (A database no restore wrote, made by hand, is the operator's to vouch for.)"""
    with store.session() as s:
        newest = s.scalars(select(RestoreRun).where(RestoreRun.target_db == from_db)
                           .order_by(RestoreRun.id.desc()).limit(1)).first()
        if newest is not None and newest.status != "complete":
            raise FluxaError(f"the newest restore into {from_db!r} (restore {newest.id} of backup {newest.backup_id}) "
                             f"is {newest.status}: {from_db!r} holds only part of it",
                             "rerun that restore (`restore run` resumes it) and promote once it is complete")


def _apply_locked(store: Store, live: Database, source: Database, plan: dict, authority: Authority,
                  ids: list | None) -> dict:
    require_whole_source(store, source.name)
    authority.check_writable(live.name, list(plan))  # a contained collection is refused before any write
    pid = resumable_promotion(store, live.name, source.name, list(plan), ids)
    resumed = pid is not None
    if resumed:
        with store.session() as s:
            undo = Path(s.get(Promotion, pid).undo_dir)
        manifest = _read_manifest(undo)
        todo = {n: _ids_of(undo, e) for n, e in manifest["collections"].items()}
        _set_status(store, pid, "applying", ("applying", "failed"))
    else:
        pid, manifest = _save_undo_store(store, live, source, plan, authority.label, selection_text(ids))
        undo = undo_root() / pid
        todo = {n: _plan_ids(plan, n) for n in plan}
    planned = {n: {"replaced": e["counts"]["overwritten"], "inserted": e["counts"]["inserted"], "deleted": 0}
               for n, e in manifest["collections"].items()}
    written = {n: {"replaced": 0, "inserted": 0, "deleted": 0} for n in todo}
    kept = _Superseded(undo, manifest)
    where = f"from {source.name} into {live.name}"
    try:
        for name, id_list in todo.items():
            src = source.get_collection(name, codec_options=RAW)
            dst = live.get_collection(name, codec_options=RAW)
            originals = _originals(undo, manifest["collections"][name])
            for _id in id_list:
                doc = src.find_one({"_id": _id})
                if doc is None:
                    raise FluxaError(f"{source.name}.{name} no longer holds _id {_id!r}: promotion {pid} cannot finish",
                                     f"undo it with `fluxa-integrity restore undo {pid}`")
                original = originals.get(id_key(_id))
                kept.check(name, dst.find_one({"_id": _id}), (original,) if original else (), doc.raw)
                with refused_values(dst, [doc]):
                    res = dst.replace_one({"_id": _id}, doc, upsert=True)
                written[name]["inserted" if res.upserted_id is not None else "replaced"] += 1
    except (PyMongoError, FluxaError) as exc:
        _set_status(store, pid, "failed", ("applying",))
        done = sum(v for c in written.values() for v in c.values())
        authority.record("promote", pid, f"promotion {pid} {where} interrupted after {done} documents"
                         + _kept_text(kept), kept.add_to(written), status="partial" if done else "failed")
        if isinstance(exc, FluxaError):
            raise
        total = sum(len(v) for v in todo.values())
        raise FluxaError(f"promotion {pid} {where} interrupted after {done} of {total} documents: {first_line(exc)}",
                         "rerun the same command to resume it (it finishes this promotion; nothing is written twice), "
                         f"or put everything back with `fluxa-integrity restore undo {pid}`") from exc
    _set_status(store, pid, "applied", ("applying",))
    timeline = authority.record("promote", pid, f"promotion {pid} {where}" + (" (resumed)" if resumed else "")
                                + f": {_counts_text(planned)}" + _kept_text(kept), kept.add_to(planned))
    return {"promotion_id": pid, "undo_dir": str(undo), "resumed": resumed,
            "counts": {n: e["counts"] for n, e in manifest["collections"].items()},
            "written": written, "superseded": kept.counts, "timeline": timeline}


def _kept_text(kept: _Superseded) -> str:
    if not kept.counts:
        return ""
    return ("; newer live documents kept in the undo store before being replaced: "
            + ", ".join(f"{n} {c}" for n, c in kept.counts.items()))


def undo_promotion(store: Store, client, promotion_id: str, authority: Authority | None = None) -> dict:
    """Put back what the promotion overwrote and delete what it inserted; resumable."""
    authority = authority or Authority.none()
    with store.session() as s:
        row = s.get(Promotion, promotion_id)
        if row is None:
            raise FluxaError(f"no promotion {promotion_id!r}", "the id is printed by `restore promote --apply`")
        live_name = row.live_db
    with PromotionLock(live_name):
        return _undo_locked(store, client, promotion_id, authority)


def _undo_locked(store: Store, client, promotion_id: str, authority: Authority) -> dict:
    with store.session() as s:  # read again under the lock: the status is now stable
        row = s.get(Promotion, promotion_id)
        if row.status == "undone":
            raise FluxaError(f"promotion {promotion_id} was already undone", "nothing to do")
        status, undo, live_name, from_name = row.status, Path(row.undo_dir), row.live_db, row.from_db
    manifest = _read_manifest(undo)
    authority.check_writable(live_name, list(manifest["collections"]))  # refused while contained, as promote
    for name, entry in manifest["collections"].items():
        for part in ("overwritten", "inserted"):
            path = undo / entry[part]["path"]
            if not path.is_file() or file_sha256(path) != entry[part]["sha256"]:
                raise FluxaError(f"undo file {path} is missing or fails its sha256", "the undo store was altered")
    # who authorised each undo run, kept with the promotion (its row holds who authorised the promotion)
    manifest.setdefault("undo_runs", []).append({"at": datetime.now(UTC).isoformat(), "by": authority.label})
    _write_manifest(undo, manifest)
    live = client[live_name]
    _set_status(store, promotion_id, "undoing", (status,))
    counts = {name: {"restored": 0, "deleted": 0} for name in manifest["collections"]}
    kept = _Superseded(undo, manifest)
    try:
        for name, entry in manifest["collections"].items():
            coll = live.get_collection(name, codec_options=RAW)
            # what the promotion wrote; when the restored copy is gone, every changed document is kept
            promoted = client[from_name].get_collection(name, codec_options=RAW)

            def expected(_id, *also) -> tuple:
                doc = promoted.find_one({"_id": _id})
                return (doc.raw, *also) if doc is not None else also

            for raw in iter_raw_documents(undo / entry["inserted"]["path"], "none"):
                _id = bson.decode(raw)["_id"]
                kept.check(name, coll.find_one({"_id": _id}), expected(_id), None)
                counts[name]["deleted"] += coll.delete_one({"_id": _id}).deleted_count
            for raw in iter_raw_documents(undo / entry["overwritten"]["path"], "none"):
                doc = RawBSONDocument(raw)
                kept.check(name, coll.find_one({"_id": doc["_id"]}), expected(doc["_id"]), raw)
                with refused_values(coll, [doc]):
                    coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
                counts[name]["restored"] += 1
    except PyMongoError as exc:
        done = {n: {"replaced": c["restored"], "inserted": 0, "deleted": c["deleted"]} for n, c in counts.items()}
        any_done = any(v for c in done.values() for v in c.values())
        authority.record("undo", promotion_id, f"undo of promotion {promotion_id} in {live_name} interrupted"
                         + _kept_text(kept), kept.add_to(done), status="partial" if any_done else "failed")
        raise FluxaError(f"undo of promotion {promotion_id} in {live_name!r} interrupted: {first_line(exc)}",
                         f"rerun `fluxa-integrity restore undo {promotion_id}` to resume it (putting a saved "
                         "document back twice is harmless)") from exc
    _set_status(store, promotion_id, "undone", ("undoing",), undone_at=datetime.now(UTC))
    recorded = {n: {"replaced": c["restored"], "inserted": 0, "deleted": c["deleted"]} for n, c in counts.items()}
    timeline = authority.record("undo", promotion_id, f"undo of promotion {promotion_id} in {live_name}: "
                                f"{_counts_text(recorded)}" + _kept_text(kept), kept.add_to(recorded))
    return {"promotion_id": promotion_id, "counts": counts, "superseded": kept.counts, "undo_dir": str(undo),
            "undone_by": authority.label, "timeline": timeline}
