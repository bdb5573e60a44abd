"""Restore a snapshot (all of it, some collections, or the documents matching a filter) into a
separate target database. Idempotent and resumable:

- progress per collection (documents of the file acknowledged by the server) is kept in the
  state store (``restore_runs.progress``) after every batch; a rerun of the same restore skips
  that many documents of the file, which is read in the same order every time;
- the batch in flight when a restore died may be partly inserted: batches are inserted with
  ``ordered=False`` and a duplicate-key error is accepted only after checking the document in
  the target is byte-for-byte the backup's (anything else is a conflict and stops the restore).
So a rerun completes with no duplicates and nothing lost, and the target database holds nothing
but restored data (no bookkeeping collection that would change its content hash).
A restore authorised by an incident (``authority``, see authority.py) is recorded on its
timeline when it ends: complete, failed, or partial (some documents written).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import bson
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError, PyMongoError
from sqlalchemy import select, update

from ..backup import catalog
from ..backup.files import iter_raw_documents, open_decompressed
from ..backup.manifest import files_of, read_manifest, require_intact
from ..backup.metadata import loads
from ..backup.repository import backup_dir
from ..backup.snapshot import Progress
from ..errors import FluxaError
from ..mongo.connection import connect, first_line
from ..mongo.unsupported import refused_values
from ..store import Store
from ..store.backup_models import RestoreRun
from .authority import Authority
from .filters import compile_filter, parse_filter
from .server_errors import server_errors

UTC = timezone.utc
RAW = CodecOptions(document_class=RawBSONDocument)
DECODE = CodecOptions(tz_aware=True)
BATCH = 1000


@dataclass
class RestoreResult:
    run_id: int
    backup_id: str
    source_db: str
    target_db: str
    collections: dict[str, dict]  # name -> {read, inserted, already_there, seconds}
    seconds: float
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)
    timeline: dict | None = None  # the incident timeline record, when an incident authorised it


def load_metadata(path: Path) -> dict:
    with open_decompressed(path, "gzip" if path.name.endswith(".gz") else "none") as f:
        return loads(f.read().decode())


def _find_resumable(store: Store, backup_id: str, target_db: str) -> RestoreRun | None:
    with store.session() as s:
        return s.scalars(select(RestoreRun).where(RestoreRun.backup_id == backup_id, RestoreRun.target_db == target_db,
                                                  RestoreRun.status.in_(("running", "failed")))
                         .order_by(RestoreRun.id.desc()).limit(1)).first()


def _set_run(store: Store, run_id: int, **values) -> None:
    with store.session() as s:
        row = s.get(RestoreRun, run_id)
        for k, v in values.items():
            setattr(row, k, v)


def _ensure_collection(db: pymongo.database.Database, meta: dict) -> None:
    name = meta["collectionName"]
    if name in db.list_collection_names(filter={"name": name}):
        return
    options = {k: v for k, v in (meta.get("options") or {}).items() if k not in ("uuid",)}
    db.command("create", name, **options)


def _create_indexes(db: pymongo.database.Database, meta: dict) -> int:
    specs = []
    for spec in meta.get("indexes") or []:
        if spec.get("name") == "_id_":
            continue
        specs.append({k: v for k, v in spec.items() if k not in ("ns", "v")})  # the server picks v
    if specs:
        db.command("createIndexes", meta["collectionName"], indexes=specs)
    return len(specs)


def _insert_batch(coll, docs: list[bytes]) -> tuple[int, int]:
    """(inserted, already there and identical). Raises on a conflicting duplicate."""
    raws = [RawBSONDocument(d) for d in docs]
    try:
        with refused_values(coll, raws):  # a value the dev server cannot store is named, not "connection closed"
            coll.insert_many(raws, ordered=False)
        return len(raws), 0  # inserted_ids is empty for RawBSONDocument
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        other = [e for e in errors if e.get("code") != 11000]
        if other:
            raise FluxaError(f"restore into {coll.full_name} failed: {other[0].get('errmsg')}",
                             "fix the cause and rerun the same command: the restore resumes") from exc
        raw_coll = coll.with_options(codec_options=RAW)
        for e in errors:
            doc = raws[e["index"]]
            there = raw_coll.find_one({"_id": doc["_id"]})
            if there is None or (there.raw != doc.raw and bson.decode(there.raw) != bson.decode(doc.raw)):
                raise FluxaError(f"{coll.full_name} already holds a different document with _id {doc['_id']!r}",
                                 "restore into an empty database, or rerun with --drop-target") from exc
        return exc.details.get("nInserted", 0), len(errors)


def restore_snapshot(uri: str, store: Store, backup_id: str, target_db: str, *, collections: list[str] | None = None,
                     filter_text: str | None = None, drop_target: bool = False, progress: Progress | None = None,
                     workers: int = 3, batch_size: int = BATCH, authority: Authority | None = None,
                     record_on_success: bool = True) -> RestoreResult:
    progress = progress or Progress()
    authority = authority or Authority.none()
    row = catalog.restorable_backup(store, backup_id)
    directory = backup_dir(Path(row.repo), row.id)
    manifest = read_manifest(directory, row.manifest_sha256)
    available = manifest["collections"]
    if collections:
        unknown = [c for c in collections if c not in available]
        if unknown:
            raise FluxaError(f"backup {row.id} has no collection {', '.join(map(repr, unknown))}",
                             f"it holds: {', '.join(available)}")
    chosen = list(collections or available)
    if target_db == row.db:
        raise FluxaError(f"--to-db {target_db!r} is the backup's source database",
                         "restores always go to a separate database first; bring data back with `restore promote`")
    predicate = compile_filter(parse_filter(filter_text)) if filter_text else None
    require_intact(directory, files_of(manifest, chosen))  # every file, before anything is written

    client = connect(uri)
    db = client[target_db]
    resumable = None if drop_target else _find_resumable(store, row.id, target_db)
    if resumable and (sorted(resumable.collections) != sorted(chosen) or (resumable.filter or {}).get("text") != filter_text):
        resumable = None
    with server_errors(f"restore of backup {row.id} into {target_db!r} could not start", "rerun the same command"):
        existing = db.list_collection_names()
        if resumable is None and existing:
            if not drop_target:
                client.close()
                raise FluxaError(f"target database {target_db!r} is not empty ({len(existing)} collections)",
                                 "choose a new --to-db, or pass --drop-target to replace it")
            client.drop_database(target_db)
    started = datetime.now(UTC)
    if resumable is not None:
        run_id, done = resumable.id, dict(resumable.progress or {})
        _set_run(store, run_id, status="running", error=None)
    else:
        with store.session() as s:
            # the target was dropped or found empty: whatever earlier restores put there is gone, so
            # diff and promote must never take this database for one of them
            s.execute(update(RestoreRun).where(RestoreRun.target_db == target_db, RestoreRun.status != "dropped")
                      .values(status="dropped"))
            run = RestoreRun(backup_id=row.id, target_db=target_db, collections=chosen, status="running",
                             filter={"text": filter_text} if filter_text else None, progress={}, started_at=started)
            s.add(run)
            s.flush()
            run_id, done = run.id, {}
    lock = threading.Lock()
    t0 = time.perf_counter()

    def save(name: str, value: dict) -> None:
        with lock:
            done[name] = value
            _set_run(store, run_id, progress=dict(done))

    def one(name: str) -> dict:
        c0 = time.perf_counter()
        entry = available[name]
        meta = load_metadata(directory / entry["metadata"]["path"])
        state = dict(done.get(name) or {"read": 0, "inserted": 0, "already_there": 0, "done": False})
        if state.get("done") or entry.get("type", "collection") != "collection":
            return {**state, "seconds": 0.0}
        _ensure_collection(db, meta)
        coll = db[name]
        skip = state["read"]
        progress.start(name, entry.get("count"))
        progress.advance(name, skip)
        batch: list[bytes] = []
        read = 0

        def flush(upto: int) -> None:
            if batch:
                ins, dup = _insert_batch(coll, batch)
                state["inserted"] += ins
                state["already_there"] += dup
            state["read"] = upto
            save(name, dict(state))
            progress.advance(name, upto - skip - progress_sent[0])
            progress_sent[0] = upto - skip
            batch.clear()

        progress_sent = [0]
        for raw in iter_raw_documents(directory / entry["data"]["path"], manifest["compression"]):
            read += 1
            if read <= skip:
                continue
            if predicate is None or predicate(bson.decode(raw, DECODE)):
                batch.append(raw)
            if len(batch) >= batch_size or (read - skip) % (batch_size * 10) == 0:
                flush(read)
        flush(read)
        _create_indexes(db, meta)
        state["done"] = True
        state["seconds"] = round(time.perf_counter() - c0, 3)
        save(name, dict(state))
        progress.done(name)
        return state

    results: dict[str, dict] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(chosen)))) as pool:
            futures = {pool.submit(one, name): name for name in chosen}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
    except BaseException as exc:
        msg = first_line(exc) if isinstance(exc, PyMongoError) else str(getattr(exc, "message", exc))
        _set_run(store, run_id, status="failed", error=msg)
        client.close()
        written = _written(done)
        authority.record("restore", run_id, f"restore {run_id} of backup {row.id} ({row.db}) into {target_db} "
                         f"failed: {msg}", written, status="partial" if _any(written) else "failed")
        if isinstance(exc, PyMongoError):
            raise FluxaError(f"restore {run_id} of backup {row.id} into {target_db!r} failed: {msg}",
                             "rerun the same command: it resumes where it stopped") from exc
        raise
    seconds = time.perf_counter() - t0
    _set_run(store, run_id, status="complete", finished_at=datetime.now(UTC), seconds=round(seconds, 3))
    client.close()
    result = RestoreResult(run_id, row.id, row.db, target_db, {n: results[n] for n in chosen}, seconds,
                           resumed=resumable is not None)
    if record_on_success:
        written = _written(result.collections)
        result.timeline = authority.record("restore", run_id, f"restore {run_id} of backup {row.id} ({row.db}) into "
                                           f"{target_db}" + (" (resumed)" if result.resumed else ""), written)
    return result


def _written(per_collection: dict) -> dict:
    """Timeline counts of a restore: documents now in the target, per collection."""
    return {n: {"inserted": c.get("inserted", 0) + c.get("already_there", 0), "replaced": 0, "deleted": 0}
            for n, c in per_collection.items()}


def _any(counts: dict) -> bool:
    return any(v for c in counts.values() for v in c.values())
