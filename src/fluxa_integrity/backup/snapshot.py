"""A full snapshot: every chosen collection streamed once, in parallel threads, to its files.

Each document's raw BSON bytes go to the (compressed) .bson file and into the collection's
multiset content hash (mongo/hashing.py) in the same pass - no second read. Everything is
written under ``.partial-<id>/`` and renamed to ``<id>/`` only when complete, so a directory
named like a backup is always whole; a failure leaves a ``failed`` catalog row and no files.

The snapshot is not a point-in-time image (neither is mongodump's without --oplog): documents
written while it runs may or may not be in it. The oplog timestamps taken before the first and
after the last read bound that window; point-in-time restore replays from ``oplog_start``.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import connect, first_line
from ..mongo.hashing import CollectionDigest
from ..store import Store
from . import catalog
from .files import SUFFIX, HashedWriter, check_compression
from .manifest import FORMAT, seal
from .metadata import collection_infos, dumps_canonical, indexes_of, metadata_document
from .oplog import MODES, newest_oplog_ts
from .repository import new_backup_id, partial_dir, resolve_repo, write_pid

UTC = timezone.utc
BATCH = 2000
FLUSH_BYTES = 1 << 20
RAW = CodecOptions(document_class=RawBSONDocument)


class Progress:
    """What the CLI shows; the default shows nothing."""

    def start(self, collection: str, total: int | None) -> None: ...
    def advance(self, collection: str, n: int) -> None: ...
    def done(self, collection: str) -> None: ...


@dataclass
class BackupOptions:
    collections: list[str] | None = None
    repo: str | Path | None = None
    compression: str = "zstd"
    workers: int = 3  # threads: the server, not the client, is the bottleneck on small machines
    batch_size: int = BATCH
    schema: bool = True  # also take a schema backup when the schema changed
    oplog_probe: str = "exact"  # or "clock": see oplog.py


@dataclass
class BackupResult:
    id: str
    db: str
    directory: Path
    manifest: dict
    seconds: float
    schema_backup: str | None = None
    warnings: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _ts(ts) -> dict | None:
    return {"t": ts.time, "i": ts.inc} if ts is not None else None


def _dump_collection(db: pymongo.database.Database, info: dict, out_dir: Path, rel: str, compression: str,
                     batch_size: int, cancel: threading.Event, progress: Progress) -> dict:
    name = info["name"]
    t0 = time.perf_counter()
    entry: dict = {"type": info.get("type", "collection")}
    if entry["type"] == "collection":  # views have metadata only, as with mongodump
        try:
            total = int(db.command("collStats", name).get("count", 0))  # cheap; count() scans on FerretDB
        except PyMongoError:
            total = None
        progress.start(name, total)
        digest = CollectionDigest()
        data_name = f"{name}.bson{SUFFIX[compression]}"
        writer = HashedWriter(out_dir / data_name, compression, documents=True)
        raw_bytes, pending, pending_n = 0, [], 0
        try:
            for doc in db.get_collection(name, codec_options=RAW).find({}, batch_size=batch_size):
                raw = doc.raw
                digest.add_raw(raw)
                pending.append(raw)
                pending_n += len(raw)
                if pending_n >= FLUSH_BYTES or len(pending) >= batch_size:
                    if cancel.is_set():
                        raise _Cancelled()
                    writer.write(b"".join(pending))
                    progress.advance(name, len(pending))
                    raw_bytes += pending_n
                    pending, pending_n = [], 0
            writer.write(b"".join(pending))
            progress.advance(name, len(pending))
            raw_bytes += pending_n
        finally:
            sha, size = writer.close()
        entry.update(count=digest.count, content_sha256=digest.hexdigest, raw_bytes=raw_bytes,
                     data={"path": f"{rel}/{data_name}", "sha256": sha, "size": size})
    meta = dumps_canonical(metadata_document(info, indexes_of(db, name) if entry["type"] == "collection" else []))
    # gzip dumps compress the metadata too: mongorestore --gzip expects .metadata.json.gz
    meta_name = f"{name}.metadata.json" + (".gz" if compression == "gzip" else "")
    mw = HashedWriter(out_dir / meta_name, "gzip" if compression == "gzip" else "none")
    mw.write(meta.encode())
    sha, size = mw.close()
    entry["metadata"] = {"path": f"{rel}/{meta_name}", "sha256": sha, "size": size}
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    progress.done(name)
    return entry


class _Cancelled(Exception):
    pass


def run_backup(uri: str, db_name: str, store: Store, opts: BackupOptions | None = None,
               progress: Progress | None = None) -> BackupResult:
    opts = opts or BackupOptions()
    progress = progress or Progress()
    check_compression(opts.compression)
    if opts.oplog_probe not in MODES:
        raise FluxaError(f"unknown oplog probe {opts.oplog_probe!r}", "use exact (default) or clock")
    repo = resolve_repo(opts.repo)
    catalog.sweep_dead_runs(store, [repo])
    client = connect(uri)
    db = client[db_name]
    infos = collection_infos(db)
    if opts.collections is not None:
        missing = [c for c in opts.collections if c not in infos]
        if missing:
            raise FluxaError(f"no collection {', '.join(map(repr, missing))} in database {db_name!r}",
                             f"collections there: {', '.join(sorted(infos)) or '(none)'}")
        infos = {c: infos[c] for c in opts.collections}
    if not infos:
        raise FluxaError(f"database {db_name!r} has no collections to back up", "check --db and --uri")

    started = _now()
    backup_id = new_backup_id(started)
    work = partial_dir(repo, backup_id)
    out_dir = work / db_name
    out_dir.mkdir(parents=True)
    write_pid(work)
    catalog.start_backup(store, backup_id, "full", db_name, repo, sorted(infos), started)
    t0 = time.perf_counter()
    cancel = threading.Event()
    try:
        start_ts, ts_source, probe_start = newest_oplog_ts(client, opts.oplog_probe)
        catalog.set_oplog_start(store, backup_id, start_ts)
        entries: dict[str, dict] = {}
        with ThreadPoolExecutor(max_workers=max(1, min(opts.workers, len(infos)))) as pool:
            futures = {pool.submit(_dump_collection, db, info, out_dir, db_name, opts.compression, opts.batch_size,
                                   cancel, progress): name for name, info in infos.items()}
            try:
                for fut in as_completed(futures):
                    entries[futures[fut]] = fut.result()
            except BaseException:
                cancel.set()  # the other threads stop at their next batch
                raise
        end_ts, _, probe_end = newest_oplog_ts(client, opts.oplog_probe, end=True)
        finished = _now()
        files = [f for e in entries.values() for f in (e.get("data"), e["metadata"]) if f]
        manifest = {
            "format": FORMAT, "id": backup_id, "kind": "full", "status": "complete", "db": db_name,
            "compression": opts.compression, "started_at": _iso(started), "finished_at": _iso(finished),
            "seconds": round(time.perf_counter() - t0, 3),
            "oplog": {"start": _ts(start_ts), "end": _ts(end_ts), "source": ts_source,
                      "probe_seconds": [round(probe_start, 3), round(probe_end, 3)]},
            "collections": {name: entries[name] for name in sorted(entries)},
            "totals": {"documents": sum(e.get("count", 0) for e in entries.values()),
                       "files": len(files), "bytes": sum(f["size"] for f in files)},
        }
        final, manifest_sha = seal(work, repo, backup_id, manifest)
    except BaseException as exc:  # KeyboardInterrupt included: never leave it looking complete
        shutil.rmtree(work, ignore_errors=True)
        msg = first_line(exc) if isinstance(exc, PyMongoError) else (
            exc.message if isinstance(exc, FluxaError) else f"{type(exc).__name__}: {exc}")
        catalog.fail_backup(store, backup_id, msg)
        client.close()
        if isinstance(exc, (PyMongoError, OSError)):
            raise FluxaError(f"backup {backup_id} failed: {msg}",
                             "it is recorded as failed and will never be offered for restore; "
                             "fix the cause and run `backup run` again") from exc
        raise
    catalog.finish_backup(store, backup_id, size=manifest["totals"]["bytes"] + (final / "manifest.json").stat().st_size,
                          file_count=len(files) + 1,
                          finished_at=finished, oplog_end=end_ts, manifest_sha256=manifest_sha)
    result = BackupResult(backup_id, db_name, final, manifest, time.perf_counter() - t0)
    if opts.schema:
        from .schema import take_schema_backup_if_changed

        try:
            result.schema_backup = take_schema_backup_if_changed(client, db_name, repo, store)
        except PyMongoError as exc:
            result.warnings.append(f"schema backup skipped: {first_line(exc)}")
    client.close()
    return result
