"""Conventions shared by every command: options, JSON output, errors and exit codes.

Exit codes: 0 ok, 1 problems found, 2 error. With ``--json`` stdout carries exactly one JSON
document (errors included, as ``{"error": ..., "hint": ...}``); everything else goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from bson import json_util
from rich.console import Console

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2

console = Console(stderr=True)  # human output never pollutes stdout used by --json
out = Console()

UriOpt = typer.Option(None, "--uri", help="MongoDB URI of the application database "
                      "(default: $FLUXA_MONGODB_URI, config.yaml, then the running dev server).")
DbOpt = typer.Option(None, "--db", help="Application database name (default: $FLUXA_DB, config.yaml, then 'fluxa').")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout and nothing else there.")


def json_default(value: Any) -> Any:
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=json_default, indent=2, sort_keys=False) + "\n")


def target_option_values(uri: Optional[str], db: Optional[str]):
    from ..config import resolve_target

    return resolve_target(uri, db)


PolicyOpt = typer.Option(None, "--policy", help="Policy file (default: $FLUXA_POLICY, `policy:` in config.yaml, "
                         "then the built-in Fluxa policy).")


def policy_from(path: Optional[Path]):
    """The policy a command works with: --policy, $FLUXA_POLICY, config.yaml, else the default."""
    from ..config import load_config_file
    from ..policy import load_policy

    path = path or os.environ.get("FLUXA_POLICY") or load_config_file().get("policy")
    return load_policy(Path(path) if path else None)


def csv_list(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def incidents_api():
    """The incident engine as every face uses it: a channel that fails is said on stderr (which
    channel, where, why) while the command itself still succeeds."""
    from ..incidents.api import Incidents

    api = Incidents.from_environment()
    api.on_delivery_failure = _warn_failure
    return api


def _warn_failure(f: dict) -> None:
    from rich.markup import escape

    later = f"will retry at {(f.get('next_attempt_at') or '')[:16]}" if f.get("will_retry") else "gave up"
    # the error text comes from the network: escaped, so brackets in it are never taken for markup
    console.print(f"[yellow]notification failed[/]: incident {f['incident']} {f['about']} via "
                  f"{escape(str(f['error']))} (attempts {f['attempts']}; {later}; "
                  "`fluxa-integrity incident notify-retry` resends)", highlight=False, soft_wrap=True)
