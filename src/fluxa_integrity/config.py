"""Where the tool keeps its files and how it finds the application database.

Resolution order for the application database (every command follows it):
``--uri``/``--db`` flags, then ``FLUXA_MONGODB_URI``/``FLUXA_DB``, then ``config.yaml`` under
``FLUXA_HOME``, then the running dev server started by ``fluxa-integrity devdb start``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import FluxaError

DEFAULT_DB = "fluxa"


def fluxa_home() -> Path:
    """The tool's own directory (state store, backups, logs, config, dev server)."""
    home = Path(os.environ.get("FLUXA_HOME") or Path.home() / ".fluxa-integrity")
    home.mkdir(parents=True, exist_ok=True)
    return home


def load_config_file() -> dict:
    path = fluxa_home() / "config.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FluxaError(f"{path}: not valid YAML: {exc}", "fix or delete the file") from exc
    if not isinstance(data, dict):
        raise FluxaError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


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
        from .mongo.devserver import DevServer

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
