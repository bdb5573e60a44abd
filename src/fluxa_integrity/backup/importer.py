"""`backup import DIR`: catalog a mongodump directory as a full backup, so it can be verified,
restored, diffed and promoted like one of ours.

Accepts a dump root (``DIR/<db>/``; ``--db`` picks one when there are several) or a database
directory itself, uncompressed or ``--gzip`` (``.bson.gz`` and ``.metadata.json.gz``; a mix is
refused). Every file is copied byte for byte into the repository (the source may be on a
removable disk or be deleted later), while its sha256 is taken and its documents framed, counted
and content-hashed as a snapshot's are. A dump carries no oplog position, so an imported backup
restores as a snapshot, never as the base of a point in time. Like a snapshot, it is written
under ``.partial-<id>/`` and renamed only when whole; a bad file leaves a ``failed`` row naming it.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import FluxaError
from ..mongo.hashing import CollectionDigest
from ..store import Store
from . import catalog
from .files import CHUNK, HashedWriter, iter_raw_documents, open_decompressed
from .manifest import FORMAT, seal
from .metadata import loads
from .repository import new_backup_id, partial_dir, resolve_repo, write_pid
from .snapshot import BackupResult, _iso

UTC = timezone.utc
META = (".metadata.json", ".metadata.json.gz")


def _metas(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(META))


def find_database_dir(source: Path, db: str | None) -> tuple[Path, str]:
    if not source.is_dir():
        raise FluxaError(f"{source} is not a directory", "give the directory mongodump wrote (its --out)")
    if _metas(source):
        return source, db or source.name
    dbs = sorted(p for p in source.iterdir() if p.is_dir() and _metas(p))
    if db:
        if source / db in dbs:
            return source / db, db
        raise FluxaError(f"{source} has no dump of database {db!r}",
                         f"databases there: {', '.join(p.name for p in dbs) or '(none)'}")
    if len(dbs) == 1:
        return dbs[0], dbs[0].name
    raise FluxaError(f"{source} holds " + (f"{len(dbs)} databases" if dbs else "no <coll>.metadata.json files"),
                     "choose one with --db" if dbs else "give mongodump's output directory or one database in it")


def _copy(src: Path, dst: Path) -> tuple[str, int]:
    """Byte-for-byte copy; (sha256, size) of the bytes written."""
    writer = HashedWriter(dst, "none")
    with open(src, "rb") as fin:
        while chunk := fin.read(CHUNK):
            writer.write(chunk)
    return writer.close()


def _collection(db_dir: Path, meta_path: Path, out: Path, rel: str, compression: str) -> tuple[str, dict]:
    name = meta_path.name[: -len(META[1] if compression == "gzip" else META[0])]
    try:
        with open_decompressed(meta_path, compression) as f:
            meta = loads(f.read().decode())
    except Exception as exc:  # noqa: BLE001 - any parse failure names the file
        raise FluxaError(f"{meta_path}: not canonical Extended JSON metadata ({type(exc).__name__}: {exc})",
                         "is this a mongodump directory?") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("indexes", []), list):
        raise FluxaError(f"{meta_path}: metadata without an indexes list", "is this a mongodump directory?")
    name = meta.get("collectionName") or name
    entry: dict = {"type": meta.get("type") or "collection"}
    if entry["type"] == "collection":
        data = db_dir / (meta_path.name.replace(".metadata.json", ".bson"))
        if not data.is_file():
            raise FluxaError(f"{data} is missing (its metadata is there)", "mongodump writes one for every collection")
        sha, size = _copy(data, out / data.name)
        digest, raw_bytes = CollectionDigest(), 0
        for raw in iter_raw_documents(out / data.name, compression):  # framing errors name the file
            digest.add_raw(raw)
            raw_bytes += len(raw)
        entry.update(count=digest.count, content_sha256=digest.hexdigest, raw_bytes=raw_bytes,
                     data={"path": f"{rel}/{data.name}", "sha256": sha, "size": size})
    sha, size = _copy(meta_path, out / meta_path.name)
    entry["metadata"] = {"path": f"{rel}/{meta_path.name}", "sha256": sha, "size": size}
    return name, entry


def import_dump(store: Store, source: str | Path, db: str | None = None, repo: str | Path | None = None) -> BackupResult:
    db_dir, db = find_database_dir(Path(source).expanduser().resolve(), db)
    metas = _metas(db_dir)
    gz = {p.name.endswith(".gz") for p in metas}
    if len(gz) > 1:
        raise FluxaError(f"{db_dir} mixes gzip and plain files", "import a dump written with one setting of --gzip")
    compression = "gzip" if gz == {True} else "none"
    repo = resolve_repo(repo)
    catalog.sweep_dead_runs(store, [repo])
    started = datetime.now(UTC)
    backup_id = new_backup_id(started)
    work = partial_dir(repo, backup_id)
    out = work / db
    out.mkdir(parents=True)
    write_pid(work)
    names = [p.name.split(".metadata.json")[0] for p in metas]
    catalog.start_backup(store, backup_id, "full", db, repo, sorted(names), started)
    t0 = time.perf_counter()
    try:
        entries = dict(_collection(db_dir, m, out, db, compression) for m in metas)
        finished = datetime.now(UTC)
        files = [f for e in entries.values() for f in (e.get("data"), e["metadata"]) if f]
        manifest = {
            "format": FORMAT, "id": backup_id, "kind": "full", "status": "complete", "db": db,
            "compression": compression, "started_at": _iso(started), "finished_at": _iso(finished),
            "seconds": round(time.perf_counter() - t0, 3), "imported_from": str(db_dir),
            "oplog": {"start": None, "end": None, "source": "imported dump: no oplog position"},
            "collections": {n: entries[n] for n in sorted(entries)},
            "totals": {"documents": sum(e.get("count", 0) for e in entries.values()),
                       "files": len(files), "bytes": sum(f["size"] for f in files)},
        }
        final, manifest_sha = seal(work, repo, backup_id, manifest)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        catalog.fail_backup(store, backup_id, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        raise
    catalog.finish_backup(store, backup_id, size=manifest["totals"]["bytes"] + (final / "manifest.json").stat().st_size,
                          file_count=len(files) + 1, finished_at=finished, oplog_end=None, manifest_sha256=manifest_sha)
    return BackupResult(backup_id, db, final, manifest, time.perf_counter() - t0)
