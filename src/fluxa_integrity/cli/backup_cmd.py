"""``fluxa-integrity backup``: snapshots, the catalog, verification, retention and pins."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from ..backup import catalog
from ..backup.retention import apply_prune, plan_prune
from ..backup.snapshot import BackupOptions, run_backup
from ..errors import FluxaError
from ..store import open_store
from .common import PolicyOpt, csv_list, policy_from
from .common import EXIT_PROBLEMS, DbOpt, JsonOpt, UriOpt, console, emit_json, target_option_values
from .progress_bars import BarSink, bars
from .render import Col, print_table, when

app = typer.Typer(help="Full snapshots in mongodump's layout, a catalog, verification by restore, retention.",
                  no_args_is_help=True)
UTC = timezone.utc


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command()
def run(collections: Optional[str] = typer.Option(None, "--collections", help="Comma-separated collections (default: all)."),
        repo: Optional[Path] = typer.Option(None, "--repo", help="Backup repository directory (default: backup_repo "
                                            "in config.yaml, then $FLUXA_HOME/backups]."),
        compression: str = typer.Option("zstd", "--compression", help="zstd, gzip (mongorestore --gzip) or none."),
        workers: int = typer.Option(3, "--workers", min=1, help="Collections dumped in parallel (threads)."),
        oplog_probe: str = typer.Option("exact", "--oplog-probe", help="exact: newest oplog entry (a full oplog scan "
                                        "on FerretDB); clock: server-clock bounds, free (docs/backup.md)."),
        incremental: bool = typer.Option(False, "--incremental", help="An incremental backup: the oplog since the "
                                         "previous backup (archives the oplog first)."),
        check: bool = typer.Option(True, "--check/--no-check", help="Check the new full backup on its files right "
                                   "away (checksums, counts, the policy's rules; S4) and record the verdict."),
        policy: Optional[Path] = PolicyOpt,
        uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """Take a full (or --incremental) backup, then check its files (S4). Exit 0 when complete, 1 when its files
    check failed, 2 when the backup failed (recorded as failed)."""
    target = target_option_values(uri, db)
    store = open_store()
    if incremental:
        from ..backup.incremental import run_incremental

        res = run_incremental(target.uri, target.db, store, repo)
        m = res.manifest
        if json_out:
            emit_json({"id": res.id, "db": res.db, "kind": "incremental", "status": "complete",
                       "directory": str(res.directory), "based_on": m["based_on"], "oplog": m["oplog"],
                       "entries": m["entries"], "sources": m["sources"], "seconds": round(res.seconds, 3)})
            return
        console.print(f"[green]incremental backup {res.id} complete[/]: {m['entries']:,} oplog entries of {res.db} "
                      f"after backup {m['based_on']}", highlight=False)
        print(res.id)
        return
    opts = BackupOptions(collections=csv_list(collections), repo=repo, compression=compression, workers=workers,
                         oplog_probe=oplog_probe)
    with bars(json_out) as progress:
        result = run_backup(target.uri, target.db, store, opts, BarSink(progress))
    m = result.manifest
    checked = None
    if check:
        from ..backup.verify_files import check_backup_files

        checked = check_backup_files(store, result.id, policy_from(policy), workers=1)
    if json_out:
        emit_json({"id": result.id, "db": result.db, "status": "complete", "directory": str(result.directory),
                   "seconds": round(result.seconds, 3), "totals": m["totals"], "oplog": m["oplog"],
                   "collections": {n: {k: e.get(k) for k in ("count", "content_sha256")} for n, e in m["collections"].items()},
                   "schema_backup": result.schema_backup, "warnings": result.warnings,
                   "files_check": None if checked is None else {
                       k: checked.get(k) for k in ("verification_id", "verdict", "problems", "integrity_findings",
                                                   "seconds")}})
        raise typer.Exit(EXIT_PROBLEMS if checked and checked["verdict"] != "pass" else 0)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"[green]backup {result.id} complete[/]: {m['totals']['documents']:,} documents, "
                  f"{m['totals']['files']} files, {_size(m['totals']['bytes'])} in {result.seconds:.1f}s -> {result.directory}",
                  highlight=False)
    if result.schema_backup:
        console.print(f"schema changed: schema backup {result.schema_backup}", highlight=False)
    if checked is not None:
        n = len(checked.get("integrity_findings") or [])
        if checked["verdict"] == "pass":
            console.print(f"[green]files checked[/] in {checked['seconds']:.1f}s: checksums, counts and framing ok; "
                          f"{n} integrity findings (reported, not part of the verdict)", highlight=False)
        else:
            console.print(f"[red]files check FAILED[/]: {'; '.join(checked['problems'])}", highlight=False)
    print(result.id)
    if checked is not None and checked["verdict"] != "pass":
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("list")
def list_(db: Optional[str] = typer.Option(None, "--db", help="Only backups of this database."),
          kind: Optional[str] = typer.Option(None, "--kind", help="full, incremental or schema."),
          json_out: bool = JsonOpt) -> None:
    """Backups in the catalog, newest first, each with its latest verification (ok, failed and
    why, or never). Runs whose process died are marked failed and their partial folders removed."""
    store = open_store()
    _sweep(store, json_out)
    rows = catalog.list_backups(store, db, kind)
    checks = catalog.latest_verifications(store)
    if json_out:
        emit_json([catalog.as_dict(r, checks.get(r.id)) for r in rows])
        return
    cells = []
    for r in rows:  # the id is typed into the next command: render.print_table never cuts it
        v = catalog.verification_summary(checks.get(r.id))
        shown = {"never": "never", "ok": f"ok {when(v['at'])}" if v["at"] else "ok",
                 "failed": f"FAILED {when(v['at'])}: {v['reason']}" if v["at"] else "FAILED"}[v["verdict"]]
        cells.append([r.id, r.kind, r.db, r.status, shown, str(len(r.collections or [])), _size(r.size or 0),
                      when(r.started_at), r.pinned_by or "-"])
    print_table(console, "backups", [Col("id", id=True), Col("kind"), Col("db"), Col("status"), Col("verification"),
                                     Col("collections", justify="right"), Col("size", justify="right"),
                                     Col("started"), Col("pinned")], cells)


def _sweep(store, quiet: bool, dry_run: bool = False) -> list[dict]:
    """Sweep dead runs in the configured repository and in those of running rows."""
    from ..backup.repository import resolve_repo

    try:
        repos = [resolve_repo(None, create=False)]
    except FluxaError:
        repos = []
    swept = catalog.sweep_dead_runs(store, [r for r in repos if r.is_dir()], dry_run)
    if not quiet:
        for s in swept:
            console.print(f"{'would sweep' if dry_run else 'swept'} backup {s['id']}: its process is gone"
                          + (f"; {'would remove' if dry_run else 'removed'} {s['folder']}" if s["folder"] else "")
                          + (f"; {'would mark' if dry_run else 'marked'} failed" if s["row"] else ""), highlight=False)
    return swept


def _same_db(row, db: Optional[str]) -> None:
    if db is not None and row.db != db:
        raise FluxaError(f"backup {row.id} is a backup of {row.db!r}, not of {db!r}",
                         f"list the backups of {db!r} with `fluxa-integrity backup list --db {db}`")


@app.command()
def show(backup_id: str = typer.Argument(..., help="Backup id (or a unique prefix)."),
         db: Optional[str] = typer.Option(None, "--db", help="Refuse unless the backup is of this database."),
         json_out: bool = JsonOpt) -> None:
    """One backup with its manifest, its latest verification verdict and every verification."""
    from ..backup.manifest import read_manifest
    from ..backup.repository import backup_dir

    store = open_store()
    row = catalog.get_backup(store, backup_id)
    _same_db(row, db)
    checks = catalog.verifications(store, row.id)
    d = catalog.as_dict(row, checks[0] if checks else None)
    path = backup_dir(Path(row.repo), row.id)
    d["manifest"] = read_manifest(path, row.manifest_sha256) if row.status in ("complete", "verified") else None
    d["verifications"] = [{"id": v.id, "verified_at": v.verified_at, "verdict": v.verdict,
                           "restore_seconds": v.restore_seconds, "problems": (v.details or {}).get("problems", [])}
                          for v in checks]
    if json_out:
        emit_json(d)
        return
    console.print(f"[bold]backup {row.id}[/] {row.kind} of {row.db}: {row.status}" + (f" ({row.error})" if row.error else ""),
                  highlight=False)
    console.print(f"{path}  {_size(row.size or 0)}, {row.file_count} files, pinned: {row.pinned_by or 'no'}", highlight=False)
    colour = {"ok": "green", "failed": "red", "never": "yellow"}[d["verification"]["verdict"]]
    console.print(f"[{colour}]{catalog.verification_text(d['verification'])}[/]", highlight=False)
    if d["manifest"] and d["manifest"].get("kind") == "full":
        print_table(console, "collections", [Col("collection"), Col("documents", justify="right"),
                                             Col("content sha256")],
                    [[n, str(e.get("count", "-")), (e.get("content_sha256") or "-")[:16]]
                     for n, e in d["manifest"]["collections"].items()])
    for v in d["verifications"]:
        console.print(f"verification {v['id']} {when(v['verified_at'])}: {v['verdict']} {v['restore_seconds']}",
                      highlight=False)


@app.command()
def verify(backup_id: str = typer.Argument(..., help="Backup id (or a unique prefix)."),
           policy: Optional[Path] = PolicyOpt, uri: Optional[str] = UriOpt,
           db: Optional[str] = typer.Option(None, "--db", help="Refuse unless the backup is of this database "
                                            "(the scratch copy is always named after the backup's own database)."),
           json_out: bool = JsonOpt) -> None:
    """Restore into a scratch database, compare with the manifest, run the checks, drop it.
    Exit 0 when the backup reproduces its source, 1 when it does not."""
    from ..restore.verification import verify_backup

    pol = policy_from(policy)
    target = target_option_values(uri, None)
    store = open_store()
    _same_db(catalog.get_backup(store, backup_id), db)
    with bars(json_out) as progress:
        report = verify_backup(target.uri, store, backup_id, pol, BarSink(progress))
    if json_out:
        emit_json(report)
    else:
        colour = "green" if report["verdict"] == "pass" else "red"
        console.print(f"[{colour}]backup {report['backup_id']}: {report['verdict']}[/]", highlight=False)
        for p in report["problems"]:
            console.print(f"  [red]problem:[/] {p}", highlight=False)
        for name, secs in report["restore_seconds"].items():
            console.print(f"  restore {name}: {secs:.2f}s", highlight=False)
        if report.get("integrity_findings"):
            console.print(f"  integrity checks on the restored copy: {len(report['integrity_findings'])} findings "
                          "(reported, not part of the verdict)", highlight=False)
    raise typer.Exit(0 if report["verdict"] == "pass" else EXIT_PROBLEMS)


@app.command("import")
def import_cmd(source: Path = typer.Argument(..., help="mongodump's output directory (or one database in it)."),
               db: Optional[str] = typer.Option(None, "--db", help="The database to import when the dump holds "
                                                "several (default: the only one); also its name in the catalog."),
               repo: Optional[Path] = typer.Option(None, "--repo", help="Backup repository directory."),
               json_out: bool = JsonOpt) -> None:
    """Catalog a mongodump directory (plain or --gzip) as a full backup: copied into the repository
    with checksums, counts and content hashes, then restorable and verifiable like any snapshot
    (not as a point-in-time base: a dump has no oplog position)."""
    from ..backup.importer import import_dump

    res = import_dump(open_store(), source, db, repo)
    m = res.manifest
    if json_out:
        emit_json({"id": res.id, "db": res.db, "kind": "full", "status": "complete", "directory": str(res.directory),
                   "imported_from": m["imported_from"], "compression": m["compression"],
                   "collections": {n: e.get("count") for n, e in m["collections"].items()},
                   "documents": m["totals"]["documents"]})
        return
    console.print(f"[green]imported {m['imported_from']} as backup {res.id}[/]: {len(m['collections'])} collections, "
                  f"{m['totals']['documents']:,} documents ({m['compression']})", highlight=False)
    print(res.id)


@app.command()
def prune(dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be deleted (and which dead runs "
                                      "swept); delete nothing."),
          policy: Optional[Path] = PolicyOpt,
          db: Optional[str] = typer.Option(None, "--db", help="Only backups of this database."),
          now: Optional[datetime] = typer.Option(None, "--now", help="Evaluate retention as of this time (UTC)."),
          json_out: bool = JsonOpt) -> None:
    """Delete backups past the policy's retention (pinned ones are kept), oplog slices no point in
    time of the policy's point_in_time window needs, and partial folders of runs whose process died."""
    from ..backup.slice_retention import apply_slice_prune, plan_slice_prune

    store = open_store()
    now = now.replace(tzinfo=UTC) if now and now.tzinfo is None else now
    pol = policy_from(policy)
    swept = _sweep(store, json_out, dry_run)
    items = plan_prune(store, pol, now, db)
    slices = plan_slice_prune(store, pol, now)
    deleted = [] if dry_run else apply_prune(store, items) + apply_slice_prune(store, slices)
    if json_out:
        emit_json({"dry_run": dry_run, "deleted": deleted, "backups": [i.__dict__ for i in items],
                   "oplog_slices": [i.__dict__ for i in slices], "swept_dead_runs": swept})
        return
    print_table(console, "prune (dry run)" if dry_run else "prune",
                [Col("id", id=True), Col("kind"), Col("status"), Col("age (days)", justify="right"), Col("action"),
                 Col("why")],
                [[i.id, i.kind, i.status, f"{i.age_days:.1f}",
                  ("would delete" if dry_run else "deleted") if i.action == "delete" else "keep", i.reason]
                 for i in items + [i for i in slices if i.action == "delete"]])  # kept slices would only crowd it
    kept = [i for i in slices if i.action == "keep"]
    if kept:
        console.print(f"{len(kept)} oplog slices kept ({kept[0].reason})", highlight=False)


@app.command()
def pin(backup_id: str = typer.Argument(..., help="Backup id (or a unique prefix)."),
        reason: str = typer.Option(..., "--reason", help="Incident id or note: why it must be kept."),
        db: Optional[str] = typer.Option(None, "--db", help="Refuse unless the backup is of this database."),
        json_out: bool = JsonOpt) -> None:
    """Exempt a backup from pruning (evidence of an incident) until unpinned."""
    if not reason.strip():
        raise FluxaError("--reason must not be empty", "say why it is kept, e.g. --reason INC-12")
    store = open_store()
    _same_db(catalog.get_backup(store, backup_id), db)
    row = catalog.set_pin(store, backup_id, reason.strip())
    emit_json(catalog.as_dict(row)) if json_out else console.print(f"backup {row.id} pinned: {row.pinned_by}", highlight=False)


@app.command()
def unpin(backup_id: str = typer.Argument(..., help="Backup id (or a unique prefix)."),
          db: Optional[str] = typer.Option(None, "--db", help="Refuse unless the backup is of this database."),
          json_out: bool = JsonOpt) -> None:
    """Release a pin: the backup is subject to retention again."""
    store = open_store()
    _same_db(catalog.get_backup(store, backup_id), db)
    row = catalog.set_pin(store, backup_id, None)
    emit_json(catalog.as_dict(row)) if json_out else console.print(f"backup {row.id} unpinned", highlight=False)


@app.command("archive-oplog")
def archive_oplog_cmd(once: bool = typer.Option(False, "--once", help="Archive what the oplog holds now and exit "
                                                "(cron, tests); without it: follow it until SIGTERM/SIGINT."),
                      slice_seconds: float = typer.Option(60.0, "--slice-seconds", min=0.1,
                                                          help="Close a slice after this many seconds."),
                      max_slice_mb: float = typer.Option(64.0, "--max-slice-mb", min=0.01,
                                                         help="Close a slice at this much raw BSON."),
                      repo: Optional[Path] = typer.Option(None, "--repo", help="Backup repository directory."),
                      uri: Optional[str] = UriOpt, json_out: bool = JsonOpt) -> None:
    """Follow local.oplog.rs and write compressed, checksummed slices. Exit 1 if a gap was found."""
    import signal
    import threading

    from ..backup.archiver import ArchiveOptions, archive_oplog

    target = target_option_values(uri, None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # close the current slice cleanly, then exit
        signal.signal(sig, lambda *_: stop.set())
    opts = ArchiveOptions(once=once, slice_seconds=slice_seconds, max_slice_bytes=int(max_slice_mb * (1 << 20)),
                          poll_ms=200 if once else 1000)
    log = (lambda msg: None) if json_out else (lambda msg: console.print(
        f"[bold red]{msg}[/]" if msg.startswith("GAP") else msg, highlight=False))
    import os

    def ready() -> None:  # a readiness signal for supervisors and tests: the stop handler is in place
        console.print(f"archiver ready (pid {os.getpid()}): " + ("archiving what the oplog holds" if once else
                      "following local.oplog.rs; SIGTERM or SIGINT archives what is written, closes the slice "
                      "and exits"), highlight=False)

    rep = archive_oplog(target.uri, open_store(), repo, opts, stop, log, ready)
    if json_out:
        emit_json({"repo": str(rep.repo), "entries": rep.entries, "slices": rep.slices, "gaps": rep.gaps,
                   "last": None if rep.last is None else f"{rep.last.time}:{rep.last.inc}",
                   "seconds": round(rep.seconds, 3)})
    else:
        console.print(f"archived {rep.entries:,} entries in {len(rep.slices)} slices -> {rep.repo}/oplog", highlight=False)
        for g in rep.gaps:
            console.print(f"[bold red]GAP: point-in-time window broken after {g['after']}: {g['reason']}[/]",
                          highlight=False)
    raise typer.Exit(EXIT_PROBLEMS if rep.gaps else 0)


@app.command("oplog-status")
def oplog_status(repo: Optional[Path] = typer.Option(None, "--repo", help="Only this repository (default: all)."),
                 deep: bool = typer.Option(False, "--deep", help="Also check every slice's sha256 (reads every "
                                           "file), not only that it is present with its cataloged size."),
                 uri: Optional[str] = typer.Option(None, "--uri", help="MongoDB URI whose live oplog must still reach "
                                                   "back to the archive (default: $FLUXA_MONGODB_URI, config.yaml, "
                                                   "then the running dev server; none found: not checked)."),
                 json_out: bool = JsonOpt) -> None:
    """Windows of continuous oplog coverage and the gaps between them, including one the live oplog
    shows before the archiver runs again (it no longer reaches back to the archive). Exit 1 if there is a gap."""
    from ..backup.archive_catalog import caught_up, coverage
    from ..backup.live_overlap import live_gap
    from ..backup.repository import resolve_repo

    store = open_store()
    windows, gaps = coverage(store, resolve_repo(repo, create=False) if repo else None, deep=deep)
    live_checked = None
    try:
        from ..mongo.connection import connect

        target = target_option_values(uri, None)
        client = connect(target.uri)
        try:
            g = live_gap(client, windows, gaps)
        finally:
            client.close()
        live_checked = target.uri
        if g is not None:
            gaps.append(g)
    except FluxaError as exc:
        if uri:  # asked for by name: an unreachable server is an error, not a silent skip
            raise
        live_checked = None
        live_note = exc.message
    else:
        live_note = None
    proofs = caught_up(store)
    rows = [{**w.as_dict(), "caught_up_at": proofs.get(w.last)} for w in windows]
    if json_out:
        emit_json({"windows": rows, "gaps": gaps, "broken": bool(gaps), "deep": deep, "live_checked": live_checked})
    else:
        print_table(console, "oplog archive: continuous windows",  # from/to are oplog positions: whole
                    [Col("from", id=True), Col("to", id=True), Col("from (wall)"), Col("to (wall)"),
                     Col("caught up at"), Col("slices", justify="right"), Col("entries", justify="right")],
                    [[str(d["from"]), str(d["to"]), when(d["from_wall"]), when(d["to_wall"]), when(d["caught_up_at"]),
                      str(d["slices"]), str(d["entries"])] for d in rows])
        for d in rows:
            if d["duplicate_slices"]:
                console.print(f"note: {len(d['duplicate_slices'])} slices hold entries other slices also hold "
                              "(written by two archivers at once); harmless, replay skips repeated entries",
                              highlight=False)
            for p in d["problems"]:
                console.print(f"[yellow]damaged, but its entries are in other slices:[/] {p}", highlight=False)
        for g in gaps:
            console.print(f"[bold red]GAP after {g['after']} up to {g['before']}: {g['reason']} - the point-in-time "
                          "window is broken there[/]", highlight=False)
        console.print("checked: " + ("presence, size and sha256 of every slice" if deep else
                      "presence and size of every slice (--deep also checks their sha256)")
                      + (f"; the live oplog of {live_checked} reaches back to the archive" if live_checked and
                         not any(g.get("live") for g in gaps) else "")
                      + (f"; the live oplog was not checked ({live_note})" if live_note else ""), highlight=False)
    raise typer.Exit(EXIT_PROBLEMS if gaps else 0)
