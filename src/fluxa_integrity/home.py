"""The tool's own directory (``$FLUXA_HOME``) and its ``config.yaml``: the bottom layer.

Shape: ``fluxa_home()`` returns the directory (created on first use), ``load_config_file()`` the
settings mapping (empty when the file is absent). It imports nothing of the package but
``errors``, so every layer - ``mongo``, ``store``, the domain packages - may use it without a
cycle. A file that is not a YAML mapping is a FluxaError naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import FluxaError


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
