"""`backup verify`: prove a backup by restoring it (S4), and measure the restore (S37).

Checks every file's sha256, restores into a scratch database, compares counts, per-collection
content hashes and index definitions with the manifest, runs the policy's integrity checks on
the restored copy, drops the scratch database (its restore run becomes ``dropped``, so `restore
diff` never picks it) and records the verdict.

The verdict is about the backup reproducing its source: checksums, counts, hashes and indexes.
Integrity-check findings are reported with it (a faithful backup of bad data is still a faithful
backup; the findings say the data was already bad when it was taken) and do not fail it.
Restore seconds per data class are the sum of the seconds of the collections the class covers
(each as if restored alone): conservative evidence against the class's RTO.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from pymongo.errors import PyMongoError
from sqlalchemy import update

from ..backup import catalog
from ..backup.manifest import check_files, files_of, read_manifest
from ..backup.repository import backup_dir
from ..backup.snapshot import Progress
from ..backup.verify_incremental import verify_incremental
from ..checks.runner import RunOptions, run_checks
from ..errors import FluxaError
from ..mongo.connection import connect, first_line
from ..mongo.hashing import database_hash
from ..policy.models import Policy
from ..store import Store
from ..store.backup_models import RestoreRun
from .executor import load_metadata, restore_snapshot

UTC = timezone.utc


def _index_set(specs) -> set[tuple]:
    return {(s["name"], tuple((k, float(v) if isinstance(v, (int, float)) else v) for k, v in s["key"].items()))
            for s in specs}


def verify_backup(uri: str, store: Store, backup_id: str, policy: Policy, progress: Progress | None = None,
                  run_integrity_checks: bool = True) -> dict:
    if catalog.get_backup(store, backup_id).kind == "incremental":  # no state of its own to restore
        return verify_incremental(store, backup_id)
    row = catalog.restorable_backup(store, backup_id)
    directory = backup_dir(Path(row.repo), row.id)
    manifest = read_manifest(directory, row.manifest_sha256)
    details: dict = {"problems": [], "collections": {}}
    details["problems"] = check_files(directory, files_of(manifest))
    if details["problems"]:  # never restore damaged files, not even into a scratch database
        vid = catalog.record_verification(store, row.id, "fail", {}, details)
        return {"verification_id": vid, "backup_id": row.id, "verdict": "fail", **details, "restore_seconds": {}}

    scratch = f"{row.db}_verify_{row.id.split('-')[-1]}"
    client = connect(uri)
    t0 = time.perf_counter()
    result, error = None, None
    try:
        result = restore_snapshot(uri, store, row.id, scratch, drop_target=True, progress=progress)
        restore_wall = time.perf_counter() - t0
        names = [n for n, e in manifest["collections"].items() if e.get("type", "collection") == "collection"]
        hashes = database_hash(client[scratch], names)
        for name in names:
            want = manifest["collections"][name]
            got = hashes[name]
            meta = load_metadata(directory / want["metadata"]["path"])
            idx_ok = _index_set(meta["indexes"]) == _index_set(client[scratch][name].list_indexes())
            entry = {"count": got["count"], "expected_count": want["count"], "content_ok": got["sha256"] == want["content_sha256"],
                     "indexes_ok": idx_ok, "seconds": result.collections[name].get("seconds")}
            details["collections"][name] = entry
            if got["count"] != want["count"]:
                details["problems"].append(f"{name}: {got['count']} documents restored, the manifest says {want['count']}")
            elif not entry["content_ok"]:
                details["problems"].append(f"{name}: content hash differs from the manifest")
            if not idx_ok:
                details["problems"].append(f"{name}: indexes differ from the backup's metadata")
        if run_integrity_checks:
            checked = [n for n in names if n in policy.collections]
            try:
                report = run_checks(uri, scratch, policy, RunOptions(collections=checked))
                details["integrity_findings"] = [{"rule_id": f.rule_id, "variant": f.variant, "count": f.count}
                                                 for f in report.findings]
            except (FluxaError, PyMongoError) as exc:
                details["integrity_findings_error"] = exc.message if isinstance(exc, FluxaError) else first_line(exc)
        details["restore_wall_seconds"] = round(restore_wall, 3)
    except (FluxaError, PyMongoError) as exc:
        error = exc
    finally:
        try:
            client.drop_database(scratch)
            # every run into the scratch database (this one, finished or not): `restore diff`
            # never compares against a database that is gone
            with store.session() as s:
                s.execute(update(RestoreRun).where(RestoreRun.target_db == scratch, RestoreRun.status != "dropped")
                          .values(status="dropped"))
        except PyMongoError:
            pass
        client.close()
    if error is not None:  # a drill that could not finish is a failed drill: "verified" must not stay
        msg = error.message if isinstance(error, FluxaError) else first_line(error)
        details["problems"].append(f"the verification drill did not finish: {msg}")
        details["error"] = msg
        catalog.record_verification(store, row.id, "fail", {}, details, datetime.now(UTC))
        if isinstance(error, FluxaError):
            raise error
        raise FluxaError(f"verification of backup {row.id} failed: {msg}",
                         "check the server, then rerun `backup verify`") from error
    per_class: dict[str, float] = {}
    for dc in policy.data_classes:
        covered = [c.collection for c in dc.covers if c.collection in details["collections"]]
        if covered and len(covered) == len({c.collection for c in dc.covers}):
            per_class[dc.name] = round(sum(details["collections"][c]["seconds"] or 0 for c in covered), 3)
    verdict = "fail" if details["problems"] else "pass"
    vid = catalog.record_verification(store, row.id, verdict, per_class, details, datetime.now(UTC))
    return {"verification_id": vid, "backup_id": row.id, "verdict": verdict, "restore_seconds": per_class, **details}
