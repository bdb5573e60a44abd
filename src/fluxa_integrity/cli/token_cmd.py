"""``fluxa-integrity token``: API tokens for the web face (access/tokens.py, docs/web.md).

The secret is printed once, on stdout (``TOKEN=$(fluxa-integrity token create --role viewer)``);
only its hash is kept, so a lost token is revoked and replaced, never shown again.
"""

from __future__ import annotations

import getpass
from typing import Optional

import typer

from ..access import tokens
from ..store import open_store
from .common import JsonOpt, console, emit_json
from .render import Col, print_table, when

app = typer.Typer(help="API tokens for the HTTP API: create (the secret is shown once), list, revoke.",
                  no_args_is_help=True)


@app.command()
def create(role: str = typer.Option(..., "--role", help="viewer (read), responder (incident actions) or admin "
                                    "(recovery, restores, tokens)."),
           name: Optional[str] = typer.Option(None, "--name", help="Who holds it: the actor recorded on incident "
                                              "timelines (default: ROLE-ID)."),
           expires: Optional[str] = typer.Option(None, "--expires", help="Lifetime such as 30d, 12h or never "
                                                 "(default: never)."),
           json_out: bool = JsonOpt) -> None:
    """Create a token and print it once on stdout (only its hash is stored)."""
    tokens.check_role(role)
    row, secret = tokens.create(open_store(), role, name, tokens.parse_expiry(expires),
                                created_by=f"{getpass.getuser()} (token create)")
    if json_out:
        emit_json({**row, "token": secret})
        return
    print(secret)
    console.print(f"token {row['id']} for [bold]{row['name']}[/] ({row['role']}), expires "
                  f"{when(row['expires_at']) if row['expires_at'] else 'never'}: shown once, keep it now; send it as "
                  "`Authorization: Bearer TOKEN`", highlight=False)


@app.command("list")
def list_(json_out: bool = JsonOpt) -> None:
    """Every token, newest first, with its role and state (never its secret)."""
    rows = tokens.list_tokens(open_store())
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no API tokens yet: `fluxa-integrity token create --role viewer`", highlight=False)
        return
    print_table(console, "API tokens", [Col("id", id=True), Col("name"), Col("role"), Col("state"), Col("created"),
                                        Col("expires"), Col("revoked")],
                [[r["id"], r["name"], r["role"], r["state"], when(r["created_at"]), when(r["expires_at"]),
                  when(r["revoked_at"])] for r in rows])


@app.command()
def revoke(token_id: str = typer.Argument(..., help="Token id, as `token list` shows it."),
           json_out: bool = JsonOpt) -> None:
    """Refuse a token from now on (it stays in the list, revoked)."""
    row = tokens.revoke(open_store(), token_id)
    if json_out:
        emit_json(row)
        return
    console.print(f"token {row['id']} ({row['name']}, {row['role']}) revoked", highlight=False)
