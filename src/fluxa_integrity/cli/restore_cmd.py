"""``fluxa-integrity restore``: restore into a separate database, diff, promote, undo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from bson import json_util
from rich.table import Table

from ..backup import catalog
from ..backup.retention import aware
from ..errors import FluxaError
from ..mongo.connection import connect
from ..store import open_store
from .common import PolicyOpt, csv_list, policy_from
from .common import DbOpt, JsonOpt, UriOpt, console, emit_json, target_option_values
from .progress_bars import BarSink, bars

app = typer.Typer(help="Restore a backup into a separate database, compare it with live data, bring data back "
                  "(reversibly).", no_args_is_help=True)


@app.command()
def run(backup: Optional[str] = typer.Option(None, "--backup", help="Backup id (or unique prefix)."),
        at: Optional[str] = typer.Option(None, "--at", help="Point in time: ISO datetime (UTC) or BSON timestamp t:i; "
                                         "restores the newest snapshot before it and replays the oplog up to it."),
        inclusive: bool = typer.Option(True, "--inclusive/--exclusive", help="Apply entries stamped exactly at --at "
                                       "(default) or stop before them."),
        to_db: str = typer.Option(..., "--to-db", help="Target database: never the source; empty unless --drop-target."),
        collections: Optional[str] = typer.Option(None, "--collections", help="Comma-separated [default: all]."),
        filter_json: Optional[str] = typer.Option(None, "--filter", help="Only documents matching this (Extended) JSON "
                                                  "filter: equality, $in, $nin, $ne, $gt/$gte/$lt/$lte, $exists."),
        drop_target: bool = typer.Option(False, "--drop-target", help="Drop the target database first."),
        uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Restore a snapshot (--backup), or the database as it was at --at. Rerunning an interrupted
    snapshot restore resumes it."""
    from ..restore.executor import restore_snapshot

    if (backup is None) == (at is None):
        raise FluxaError("say what to restore: --backup ID or --at TIME (one of them)",
                         "e.g. restore run --at 2026-11-25T21:40:00Z --to-db fluxa_pitr")
    store = open_store()
    if at is not None:
        from ..restore.pitr import restore_to_point

        if filter_json:
            raise FluxaError("--filter is not supported with --at", "restore to the point, then promote with --ids")
        target = target_option_values(uri, db)
        with bars(json_out) as progress:
            res = restore_to_point(target.uri, store, target.db, to_db, at, collections=csv_list(collections),
                                   inclusive=inclusive, drop_target=drop_target, progress=BarSink(progress))
        if json_out:
            emit_json(res)
            return
        r = res["replay"]
        console.print(f"[green]restored[/] {res['source_db']} as of {at} ({'inclusive' if inclusive else 'exclusive'}) "
                      f"into {to_db}: snapshot {res['backup_id']} + {r['entries']:,} oplog entries replayed "
                      f"({r['upserts']} upserts, {r['deletes']} deletes, {r['modified']} diffs) in {res['seconds']:.1f}s; "
                      "sources: " + ", ".join(f"{s['kind']} {s['source']} ({s['entries']})" for s in res["sources"]),
                      highlight=False)
        return
    target = target_option_values(uri, None)
    with bars(json_out) as progress:
        res = restore_snapshot(target.uri, store, backup, to_db, collections=csv_list(collections), filter_text=filter_json,
                               drop_target=drop_target, progress=BarSink(progress))
    if json_out:
        emit_json({"restore_id": res.run_id, "backup_id": res.backup_id, "source_db": res.source_db,
                   "target_db": res.target_db, "resumed": res.resumed, "seconds": round(res.seconds, 3),
                   "collections": res.collections})
        return
    total = sum(c.get("inserted", 0) + c.get("already_there", 0) for c in res.collections.values())
    console.print(f"[green]restored[/] backup {res.backup_id} ({res.source_db}) into {res.target_db}: "
                  f"{total:,} documents in {res.seconds:.1f}s" + (" (resumed)" if res.resumed else ""), highlight=False)


@app.command()
def diff(backup: Optional[str] = typer.Option(None, "--backup", help="Backup id: compare its last restore target."),
         target_db: Optional[str] = typer.Option(None, "--target-db", help="Restored database to compare."),
         collections: Optional[str] = typer.Option(None, "--collections"),
         time_field: Optional[str] = typer.Option(None, "--time-field", help="Field for conflicts [default: the "
                                                  "policy's watermark_field of each collection]."),
         samples: int = typer.Option(5, "--samples", min=0), policy: Optional[Path] = PolicyOpt,
         uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Added, removed, changed and conflicting documents: live database vs a restored copy."""
    from sqlalchemy import select

    from ..restore.diff import diff_databases
    from ..store.backup_models import RestoreRun

    target = target_option_values(uri, db)
    store = open_store()
    with store.session() as s:
        q = select(RestoreRun).where(RestoreRun.status == "complete").order_by(RestoreRun.id.desc())
        if backup:
            q = q.where(RestoreRun.backup_id == catalog.get_backup(store, backup).id)
        if target_db:
            q = q.where(RestoreRun.target_db == target_db)
        if not backup and not target_db:
            raise FluxaError("say what to compare: --backup ID or --target-db NAME", "e.g. restore diff --target-db fluxa_restored")
        run_row = s.scalars(q.limit(1)).first()
    if run_row is None:
        raise FluxaError("no complete restore matches " + (f"backup {backup} " if backup else "") +
                         (f"into {target_db}" if target_db else ""), "restore it first with `restore run`")
    row = catalog.get_backup(store, run_row.backup_id)
    if target.db == run_row.target_db:
        raise FluxaError(f"--db {target.db!r} is the restored database itself", "--db names the live database")
    client = connect(target.uri)
    names = csv_list(collections) or list(run_row.collections)
    result = diff_databases(client[target.db], client[run_row.target_db], names, policy_from(policy),
                            aware(row.finished_at), time_field, samples)
    if json_out:
        emit_json({"live_db": target.db, "target_db": run_row.target_db, "backup_id": row.id,
                   "backup_finished_at": row.finished_at, "collections": result})
        return
    table = Table(title=f"{target.db} (live) vs {run_row.target_db} (backup {row.id})")
    for col in ("collection", "live", "backup", "added", "removed", "changed", "conflicts"):
        table.add_column(col)
    for n, r in result.items():
        table.add_row(n, *(str(r[k]) for k in ("live_count", "backup_count", "added", "removed", "changed", "conflicts")))
    console.print(table)


@app.command()
def promote(from_db: str = typer.Option(..., "--from-db", help="The restored database to bring data back from."),
            collections: str = typer.Option(..., "--collections", help="Comma-separated collections."),
            ids: Optional[str] = typer.Option(None, "--ids", help="Only these _ids: an Extended JSON array."),
            incident: Optional[str] = typer.Option(None, "--incident", help="Incident id authorising the write."),
            yes: bool = typer.Option(False, "--yes", help="Explicit operator confirmation instead of an incident."),
            apply: bool = typer.Option(False, "--apply", help="Write. Without it: a dry run (counts, sample diffs)."),
            uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Bring collections or documents back to the live database; every overwritten document is saved first."""
    from ..restore.promote import apply_promotion, plan_promotion, summarize

    target = target_option_values(uri, db)
    if from_db == target.db:
        raise FluxaError("--from-db is the live database", "promote from the database `restore run --to-db` made")
    id_list = None
    if ids:
        try:
            id_list = json_util.loads(ids)
        except ValueError as exc:
            raise FluxaError(f"--ids is not valid Extended JSON: {exc}", 'e.g. --ids \'[{"$oid": "..."}]\'') from exc
        if not isinstance(id_list, list):
            raise FluxaError("--ids must be a JSON array", 'e.g. --ids \'[{"$oid": "..."}]\'')
    if apply and not (incident or yes):
        raise FluxaError("a promotion writes to the live database: tie it to an incident or confirm it",
                         "add --incident ID (preferred) or --yes")
    client = connect(target.uri)
    names = csv_list(collections)
    have = set(client[from_db].list_collection_names())
    missing = [n for n in names if n not in have]
    if missing:
        raise FluxaError(f"{from_db!r} has no collection {', '.join(missing)}", f"it has: {', '.join(sorted(have)) or '(none)'}")
    plan = plan_promotion(client[target.db], client[from_db], names, id_list)
    out = {"dry_run": not apply, "live_db": target.db, "from_db": from_db, "collections": summarize(plan)}
    if apply:
        out.update(apply_promotion(open_store(), client[target.db], client[from_db], plan,
                                   f"incident:{incident}" if incident else "operator confirmation (--yes)"))
    if json_out:
        emit_json(out)
        return
    for n, c in out["collections"].items():
        console.print(f"{n}: {c['overwrite']} to overwrite, {c['insert']} to insert, {c['unchanged']} unchanged",
                      highlight=False)
        for d in c["sample_diffs"]:
            console.print(f"  {d['_id']}: {d['fields']}", highlight=False)
    if apply:
        console.print(f"[green]promotion {out['promotion_id']} applied[/]; undo with "
                      f"`fluxa-integrity restore undo {out['promotion_id']}`", highlight=False)
    else:
        console.print("dry run: nothing written; add --apply (with --incident ID or --yes) to write", highlight=False)


@app.command()
def undo(promotion_id: str = typer.Argument(...), uri: Optional[str] = UriOpt, json_out: bool = JsonOpt) -> None:
    """Put back exactly what a promotion overwrote, and remove what it inserted."""
    from ..restore.promote import undo_promotion

    target = target_option_values(uri, None)
    res = undo_promotion(open_store(), connect(target.uri), promotion_id)
    if json_out:
        emit_json(res)
    else:
        console.print(f"[green]promotion {promotion_id} undone[/]: {res['counts']}", highlight=False)
