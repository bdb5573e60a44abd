"""``fluxa-integrity fluxa``: the Chatbot Fluxa dataset: generate, break on purpose, summarise."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..fluxa import model as m
from ..fluxa.faults import KINDS, inject as inject_faults
from ..fluxa.generator import DEFAULT_START, GenerateOptions, generate as run_generate, planned_counts
from ..fluxa.manifest import Manifest, default_manifest_path
from ..mongo.connection import connect
from ..mongo.hashing import database_hash
from .common import DbOpt, JsonOpt, UriOpt, console, emit_json, target_option_values
from .render import Col, print_table

app = typer.Typer(help="The Chatbot Fluxa dataset: generate it, inject faults with ground truth, summarise it.",
                  no_args_is_help=True)

ManifestOpt = typer.Option(None, "--manifest", help="Ground-truth manifest file (default: $FLUXA_HOME/faults/<db>.json).")


def _open(uri, db):
    target = target_option_values(uri, db)
    client = connect(target.uri)
    return client, client[target.db]


@app.command()
def generate(
    users: int = typer.Option(..., "--users", min=1, help="Number of users; about 50 messages each on average."),
    seed: int = typer.Option(1, "--seed", help="Same seed and options, same data (same content hash)."),
    conversations_per_user: float = typer.Option(5.0, "--conversations-per-user", min=1.0,
                                                  help="Mean conversations per user (heavy-tailed)."),
    messages_per_conversation: float = typer.Option(10.0, "--messages-per-conversation", min=1.0,
                                                     help="Mean messages per conversation (heavy-tailed)."),
    start: datetime = typer.Option(DEFAULT_START.strftime("%Y-%m-%d"), "--start", formats=["%Y-%m-%d"],
                                   help="First day of the dataset's timeline (UTC)."),
    days: int = typer.Option(300, "--days", min=2, help="Length of the timeline in days."),
    secondary: bool = typer.Option(True, "--secondary/--no-secondary",
                                   help="Also create <db>_secondary: a synchronised copy of users (for drift checks)."),
    drop: bool = typer.Option(False, "--drop", help="Replace an existing database."),
    uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, manifest: Optional[Path] = ManifestOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Generate and load a deterministic Chatbot Fluxa dataset, with a progress bar.

    An interrupted run (server gone, Ctrl-C) leaves a 'running' marker; the next run drops the
    half-loaded database and starts clean.
    """
    from datetime import timezone

    opts = GenerateOptions(users=users, seed=seed, start=start.replace(tzinfo=timezone.utc), days=days,
                           conversations_per_user=conversations_per_user,
                           messages_per_conversation=messages_per_conversation, secondary=secondary)
    client, database = _open(uri, db)
    planned = planned_counts(opts)
    # each message also has a log entry; users a few logins, conversations an analytics event
    estimate = 2 * planned[m.MESSAGES] + 2 * planned[m.CONVERSATIONS] + 5 * users
    with Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
                  TimeElapsedColumn(), console=console, disable=json_out) as bar:
        task = bar.add_task("generate", total=estimate)
        result = run_generate(database, opts, drop=drop, on_batch=lambda name, n: bar.advance(task, n))
        bar.update(task, total=result.documents, completed=result.documents)
    Manifest(manifest or default_manifest_path(database.name), database.name).reset(
        {"seed": seed, "users": users, "counts": result.counts})
    client.close()
    if json_out:
        emit_json(result.as_dict())
        return
    if result.restarted:
        console.print("[yellow]an interrupted earlier generation was dropped and redone from scratch[/]")
    _counts_table(result.counts, f"generated {database.name} (seed {seed})")
    console.print(f"{result.documents} documents in {result.seconds:.1f}s = "
                  f"[bold]{result.documents / result.seconds:,.0f} docs/s[/]")


@app.command()
def inject(
    kind: str = typer.Argument(..., help="Fault kind, or 'all'. Kinds: " + ", ".join(KINDS) + "."),
    count: int = typer.Option(5, "--count", min=1, help="How many documents to break (per kind)."),
    seed: int = typer.Option(1, "--seed", help="Seeds the choice of targets."),
    uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, manifest: Optional[Path] = ManifestOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Break data on purpose and record exactly what was broken in the ground-truth manifest."""
    client, database = _open(uri, db)
    man = Manifest(manifest or default_manifest_path(database.name), database.name)
    done = inject_faults(database, man, kind, count, seed=seed)
    client.close()
    if json_out:
        emit_json({"manifest": str(man.path), "injections": [i.as_doc() for i in done]})
        return
    print_table(console, f"injected into {database.name}",
                [Col("kind"), Col("collection"), Col("documents", justify="right"), Col("variants")],
                [[inj.kind, inj.collection, str(len(inj.ids)), ", ".join(sorted(set(inj.variants or ()))) or "-"]
                 for inj in done])
    console.print(f"ground truth: {man.path}")


@app.command()
def summary(
    uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, manifest: Optional[Path] = ManifestOpt,
    hash_content: bool = typer.Option(False, "--hash", help="Also compute content hashes (reads everything)."),
    json_out: bool = JsonOpt,
) -> None:
    """Document counts per collection and the faults injected so far."""
    client, database = _open(uri, db)
    counts = {c: database[c].count_documents({}) for c in m.COLLECTIONS}
    sec = client[m.secondary_db_name(database.name)]
    counts[f"{sec.name}.users"] = sec[m.USERS].count_documents({})
    man = Manifest(manifest or default_manifest_path(database.name), database.name)
    faults = {k: sum(len(i.ids) for i in v) for k, v in man.by_kind().items()}
    hashes = database_hash(database, list(m.COLLECTIONS)) if hash_content else None
    client.close()
    if json_out:
        emit_json({"db": database.name, "counts": counts, "faults": faults, "manifest": str(man.path),
                   "hashes": hashes})
        return
    _counts_table(counts, f"dataset {database.name}")
    if faults:
        print_table(console, "injected faults (ground truth)", [Col("kind"), Col("documents", justify="right")],
                    [[k, str(n)] for k, n in faults.items()])
    else:
        console.print("no faults injected")
    if hashes:
        console.print(f"content hash: {hashes['*']['sha256']}")


def _counts_table(counts: dict[str, int], title: str) -> None:
    print_table(console, title, [Col("collection"), Col("documents", justify="right")],
                [[name, f"{n:,}"] for name, n in counts.items()])
