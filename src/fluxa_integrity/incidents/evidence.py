"""Containment actions carried out with the backup package (S18 "preserve evidence", S19
"verify backup integrity"): installed into the action registry when incidents is imported.

preserve_evidence pins the newest restorable full backup of the incident's database and takes
a fresh snapshot of the affected collections, pinned too, so retention cannot delete the state
the investigation needs. The application database comes from the action's ``uri``/``db``
parameters, else the incident's database and the usual resolution (--uri, env, config, dev
server).
"""

from __future__ import annotations

from ..backup.catalog import list_backups, set_pin
from ..backup.snapshot import BackupOptions, run_backup
from ..config import resolve_target
from .actions import ActionContext, register_action

RESTORABLE = ("complete", "verified")


def preserve_evidence(ctx: ActionContext) -> dict:
    inc = ctx.incident
    target = resolve_target(ctx.params.get("uri"), ctx.params.get("db") or inc.database)
    reason = f"incident {inc.id}: evidence"
    latest = next((b for b in list_backups(ctx.store, target.db, kind="full") if b.status in RESTORABLE), None)
    if latest is not None:
        set_pin(ctx.store, latest.id, reason)
    # the clock probe: an exact oplog position costs a full oplog scan on FerretDB (docs/backup.md)
    snap = run_backup(target.uri, target.db, ctx.store,
                      BackupOptions(collections=list(inc.collections or []) or None, oplog_probe="clock"))
    set_pin(ctx.store, snap.id, reason)
    return {"status": "done", "pinned_backup": latest.id if latest else None, "evidence_snapshot": snap.id,
            "collections": list(inc.collections or []) or "all"}


register_action("preserve_evidence", preserve_evidence)
