"""``fluxa-integrity drill SCENARIO``: rehearse one of the playbook's four scenarios end to end
on a scratch database (or all four), and report detection and recovery against the policy."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import FluxaError
from .common import DbOpt, JsonOpt, UriOpt


def drill(
    scenario: str = typer.Argument(..., help="corruption, synchronisation, migration-failure, data-loss, or all."),
    uri: Optional[str] = UriOpt,
    db: Optional[str] = typer.Option(None, "--db", help="Scratch database the drill drops and fills "
                                     "(default: fluxa_drill; never the application's database unless named here)."),
    json_out: bool = JsonOpt,
) -> None:
    """Run a data-integrity drill: back up, break, detect, contain, recover, verify, close.

    Exit 0 when every affected document equals its pre-fault copy, 1 when one does not (or a
    recovery step is missing), 2 on bad input."""
    raise FluxaError("the drill is being built", "try again later")
