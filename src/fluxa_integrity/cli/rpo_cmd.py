"""``fluxa-integrity rpo status`` and ``rto status``: objectives per data class vs the catalog."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from ..backup.objectives import rpo_status, rto_status
from ..policy.durations import format_duration
from ..store import open_store
from .common import PolicyOpt, policy_from
from .common import EXIT_PROBLEMS, DbOpt, JsonOpt, console, emit_json
from .render import Col, print_table

rpo_app = typer.Typer(help="Recovery point objectives: age of the newest recoverable point per data class.",
                      no_args_is_help=True)
rto_app = typer.Typer(help="Recovery time objectives: restore time measured by verification drills.",
                      no_args_is_help=True)
UTC = timezone.utc


def _db(db: Optional[str]) -> str:
    import os

    from ..config import DEFAULT_DB, load_config_file

    return db or os.environ.get("FLUXA_DB") or load_config_file().get("db") or DEFAULT_DB


def _age(secs) -> str:
    from datetime import timedelta

    return "-" if secs is None else format_duration(timedelta(seconds=int(secs)))


@rpo_app.command("status")
def rpo(policy: Optional[Path] = PolicyOpt, db: Optional[str] = DbOpt,
        now: Optional[datetime] = typer.Option(None, "--now", help="Evaluate as of this time (UTC)."),
        json_out: bool = JsonOpt) -> None:
    """Exit 1 if any data class's newest recoverable point is older than its RPO."""
    now = now.replace(tzinfo=UTC) if now and now.tzinfo is None else now
    from ..backup.archive_catalog import coverage

    store = open_store()
    rows = rpo_status(store, policy_from(policy), _db(db), now)
    _, gaps = coverage(store)
    breached = any(r["status"] == "breached" for r in rows)
    if json_out:
        emit_json({"db": _db(db), "breached": breached, "data_classes": rows, "oplog_gaps": gaps})
    else:
        for g in gaps:
            console.print(f"[bold red]ERROR: oplog archive gap after {g['after']} up to {g['before']}: {g['reason']} - "
                          "no point in time in that range can be restored[/]", highlight=False)
        print_table(console, f"RPO, {_db(db)}",
                    [Col("data class"), Col("rpo"), Col("newest backup", id=True), Col("point from"), Col("age"),
                     Col("status")],
                    [[r["data_class"], r["rpo"], r["backup_id"] or "none", r.get("source") or "-",
                      _age(r["age_seconds"]), r["status"]] for r in rows])
    raise typer.Exit(EXIT_PROBLEMS if breached else 0)


@rto_app.command("status")
def rto(policy: Optional[Path] = PolicyOpt,
        db: Optional[str] = typer.Option(None, "--db", help="Only restore times measured on backups of this database."),
        json_out: bool = JsonOpt) -> None:
    """Exit 1 if a measured restore time exceeds its RTO (unmeasured classes are listed, not failed)."""
    rows = rto_status(open_store(), policy_from(policy), db)
    breached = any(r["status"] == "breached" for r in rows)
    if json_out:
        emit_json({"breached": breached, "data_classes": rows})
    else:
        print_table(console, "RTO (measured by `backup verify`)",
                    [Col("data class"), Col("rto"), Col("measured"), Col("backup", id=True), Col("status")],
                    [[r["data_class"], r["rto"], "-" if r["measured_seconds"] is None else f"{r['measured_seconds']:.2f}s",
                      r["backup_id"] or "-", r["status"]] for r in rows])
    raise typer.Exit(EXIT_PROBLEMS if breached else 0)
