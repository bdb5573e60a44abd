"""Schema backups: collection options (validators included, where the server has them) and
indexes of a whole database, taken when they differ from the latest schema backup, kept forever.

The schema document is canonical Extended JSON with collections sorted, so equal schemas give
equal bytes; its sha256 is the catalog row's ``manifest_sha256`` and the version is the backup
id (time-ordered). ``schema.json`` is the backup's only data file.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pymongo
from bson.son import SON
from sqlalchemy import select

from ..store import Store
from ..store.backup_models import Backup
from . import catalog
from .manifest import FORMAT, write_manifest
from .metadata import collection_infos, dumps_canonical, indexes_of
from .repository import backup_dir, new_backup_id, partial_dir, write_pid

UTC = timezone.utc
SCHEMA_FILE = "schema.json"


def schema_document(db: pymongo.database.Database) -> SON:
    doc = SON()
    for name, info in sorted(collection_infos(db).items()):
        entry = SON(type=info.get("type", "collection"), options=SON(info.get("options") or {}))
        entry["indexes"] = sorted(indexes_of(db, name), key=lambda i: i["name"]) if entry["type"] == "collection" else []
        doc[name] = entry
    return doc


def latest_schema_backup(store: Store, db: str) -> Backup | None:
    with store.session() as s:
        return s.scalars(select(Backup).where(Backup.db == db, Backup.kind == "schema", Backup.status == "complete")
                         .order_by(Backup.started_at.desc(), Backup.id.desc()).limit(1)).first()


def take_schema_backup_if_changed(client: pymongo.MongoClient, db_name: str, repo: Path, store: Store,
                                  force: bool = False) -> str | None:
    """The new schema backup's id, or None when the schema is the same as the latest one's."""
    text = dumps_canonical(schema_document(client[db_name])).encode()
    sha = hashlib.sha256(text).hexdigest()
    latest = latest_schema_backup(store, db_name)
    if latest is not None and latest.manifest_sha256 == sha and not force:
        return None
    now = datetime.now(UTC)
    backup_id = new_backup_id(now)
    work = partial_dir(repo, backup_id)
    work.mkdir(parents=True)
    write_pid(work)
    (work / SCHEMA_FILE).write_bytes(text)
    write_manifest(work, {"format": FORMAT, "id": backup_id, "kind": "schema", "status": "complete", "db": db_name,
                          "started_at": now.isoformat(), "schema_sha256": sha,
                          "previous": latest.id if latest else None,
                          "collections": sorted(json.loads(text))})
    work.rename(backup_dir(repo, backup_id))
    catalog.start_backup(store, backup_id, "schema", db_name, repo, sorted(json.loads(text)), now)
    catalog.finish_backup(store, backup_id, size=len(text), file_count=2, finished_at=now, oplog_end=None,
                          manifest_sha256=sha)
    return backup_id
