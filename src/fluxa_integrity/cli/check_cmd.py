"""``fluxa-integrity check``: run the policy's integrity checks and browse their history."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from pymongo.errors import PyMongoError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..checks.history import (baselines, get_finding, list_findings, list_runs, record_failed_run, record_run,
                              watermarks)
from ..checks.dask_pool import ClusterLost, parse_address
from ..checks.findings import fingerprint
from ..checks.runner import ProgressSink, RunOptions, run_checks
from ..checks.sources import BackupFiles, baselines_before
from ..errors import FluxaError
from ..mongo.connection import first_line
from ..store import open_store
from .common import (EXIT_PROBLEMS, DbOpt, JsonOpt, PolicyOpt, UriOpt, csv_list, console, emit_json, policy_from,
                     target_option_values)
from .render import Col, is_id_key, print_table, value, when

app = typer.Typer(help="Integrity checks from the policy: one streaming pass per collection, findings with "
                  "evidence, history in the state store.", no_args_is_help=True)
UTC = timezone.utc


class _Bars(ProgressSink):
    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def start(self, collection: str, total: int) -> None:
        self.tasks[collection] = self.progress.add_task(collection, total=max(total, 1))

    def advance(self, collection: str, n: int) -> None:
        if collection in self.tasks:
            self.progress.advance(self.tasks[collection], n)

    def done(self, collection: str) -> None:
        task = self.tasks.get(collection)
        if task is not None:
            t = self.progress.tasks[[x.id for x in self.progress.tasks].index(task)]
            self.progress.update(task, total=t.completed or 1, completed=t.completed or 1)


@app.command()
def run(
    rules: Optional[str] = typer.Option(None, "--rules", help="Comma-separated rule ids (default: all)."),
    collections: Optional[str] = typer.Option(None, "--collections", help="Comma-separated collections (default: all in the policy)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes; collections are split into partitions "
                                "(backup file segments, _id ranges) evaluated in parallel and merged exactly."),
    partitions: str = typer.Option("auto", "--partitions", help="With --workers > 1: auto (split backup files "
                                   "always, a server unless it is FerretDB), on, or off (whole collections in parallel)."),
    dask: Optional[str] = typer.Option(None, "--dask", help="Run the partitions on Dask: 'local' starts a cluster of "
                                       "--workers processes for this run, tcp://HOST:PORT uses a running scheduler "
                                       "(its workers need this package, and a backup's files at the same path)."),
    key_buckets: Optional[int] = typer.Option(None, "--key-buckets", min=1, help="With --dask: key sets, facts, "
                                              "counts and unique keys stay on the cluster in this many buckets by "
                                              "key hash, and the rules are joined there; raise it when a bucket "
                                              "outgrows a worker's memory (default: one per worker)."),
    backup: Optional[str] = typer.Option(None, "--backup", help="Check this backup's files (id or unique prefix) "
                                         "instead of the live database; no server is used."),
    dump_dir: Optional[Path] = typer.Option(None, "--dump-dir", help="Check a plain mongodump directory (--db picks "
                                            "the database when it holds several); no server is used."),
    since: Optional[datetime] = typer.Option(None, "--since", help="Start of the deletions window, UTC (default: each rule's lookback)."),
    incremental: bool = typer.Option(False, "--incremental", help="Only documents changed since the last run "
                                     "(collections with a watermark field); per-document rules only; closes nothing."),
    changes: bool = typer.Option(False, "--changes", help="Read from the server only what the oplog says was "
                                 "written since the last --changes run; every rule, exact (a local copy under "
                                 "$FLUXA_HOME/check-mirror; the first run copies the database)."),
    samples: int = typer.Option(20, "--samples", min=0, help="Sample documents kept per finding."),
    policy: Optional[Path] = PolicyOpt, uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run the checks on the live database, a backup (--backup) or a mongodump directory
    (--dump-dir). Exit 0 when clean, 1 when there are findings, 2 on error."""
    pol = policy_from(policy)
    store = open_store()
    opts = RunOptions(collections=csv_list(collections), rules=csv_list(rules), workers=workers,
                      since=since.replace(tzinfo=UTC) if since and since.tzinfo is None else since,
                      max_samples=samples, incremental=incremental, partitions=partitions, changes=changes,
                      dask=parse_address(dask) if dask is not None else None, key_buckets=key_buckets)
    started = datetime.now(UTC)
    files, label = _files_target(store, backup, dump_dir, db)
    if files is None:
        target = target_option_values(uri, db)
        label, db_name, base = target.db, target.db, baselines(store, target.db)
    else:
        db_name = files.db
        base = baselines_before(store, files.db, files.started_at) if backup else None
    try:
        with Progress(TextColumn("[bold]{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, disable=json_out) as bars:
            report = run_checks(None if files else target.uri, db_name, pol, opts, baselines=base,
                                watermarks=watermarks(store, db_name) if incremental and not files else None,
                                progress=_Bars(bars), files=files, store=store)
    except PyMongoError as exc:
        run_id = record_failed_run(store, label, started, first_line(exc), opts.collections or [], opts.rules or [])
        raise FluxaError(f"check run {run_id} failed: {first_line(exc)}",
                         "the run is recorded as failed and no finding changed; check the server and run again") from exc
    except FluxaError as exc:
        # a damaged backup file, a Dask cluster lost mid-run: the run is failed, never complete
        if files is not None or isinstance(exc, ClusterLost):
            record_failed_run(store, label, started, exc.message, opts.collections or [], opts.rules or [])
        raise
    summary = record_run(store, report)
    # the state store's finding ids: what `check show` and `incident open --finding` take
    ids = {r.fingerprint: r.id for r in list_findings(store, report.database, None)}
    fid = [ids.get(fingerprint(report.database, f.rule_id, f.variant)) for f in report.findings]
    if json_out:
        emit_json({"run_id": summary["run_id"], "database": report.database, "seconds": round(report.seconds, 3),
                   "docs": report.docs, "rules": report.rules, "warnings": report.warnings,
                   "missing_collections": report.missing,
                   **({"changes": report.changes} if report.changes is not None else {}),
                   "history": {k: v for k, v in summary.items() if k != "run_id"},
                   "findings": [{"finding_id": i, **f.as_dict()} for i, f in zip(fid, report.findings)]})
    else:
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}", highlight=False)
        _findings_table(report.findings, fid, f"run {summary['run_id']} on {report.database}: "
                        f"{report.total_docs:,} documents in {report.seconds:.1f}s")
        if report.changes is not None:
            read = sum(c["read"] for c in report.changes.values())
            ev = sum(c["evaluated"] for c in report.changes.values())
            total = sum(c["parts"] for c in report.changes.values())
            console.print(f"--changes: {read:,} document{'' if read == 1 else 's'} read from the server; "
                          f"{ev} of {total} parts evaluated, {total - ev} reused", highlight=False)
        console.print(f"{summary['opened']} new, {summary['seen_again']} seen again, {summary['reopened']} reopened, "
                      f"{summary['closed']} closed", highlight=False)
        if report.findings:
            next_steps(fid[0])
    raise typer.Exit(EXIT_PROBLEMS if report.findings else 0)


def _files_target(store, backup: Optional[str], dump_dir: Optional[Path], db: Optional[str]):
    """(BackupFiles, the run's database label) for --backup / --dump-dir, (None, None) otherwise.
    A backup's run is recorded under ``<db>@backup:<id>``, never under the live database: its
    findings describe the data when the backup was taken and must not close (or set baselines for)
    the live database's."""
    if backup and dump_dir:
        raise FluxaError("--backup and --dump-dir both name what to check", "give one of them")
    if dump_dir is not None:
        files = BackupFiles.of_dump(dump_dir, db)
        return files, files.label
    if backup:
        from ..checks.sources import open_backup

        try:
            files = open_backup(store, backup)
        except FluxaError as exc:
            if "failed their checksum" in exc.message:
                from ..backup import catalog

                row = catalog.get_backup(store, backup)
                record_failed_run(store, f"{row.db}@backup:{row.id}", datetime.now(UTC), exc.message, [], [])
            raise
        if db and db != files.db:
            raise FluxaError(f"backup {backup} is of database {files.db!r}, not {db!r}", "drop --db or pick another backup")
        return files, files.label
    return None, None


def next_steps(example_id) -> None:
    """What a responder does after findings: read the evidence, open incidents, recover."""
    console.print(f"next: fluxa-integrity check show {example_id if example_id is not None else 'ID'}"
                  "   the evidence of one finding\n"
                  "      fluxa-integrity incident intake   open incidents for the open findings\n"
                  "      fluxa-integrity restore run --backup ID --to-db T   recover into a copy first",
                  highlight=False, markup=False, soft_wrap=True)


def _findings_table(findings, ids, title: str) -> None:
    if not findings:
        console.print(f"[green]no findings[/] - {title}", highlight=False)
        return
    # ids (the finding's, the rule's) are typed into the next command: printed whole, never wrapped;
    # the message is in `check show`
    cols = [Col("id", id=True), Col("rule", id=True), Col("variant"), Col("criticality"),
            Col("docs", justify="right"), Col("users", justify="right"), Col("documents dated")]
    rows = [["-" if i is None else str(i), f.rule_id, f.variant, f.criticality or "-", str(f.count),
             str(f.affected_users), _span(f.first_doc_time, f.last_doc_time)] for i, f in zip(ids, findings)]
    print_table(console, title, cols, rows)


def _span(first, last) -> str:
    a, b = when(first, day=True), when(last, day=True)
    return a if a == b else f"{a}..{b}"


@app.command()
def history(db: Optional[str] = typer.Option(None, "--db", help="Only runs on this database."),
            limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many runs."), json_out: bool = JsonOpt) -> None:
    """Past runs, newest first."""
    runs = list_runs(open_store(), db, limit)
    if json_out:
        emit_json([{"id": r.id, "database": r.database, "started_at": r.started_at, "finished_at": r.finished_at,
                    "status": r.status, "stats": r.stats, "error": r.error} for r in runs])
        return
    cols = [Col("run", id=True), Col("database"), Col("started", whole=True), Col("status"),
            Col("documents", justify="right"),
            Col("findings", justify="right"), Col("seconds", justify="right")]
    rows = []
    for r in runs:
        st = r.stats or {}
        rows.append([str(r.id), r.database, when(r.started_at), r.status, str(sum((st.get("docs") or {}).values())),
                     str(st.get("findings", "-")), str(st.get("seconds", "-"))])
    print_table(console, "check runs", cols, rows)


@app.command()
def findings(status: str = typer.Option("open", "--status", help="Which findings: open, closed or all."),
             db: Optional[str] = typer.Option(None, "--db", help="Only findings on this database."), json_out: bool = JsonOpt) -> None:
    """Findings in the state store (open ones by default). Exit 1 when any is open."""
    rows = list_findings(open_store(), db, None if status == "all" else status)
    if json_out:
        emit_json([_finding_dict(r) for r in rows])
    else:
        cols = [Col("id", id=True), Col("rule", id=True), Col("variant"), Col("status"), Col("count", justify="right"),
                Col("runs"), Col("class")]  # the fingerprint is in --json and `check show`
        print_table(console, f"{status} findings", cols,
                    [[str(r.id), r.rule_id, r.variant, r.status, str(r.count), f"{r.first_run_id}..{r.last_run_id}",
                      r.data_class or "-"] for r in rows])
        if rows:
            console.print(f"next: fluxa-integrity check show {rows[0].id}   the evidence of one finding",
                          highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_PROBLEMS if any(r.status == "open" for r in rows) else 0)


def _finding_dict(r, sightings=None) -> dict:
    d = {k: getattr(r, k) for k in ("id", "database", "fingerprint", "rule_id", "variant", "collection", "category",
                                    "data_class", "criticality", "status", "message", "count", "affected_users",
                                    "samples", "first_doc_time", "last_doc_time", "opened_at", "closed_at",
                                    "first_run_id", "last_run_id")}
    if sightings is not None:
        d["sightings"] = [{"run_id": s.run_id, "seen_at": s.seen_at, "count": s.count} for s in sightings]
    return d


@app.command()
def show(finding: str = typer.Argument(..., help="Finding id or fingerprint prefix."), json_out: bool = JsonOpt) -> None:
    """One finding with its evidence and every sighting."""
    got = get_finding(open_store(), finding)
    if got is None:
        raise FluxaError(f"no finding {finding!r}", "list them with `fluxa-integrity check findings --status all`")
    row, sightings = got
    if json_out:
        emit_json(_finding_dict(row, sightings))
        return
    console.print(f"[bold]finding {row.id}[/] {row.fingerprint}  [{'red' if row.status == 'open' else 'green'}]{row.status}[/]")
    console.print(f"{row.rule_id} / {row.variant} on {row.database}.{row.collection} "
                  f"({row.data_class or 'unclassified'}, {row.criticality or '-'})\n{row.message}", highlight=False)
    console.print(f"{row.count} documents, {row.affected_users} users, documents dated "
                  f"{when(row.first_doc_time)} .. {when(row.last_doc_time)}", highlight=False, soft_wrap=True)
    samples = row.samples or []
    extra = [k for k in dict.fromkeys(k for smp in samples for k in smp) if k not in ("_id", "value")]
    cols = [Col("_id", id=True), Col("value")] + [Col(k, id=is_id_key(k)) for k in extra]
    print_table(console, f"samples ({len(samples)} of {row.count})", cols,
                [[value(smp.get("_id"), key="_id"), value(smp.get("value", {"$missing": True}))]
                 + [value(smp.get(k), key=k) if k in smp else "-" for k in extra] for smp in samples])
    console.print("sightings: " + ", ".join(f"run {s.run_id} ({s.count}, {when(s.seen_at)})" for s in sightings),
                  highlight=False)
