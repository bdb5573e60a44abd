"""How the tool finds the application database (and, re-exported from ``home``, where it keeps its files).

Resolution order for the application database (every command follows it):
``--uri``/``--db`` flags, then ``FLUXA_MONGODB_URI``/``FLUXA_DB``, then ``config.yaml`` under
``FLUXA_HOME``, then the running dev server started by ``fluxa-integrity devdb start``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import FluxaError
from .home import fluxa_home, load_config_file
from .mongo.devserver import DevServer

# fluxa_home and load_config_file live in home.py (the bottom layer); re-exported for callers
__all__ = ["DEFAULT_DB", "Target", "fluxa_home", "load_config_file", "resolve_target"]

DEFAULT_DB = "fluxa"


@dataclass(frozen=True)
class Target:
    uri: str
    db: str
    source: str  # where the URI came from, for messages


def resolve_target(uri: str | None = None, db: str | None = None) -> Target:
    """Find the application database following the documented order."""
    cfg = None
    source = "--uri"
    if not uri:
        uri, source = os.environ.get("FLUXA_MONGODB_URI"), "FLUXA_MONGODB_URI"
    if not uri:
        cfg = load_config_file()
        uri, source = cfg.get("mongodb_uri"), "config.yaml"
    if not uri:
        status = DevServer.default().status()
        if status.running:
            uri, source = status.uri, "dev server"
    if not uri:
        raise FluxaError(
            "no MongoDB to talk to: no --uri, no FLUXA_MONGODB_URI, no mongodb_uri in "
            f"{fluxa_home() / 'config.yaml'}, and the dev server is not running",
            "start the local server with `fluxa-integrity devdb start`, or pass --uri mongodb://...",
        )
    if not db:
        db = os.environ.get("FLUXA_DB")
    if not db:
        cfg = cfg if cfg is not None else load_config_file()
        db = cfg.get("db") or DEFAULT_DB
    return Target(uri=uri, db=db, source=source)
