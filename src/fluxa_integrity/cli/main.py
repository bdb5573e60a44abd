"""Entry point: ``fluxa-integrity``."""

from __future__ import annotations

import importlib
import sys

import typer

from .. import __version__
from ..errors import FluxaError
from .common import EXIT_ERROR, console, emit_json
# Each command's module is imported only when that command runs: a CLI call pays for its own
# imports (the store, numpy, the recipes) rather than every command's - about a second a call.
# name -> (module, attribute, "group" for a Typer sub-app or "command" for a single function)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "devdb": ("devdb", "app", "group"),
    "fluxa": ("fluxa_cmd", "app", "group"),
    "policy": ("policy_cmd", "app", "group"),
    "check": ("check_cmd", "app", "group"),
    "backup": ("backup_cmd", "app", "group"),
    "restore": ("restore_cmd", "app", "group"),
    "rpo": ("rpo_cmd", "rpo_app", "group"),
    "rto": ("rpo_cmd", "rto_app", "group"),
    "incident": ("incident_cmd", "app", "group"),
    "schema": ("schema_cmd", "app", "group"),
    "jobs": ("jobs_cmd", "app", "group"),
    "monitor": ("monitor_cmd", "app", "group"),
    "serve": ("serve_cmd", "serve", "command"),
    "recover": ("recover_cmd", "app", "group"),
    "drill": ("drill_cmd", "drill", "command"),
    "token": ("token_cmd", "app", "group"),
    "web": ("web_cmd", "web", "command"),
}


def build(only: str | None = None) -> typer.Typer:
    """The command line with every command, or with just ``only`` (the one being run)."""
    root = typer.Typer(
        name="fluxa-integrity",
        help="Keep a MongoDB application's data correct, and get it back when it is not.\n\n"
        "Runs the Chatbot Fluxa data-integrity playbook: detect, contain, recover, verify, document.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    for name, (module, attr, kind) in COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        if kind == "group":
            root.add_typer(target, name=name)
        else:
            root.command(name)(target)
    root.callback()(_root)
    return root


def __getattr__(name: str):
    if name == "cli":  # the whole command line, for tests and tools that walk every command
        return build()
    raise AttributeError(name)


def _version(value: bool) -> None:
    if value:
        print(f"fluxa-integrity {__version__}")
        raise typer.Exit()


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
        cli = build(_command_named(sys.argv[1:]))
        if "--json" in sys.argv[1:]:
            sys.exit(_run_for_json(cli))
        cli()
    except FluxaError as exc:
        if "--json" in sys.argv:
            emit_json({"error": exc.message, "hint": exc.hint})
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
        sys.exit(EXIT_ERROR)


def _command_named(args: list[str]) -> str | None:
    """The command a command line runs: its first word, since the root takes no option with a
    value. None (build every command) for --help, --version, no words or an unknown word."""
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def _run_for_json(cli: typer.Typer) -> int:
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
