"""`restore diff`: a restored target database against the live one, per collection.

Seen from the live database: ``added`` = in live, not in the backup (created since),
``removed`` = in the backup, not in live (deleted since), ``changed`` = in both, different bytes.
``conflicts`` = live documents, added or changed, whose time field (the policy's
``watermark_field`` of the collection, or ``--time-field``) is later than the backup's end:
bringing the backup's version back would undo a change made after the backup.

``compare_restore`` is the whole command, for every face: it picks the restore to compare
(``choose_restore``: by restore id, backup or target database; only ``complete`` restores - a
verification's scratch copy is ``dropped``), refuses a side that is missing (the restored
database gone, the live database absent, a collection not restored) with a FluxaError naming
it, and says what it compares: both databases, the restore and backup ids, document counts.
``differences`` (added + removed + changed) is what the exit code reflects (1 when non-zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pymongo.database import Database
from sqlalchemy import select

from ..backup import catalog
from ..backup.retention import aware
from ..errors import FluxaError
from ..policy.models import Policy
from ..store import Store
from ..store.backup_models import RestoreRun
from .compare import fingerprints
from .server_errors import server_errors

UTC = timezone.utc


def _aware(v):
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


@dataclass
class Classified:
    """One collection's documents by id key (compare.id_key): ``live``/``restored`` map a key to
    (_id, sha256, live time field value); the lists hold keys in the order the server gave them."""

    live: dict
    restored: dict
    added: list  # in live only
    removed: list  # in the restored copy only
    changed: list  # in both, different bytes


def classify(live: Database, target: Database, name: str, time_field: str | None = None,
             query: dict | None = None) -> Classified:
    """The one diff of a restored copy against live (``restore diff`` and the restore-and-promote
    recipe both read it)."""
    getter = (lambda d: d.get(time_field)) if time_field else None
    theirs = fingerprints(live, name, getter, query=query)
    ours = fingerprints(target, name, query=query)
    return Classified(theirs, ours, [k for k in theirs if k not in ours], [k for k in ours if k not in theirs],
                      [k for k in theirs if k in ours and theirs[k][1] != ours[k][1]])


def diff_collection(live: Database, target: Database, name: str, since: datetime | None, time_field: str | None,
                    samples: int = 5) -> dict:
    c = classify(live, target, name, time_field)
    theirs, ours, added, removed, changed = c.live, c.restored, c.added, c.removed, c.changed
    conflicts = []
    if since is not None and time_field:
        for k in added + changed:
            t = _aware(theirs[k][2])
            if isinstance(t, datetime) and t > since:
                conflicts.append(k)
    sample = lambda keys, src: [src[k][0] for k in keys[:samples]]  # noqa: E731
    return {"live_count": len(theirs), "backup_count": len(ours),
            "added": len(added), "removed": len(removed), "changed": len(changed), "conflicts": len(conflicts),
            "samples": {"added": sample(added, theirs), "removed": sample(removed, ours),
                        "changed": sample(changed, theirs), "conflicts": sample(conflicts, theirs)},
            "time_field": time_field}


def diff_databases(live: Database, target: Database, collections: list[str], policy: Policy | None,
                   since: datetime | None, time_field: str | None = None, samples: int = 5) -> dict:
    out = {}
    for name in collections:
        field = time_field or (policy.collections[name].watermark_field
                               if policy and name in policy.collections else None)
        out[name] = diff_collection(live, target, name, since, field, samples)
    return out


def choose_restore(store: Store, *, restore_id: str | int | None = None, backup: str | None = None,
                   target_db: str | None = None) -> RestoreRun:
    """The complete restore to compare: the one named, else the newest matching backup/target."""
    if restore_id is None and not backup and not target_db:
        raise FluxaError("say what to compare: --restore ID, --backup ID or --target-db NAME",
                         "e.g. restore diff --target-db fluxa_restored")
    with store.session() as s:
        if restore_id is not None:
            try:
                row = s.get(RestoreRun, int(str(restore_id)))
            except ValueError:
                row = None
            if row is None:
                raise FluxaError(f"no restore {restore_id!r}", "the id is printed by `restore run` (restore_id)")
            if row.status != "complete":
                raise FluxaError(f"restore {row.id} is {row.status}, not complete: there is nothing whole to compare",
                                 "rerun it (`restore run` resumes it) or restore again")
            return row
        q = select(RestoreRun).where(RestoreRun.status == "complete").order_by(RestoreRun.id.desc())
        if backup:
            q = q.where(RestoreRun.backup_id == catalog.get_backup(store, backup).id)  # unknown id: FluxaError
        if target_db:
            q = q.where(RestoreRun.target_db == target_db)
        row = s.scalars(q.limit(1)).first()
    if row is None:
        raise FluxaError("no complete restore " + (f"of backup {backup} " if backup else "") +
                         (f"into {target_db!r}" if target_db else "").rstrip(),
                         "restore it first with `restore run --backup ID --to-db NAME`")
    return row


def compare_restore(store: Store, client, live_db: str, run: RestoreRun, collections: list[str] | None,
                    policy: Policy | None, time_field: str | None = None, samples: int = 5) -> dict:
    backup = catalog.get_backup(store, run.backup_id)
    target_db = run.target_db
    if live_db == target_db:
        raise FluxaError(f"--db {live_db!r} is the restored database itself", "--db names the live database")
    with server_errors(f"diff of {live_db!r} against {target_db!r} failed", "check the server and rerun"):
        restored = set(client[target_db].list_collection_names())
        if not restored:
            raise FluxaError(f"the restored database {target_db!r} (restore {run.id} of backup {backup.id}) does not "
                             "exist any more", f"restore it again: `restore run --backup {backup.id} --to-db NAME`")
        live = set(client[live_db].list_collection_names())
        if not live:
            raise FluxaError(f"the live database {live_db!r} does not exist (no collections)",
                             "--db names the live database to compare with")
        names = collections or list(run.collections)
        gone = [n for n in names if n not in restored]
        if gone:
            raise FluxaError(f"{target_db!r} has no collection {', '.join(map(repr, gone))}",
                             f"restore {run.id} holds: {', '.join(sorted(restored))}")
        result = diff_databases(client[live_db], client[target_db], names, policy, aware(backup.finished_at),
                                time_field, samples)
    for n, r in result.items():
        r["live_exists"] = n in live
    differences = sum(r["added"] + r["removed"] + r["changed"] for r in result.values())
    return {"live": {"db": live_db, "documents": sum(r["live_count"] for r in result.values())},
            "restored": {"db": target_db, "restore_id": run.id, "backup_id": backup.id, "source_db": backup.db,
                         "backup_finished_at": backup.finished_at,
                         "documents": sum(r["backup_count"] for r in result.values())},
            "differences": differences, "collections": result,
            # kept for scripts written against the first version of this output
            "live_db": live_db, "target_db": target_db, "backup_id": backup.id,
            "backup_finished_at": backup.finished_at}
