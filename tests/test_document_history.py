"""recovery/document_history.py, the one document-level point in time, in the modes undelete
needs: every delete of a collection since T whatever its id, the version just before a
document's final delete, and the tolerant mode without a snapshot (read from the oldest oplog
entry, gaps collected instead of raised) - next to the strict mode correct-by-policy and migrate
use (no backup: NoHistory). On a private server: its oplog is small and clean.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pymongo
import pytest

from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.recovery.document_history import NoHistory, deletes_since, document_history, key
from fluxa_integrity.store import open_store

UTC = timezone.utc


@pytest.fixture()
def app(private_server, fluxa_home):
    uri = private_server.status().uri
    client = pymongo.MongoClient(uri, tz_aware=True)
    yield uri, client, client.app
    client.close()


def test_without_a_backup_tolerant_reads_the_oplog_and_strict_refuses(app):
    _, client, db = app
    start = datetime.now(UTC) - timedelta(seconds=1)
    db.items.insert_many([{"_id": 1, "v": "a"}, {"_id": 2, "v": "x"}, {"_id": 3, "v": "kept"}])
    db.items.update_one({"_id": 1}, {"$set": {"v": "b"}})
    db.items.delete_one({"_id": 1})
    db.items.insert_one({"_id": 1, "v": "again"})  # back, changed, deleted for good
    db.items.update_one({"_id": 1}, {"$set": {"v": "last words"}})
    db.items.delete_one({"_id": 1})
    db.items.delete_one({"_id": 2})
    db.other.insert_one({"_id": 9})
    db.other.delete_one({"_id": 9})  # another collection: not this one's business

    gaps: list[str] = []
    deleted = deletes_since(None, client, "app", "items", start, gaps=gaps)
    assert sorted(v[0] for v in deleted.values()) == [1, 2]  # every delete of items since T, by no id
    assert all(v[1] >= start for v in deleted.values())
    assert deletes_since(None, client, "app", "items", datetime.now(UTC) + timedelta(seconds=5), gaps=[]) == {}

    with pytest.raises(NoHistory):
        document_history(None, client, "app", "items", [1, 2])
    gaps = []
    hist = document_history(None, client, "app", "items", [1, 2, 3, 4], gaps=gaps)
    assert hist.backup_id is None and hist.gaps is gaps and any("no state store" in g for g in gaps)
    doc, origin = hist.before_final_delete(key(1))
    assert doc == {"_id": 1, "v": "last words"} and origin == "the oplog"
    assert hist.before_final_delete(key(2))[0] == {"_id": 2, "v": "x"}
    assert hist.before_final_delete(key(3))[0] == {"_id": 3, "v": "kept"}  # not deleted: its newest state
    assert hist.before_final_delete(key(4)) is None  # never seen


def test_with_a_backup_the_snapshot_is_the_base_and_named(app, tmp_path):
    uri, client, db = app
    db.items.insert_many([{"_id": 1, "v": "backed up"}, {"_id": 2, "v": "too"}])
    store = open_store()
    run_backup(uri, "app", store, BackupOptions(repo=tmp_path / "repo", oplog_probe="exact"))
    db.items.update_one({"_id": 1}, {"$set": {"v": "after the backup"}})
    db.items.delete_one({"_id": 1})
    gaps: list[str] = []
    when = max(v[1] for v in deletes_since(store, client, "app", "items", None, gaps=gaps).values())
    hist = document_history(store, client, "app", "items", [1, 2], snapshot_before=when, gaps=gaps)
    assert hist.backup_id is not None and gaps == []
    doc, origin = hist.before_final_delete(key(1))
    assert doc == {"_id": 1, "v": "after the backup"}
    assert origin == f"backup {hist.backup_id} + the oplog up to its deletion"
    assert hist.before_final_delete(key(2)) == ({"_id": 2, "v": "too"},
                                                f"backup {hist.backup_id} (its deletion is not in the oplog)")
