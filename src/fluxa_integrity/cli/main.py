"""Entry point: ``fluxa-integrity``."""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import FluxaError
from .common import EXIT_ERROR, console, emit_json
from .backup_cmd import app as backup_app
from .check_cmd import app as check_app
from .devdb import app as devdb_app
from .drill_cmd import drill as drill_command
from .schema_cmd import app as schema_app
from .fluxa_cmd import app as fluxa_app
from .incident_cmd import app as incident_app
from .policy_cmd import app as policy_app
from .recover_cmd import app as recover_app
from .restore_cmd import app as restore_app
from .rpo_cmd import rpo_app, rto_app
from .jobs_cmd import app as jobs_app
from .monitor_cmd import app as monitor_app
from .serve_cmd import serve
from .token_cmd import app as token_app
from .web_cmd import web as web_command

cli = typer.Typer(
    name="fluxa-integrity",
    help="Keep a MongoDB application's data correct, and get it back when it is not.\n\n"
    "Runs the Chatbot Fluxa data-integrity playbook: detect, contain, recover, verify, document.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(devdb_app, name="devdb")
cli.add_typer(fluxa_app, name="fluxa")
cli.add_typer(policy_app, name="policy")
cli.add_typer(check_app, name="check")
cli.add_typer(backup_app, name="backup")
cli.add_typer(restore_app, name="restore")
cli.add_typer(rpo_app, name="rpo")
cli.add_typer(rto_app, name="rto")
cli.add_typer(incident_app, name="incident")
cli.add_typer(schema_app, name="schema")
cli.add_typer(jobs_app, name="jobs")
cli.add_typer(monitor_app, name="monitor")
cli.command("serve")(serve)
cli.add_typer(recover_app, name="recover")
cli.command("drill")(drill_command)
cli.add_typer(token_app, name="token")
cli.command("web")(web_command)


def _version(value: bool) -> None:
    if value:
        print(f"fluxa-integrity {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Keep a MongoDB application's data correct, and get it back when it is not."""


def app() -> None:
    """Console script. Click handles usage errors (exit 2) and typer.Exit; a FluxaError raised
    by a command becomes a clear message, with its hint, and exit code 2 - never a traceback.
    With --json, a usage error (unknown option, bad value) is also a JSON document on stdout."""
    try:
        if "--json" in sys.argv[1:]:
            sys.exit(_run_for_json())
        cli()
    except FluxaError as exc:
        if "--json" in sys.argv:
            emit_json({"error": exc.message, "hint": exc.hint})
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
        sys.exit(EXIT_ERROR)


def _run_for_json() -> int:
    """Run the command line without click's standalone mode, which prints usage errors on stderr
    only: a script reading stdout must get ``{"error", "hint"}`` there too. stderr keeps the usual
    usage panel."""
    try:
        from typer._click import exceptions as click_exc  # typer >= 0.23 vendors click
    except ImportError:  # pragma: no cover - older typer on real click
        from click import exceptions as click_exc

    try:
        rv = typer.main.get_command(cli).main(prog_name="fluxa-integrity", standalone_mode=False)
    except click_exc.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx is not None else "fluxa-integrity"
        emit_json({"error": exc.format_message(), "hint": f"see `{path} --help`"})
        try:
            from typer.rich_utils import rich_format_error

            rich_format_error(exc)
        except ImportError:  # pragma: no cover
            exc.show()
        return EXIT_ERROR
    except typer.Abort:
        emit_json({"error": "aborted", "hint": None})
        console.print("aborted", highlight=False)
        return EXIT_ERROR
    return rv if isinstance(rv, int) else 0
