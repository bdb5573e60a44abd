"""``fluxa-integrity restore``: restore into a separate database, diff, promote, undo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from bson import json_util
from rich.table import Table

from ..errors import FluxaError
from ..mongo.connection import connect
from ..restore.authority import Authority, parse_incident_id
from ..store import open_store
from .common import EXIT_PROBLEMS, PolicyOpt, csv_list, incidents_api, policy_from
from .common import DbOpt, JsonOpt, UriOpt, console, emit_json, target_option_values
from .progress_bars import BarSink, bars
from .recover_cmd import show_dry_run, timeline_line
from .render import literal as readable

IncidentOpt = typer.Option(None, "--incident", help="Open incident this is done for: checked before anything is "
                           "written, and the action goes on its timeline.")


def authority_from(incident: Optional[str]) -> Authority:
    """The incident (checked open now, before any write); none for a restore into a separate database."""
    return Authority.for_incident(incidents_api(), incident) if incident is not None else Authority.none()


app = typer.Typer(help="Restore a backup into a separate database, compare it with live data, bring data back "
                  "(reversibly).", no_args_is_help=True)


@app.command()
def run(backup: Optional[str] = typer.Option(None, "--backup", help="Backup id (or unique prefix)."),
        at: Optional[str] = typer.Option(None, "--at", help="Point in time: ISO datetime (UTC) or BSON timestamp t:i; "
                                         "restores the newest snapshot before it and replays the oplog up to it."),
        inclusive: bool = typer.Option(True, "--inclusive/--exclusive", help="Apply entries stamped exactly at --at "
                                       "(default) or stop before them."),
        to_db: str = typer.Option(..., "--to-db", help="Target database: never the source; empty unless --drop-target."),
        collections: Optional[str] = typer.Option(None, "--collections", help="Comma-separated collections to restore "
                                                  "(default: all the backup holds)."),
        filter_json: Optional[str] = typer.Option(None, "--filter", help="Only documents matching this (Extended) JSON "
                                                  "filter: equality, $in, $nin, $ne, $gt/$gte/$lt/$lte, $exists."),
        drop_target: bool = typer.Option(False, "--drop-target", help="Drop the target database first."),
        incident: Optional[str] = IncidentOpt,
        uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Restore a snapshot (--backup), or the database as it was at --at. Rerunning an interrupted
    snapshot restore resumes it."""
    from ..restore.executor import restore_snapshot

    if (backup is None) == (at is None):
        raise FluxaError("say what to restore: --backup ID or --at TIME (one of them)",
                         "e.g. restore run --at 2026-11-25T21:40:00Z --to-db fluxa_pitr")
    authority = authority_from(incident)
    store = open_store()
    if at is not None:
        from ..restore.pitr import restore_to_point

        if filter_json:
            raise FluxaError("--filter is not supported with --at", "restore to the point, then promote with --ids")
        target = target_option_values(uri, db)
        with bars(json_out) as progress:
            res = restore_to_point(target.uri, store, target.db, to_db, at, collections=csv_list(collections),
                                   inclusive=inclusive, drop_target=drop_target, progress=BarSink(progress),
                                   authority=authority)
        if json_out:
            emit_json(res)
            return
        r = res["replay"]
        console.print(f"[green]restored[/] {res['source_db']} as of {at} ({'inclusive' if inclusive else 'exclusive'}) "
                      f"into {to_db}: snapshot {res['backup_id']} + {r['entries']:,} oplog entries replayed "
                      f"({r['upserts']} upserts, {r['deletes']} deletes, {r['modified']} diffs) in {res['seconds']:.1f}s; "
                      "sources: " + ", ".join(f"{s['kind']} {s['source']} ({s['entries']})" for s in res["sources"]),
                      highlight=False)
        timeline_line(res.get("timeline"))
        return
    target = target_option_values(uri, None)
    with bars(json_out) as progress:
        res = restore_snapshot(target.uri, store, backup, to_db, collections=csv_list(collections), filter_text=filter_json,
                               drop_target=drop_target, progress=BarSink(progress), authority=authority)
    if json_out:
        emit_json({"restore_id": res.run_id, "backup_id": res.backup_id, "source_db": res.source_db,
                   "target_db": res.target_db, "resumed": res.resumed, "seconds": round(res.seconds, 3),
                   "collections": res.collections, "timeline": res.timeline})
        return
    total = sum(c.get("inserted", 0) + c.get("already_there", 0) for c in res.collections.values())
    console.print(f"[green]restored[/] backup {res.backup_id} ({res.source_db}) into {res.target_db}: "
                  f"{total:,} documents in {res.seconds:.1f}s" + (" (resumed)" if res.resumed else "")
                  + f"; restore id {res.run_id}", highlight=False)
    timeline_line(res.timeline)


@app.command()
def diff(restore: Optional[str] = typer.Option(None, "--restore", help="Restore id (printed by `restore run`) "
                                              "whose target database to compare."),
         backup: Optional[str] = typer.Option(None, "--backup", help="Backup id: compare its newest complete restore."),
         target_db: Optional[str] = typer.Option(None, "--target-db", help="Restored database to compare "
                                                 "(its newest complete restore)."),
         collections: Optional[str] = typer.Option(None, "--collections", help="Comma-separated collections to "
                                                   "compare (default: every collection the restore holds)."),
         time_field: Optional[str] = typer.Option(None, "--time-field", help="Field for conflicts (default: the "
                                                  "policy's watermark_field of each collection)."),
         samples: int = typer.Option(5, "--samples", min=0, help="How many _ids to show per kind of difference."),
         policy: Optional[Path] = PolicyOpt,
         uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Added, removed, changed and conflicting documents: live database vs a restored copy.
    Exit 0: no differences; 1: differences; 2: a side is missing or another error."""
    from ..restore.diff import choose_restore, compare_restore

    target = target_option_values(uri, db)
    store = open_store()
    run_row = choose_restore(store, restore_id=restore, backup=backup, target_db=target_db)
    client = connect(target.uri)
    res = compare_restore(store, client, target.db, run_row, csv_list(collections), policy_from(policy),
                          time_field, samples)
    if json_out:
        emit_json(res)
    else:
        live, rest = res["live"], res["restored"]
        console.print(f"comparing live {live['db']} ({live['documents']:,} documents) with {rest['db']} "
                      f"({rest['documents']:,} documents: restore {rest['restore_id']} of backup {rest['backup_id']} "
                      f"of {rest['source_db']}, taken until {readable(rest['backup_finished_at'])})",
                      highlight=False, markup=False)
        table = Table(title=f"{live['db']} (live) vs {rest['db']} (backup {rest['backup_id']})")
        for col in ("collection", "live", "backup", "added", "removed", "changed", "conflicts"):
            table.add_column(col, overflow="fold")
        for n, r in res["collections"].items():
            table.add_row(n + ("" if r["live_exists"] else " (not in live)"),
                          *(str(r[k]) for k in ("live_count", "backup_count", "added", "removed", "changed", "conflicts")))
        console.print(table)
        for n, r in res["collections"].items():
            for kind in ("removed", "changed", "conflicts", "added"):
                if r["samples"][kind]:
                    console.print(f"  {n} {kind}: " + ", ".join(readable(i) for i in r["samples"][kind]),
                                  highlight=False, markup=False)
        console.print(f"{res['differences']:,} documents differ" if res["differences"] else "no differences",
                      highlight=False)
    if res["differences"]:
        raise typer.Exit(EXIT_PROBLEMS)


def _parse_ids(ids: Optional[str]) -> Optional[list]:
    if not ids:
        return None
    try:
        id_list = json_util.loads(ids)
    except ValueError as exc:
        raise FluxaError(f"--ids is not valid Extended JSON: {exc}", 'e.g. --ids \'[{"$oid": "..."}]\'') from exc
    if not isinstance(id_list, list):
        raise FluxaError("--ids must be a JSON array", 'e.g. --ids \'[{"$oid": "..."}]\'')
    return id_list


def _superseded_line(counts: dict, journal: str) -> None:
    """Newer live documents the promotion or undo replaced: where their copies are."""
    for name, c in counts.items():
        if c.get("superseded"):
            console.print(f"[yellow]{c['superseded']} newer live document(s) of {name}[/] were replaced; their copies "
                          f"are in {journal}/superseded-*.bson", highlight=False)


def _dry_collections(dry) -> dict:
    """Per collection: what the promotion would write, and a few documents field by field."""
    out = {}
    for name, per in dry.counts.items():
        st = dry.states.get(name, {})
        out[name] = {"overwrite": per.get("replace", 0), "insert": per.get("insert", 0), "to_write": st.get("todo", 0),
                     "already": st.get("done", 0), "changed_since_plan": st.get("conflict", 0),
                     "sample_diffs": [{"_id": x["id"], "fields": x["fields"]} for x in dry.samples
                                      if x["collection"] == name]}
    return out


@app.command()
def promote(from_db: str = typer.Option(..., "--from-db", help="The restored database to bring data back from."),
            collections: str = typer.Option(..., "--collections", help="Comma-separated collections."),
            ids: Optional[str] = typer.Option(None, "--ids", help="Only these _ids: an Extended JSON array."),
            incident: Optional[str] = typer.Option(None, "--incident", help="Open incident authorising the write: "
                                                   "checked first, and the promotion goes on its timeline."),
            yes: bool = typer.Option(False, "--yes", help="Explicit operator confirmation instead of an incident."),
            apply: bool = typer.Option(False, "--apply", help="Write. Without it: a dry run (counts, sample diffs)."),
            samples: int = typer.Option(3, "--samples", min=0, help="How many documents to show per collection and "
                                        "change kind in the dry run."),
            policy: Optional[Path] = PolicyOpt,
            uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Bring collections or documents back to the live database: a restore-and-promote recovery plan,
    applied with every overwritten document journaled first and newer live writes set aside, never
    lost. If a promotion was interrupted, rerunning the same command resumes it."""
    from ..recovery.plans_store import get_row
    from ..restore.promote import preview, promote as run_promotion
    from ..restore.server_errors import server_errors

    target = target_option_values(uri, db)
    if from_db == target.db:
        raise FluxaError("--from-db is the live database", "promote from the database `restore run --to-db` made")
    id_list = _parse_ids(ids)
    if apply and not (incident or yes):
        raise FluxaError("a promotion writes to the live database: tie it to an incident or confirm it",
                         "add --incident ID (preferred) or --yes")
    incidents = incidents_api()
    iid = parse_incident_id(incident) if incident is not None else None
    if iid is not None:
        incidents.require_open(iid)  # an unknown or closed incident stops here, before anything else
    store = open_store()
    live = connect(target.uri)[target.db]
    names = csv_list(collections)
    pol = policy_from(policy)
    if not apply:
        with server_errors(f"planning the promotion from {from_db!r} into {target.db!r} failed",
                           "nothing was written; check the server and rerun"):
            dry, resumes = preview(store, live, from_db, names, id_list, pol, samples)
        if json_out:
            emit_json({"dry_run": True, "live_db": target.db, "from_db": from_db, "resumes": resumes,
                       "collections": _dry_collections(dry), "summary": dry.summary, "unresolved": dry.unresolved})
            return
        show_dry_run(dry, None, next_step=False)
        if resumes:
            console.print(f"--apply finishes the interrupted promotion {resumes} (its saved plan)", highlight=False)
        console.print("dry run: nothing written; add --apply (with --incident ID or --yes) to write", highlight=False)
        return
    actor = f"incident:{iid}" if iid is not None else "operator confirmation (--yes)"
    with server_errors(f"planning the promotion from {from_db!r} into {target.db!r} failed",
                       "nothing was written; check the server and rerun"):
        with bars(json_out) as progress:
            res = run_promotion(store, incidents, live, from_db, names, id_list, pol, incident_id=iid, actor=actor,
                                progress=BarSink(progress))
    row = get_row(store, res.plan_id)
    superseded = {n: c["superseded"] for n, c in res.counts.items() if c.get("superseded")}
    out = {"dry_run": False, "live_db": target.db, "from_db": from_db, "promotion_id": res.plan_id,
           **res.as_dict(), "planned": row["counts"], "summary": row["summary"], "superseded": superseded}
    if json_out:
        emit_json(out)
    else:
        console.print(f"plan {res.plan_id}: {row['summary']}", highlight=False, markup=False)
        for name, c in res.counts.items():
            console.print(f"{name}: {c['written']} written, {c['already']} already done, "
                          f"{c.get('superseded', 0)} newer live documents superseded"
                          + (f", {c['conflicts']} changed while being written (rerun to finish)" if c["conflicts"] else ""),
                          highlight=False)
        console.print(f"[green]promotion {res.plan_id} applied[/]" + (" (resumed)" if res.resumed else "")
                      + f"; undo with `fluxa-integrity restore undo {res.plan_id}`, verify with "
                      f"`recover verify {res.plan_id}`", highlight=False)
        _superseded_line(res.counts, res.journal)
        timeline_line(res.timeline)
    if res.conflicts:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
def undo(promotion_id: str = typer.Argument(..., help="Promotion id (printed by `restore promote --apply`)."),
         incident: Optional[str] = IncidentOpt,
         yes: bool = typer.Option(False, "--yes", help="Explicit operator confirmation instead of an incident."),
         uri: Optional[str] = UriOpt, json_out: bool = JsonOpt) -> None:
    """Put back exactly what a promotion wrote (the documents journaled before it wrote them), keeping
    newer live writes in the journal first. If an undo was interrupted, rerunning it resumes it."""
    from ..restore.promote import undo_promotion

    if not (incident or yes):
        raise FluxaError("an undo writes to the live database: tie it to an incident or confirm it",
                         "add --incident ID (preferred) or --yes")
    incidents = incidents_api()
    iid = parse_incident_id(incident) if incident is not None else None
    if iid is not None:
        incidents.require_open(iid)  # an unknown or closed incident stops here, before any write
    target = target_option_values(uri, None)
    by = f"incident:{iid}" if iid is not None else "operator confirmation (--yes)"
    with bars(json_out) as progress:
        res = undo_promotion(open_store(), incidents, connect(target.uri), promotion_id, incident_id=iid, actor=by,
                             progress=BarSink(progress))
    if json_out:
        emit_json({"promotion_id": promotion_id, **res.as_dict(), "undone_by": by})
    else:
        console.print(f"[green]promotion {promotion_id} undone[/]: " + "; ".join(
            f"{n}: {c['restored']} put back, {c['deleted']} deleted, {c['already']} already as before"
            for n, c in res.counts.items()), highlight=False)
        _superseded_line(res.counts, res.journal)
        timeline_line(res.timeline)
    if not res.finished:
        console.print(f"[yellow]not finished[/]: {len(res.changed)} document(s) changed while the undo ran; rerun "
                      "to finish", highlight=False)
        raise typer.Exit(EXIT_PROBLEMS)
