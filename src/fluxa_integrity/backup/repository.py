"""Where backups live: ``--repo``, else ``backup_repo`` in config.yaml, else $FLUXA_HOME/backups.

Layout (mongodump's, one directory per backup)::

    <repo>/<backup-id>/manifest.json
    <repo>/<backup-id>/<db>/<coll>.bson.zst          (.bson.gz with gzip, .bson with none)
    <repo>/<backup-id>/<db>/<coll>.metadata.json     (.metadata.json.gz with gzip, as mongodump)
    <repo>/.partial-<backup-id>/                     while running; renamed when complete
    <repo>/.partial-<backup-id>/.pid                 "<pid> <process start time>" of the writer

A partial folder whose writer is gone is swept (catalog.sweep_dead_runs) by the next
``backup run``, ``backup list`` and ``backup prune``.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

from ..home import fluxa_home, load_config_file
from ..errors import FluxaError


def resolve_repo(repo: str | Path | None, create: bool = True) -> Path:
    """The repository as one absolute, canonical path: it is stored in the catalog, so a relative
    or differently spelled path (``./repo``, ``a/../repo``, a symlink) must name it the same way."""
    source = "--repo"
    if repo is None:
        repo, source = load_config_file().get("backup_repo"), "backup_repo in config.yaml"
    if repo is None:
        return _ensure((fluxa_home() / "backups").resolve(), create)
    path = Path(repo).expanduser().resolve()
    if not path.is_dir():
        if path.exists():
            raise FluxaError(f"backup repository {path} ({source}) is not a directory", "point it at a directory")
        if not create:
            raise FluxaError(f"backup repository {path} ({source}) does not exist",
                             "check the path; `backup run --repo DIR` creates it")
    return _ensure(path, create)


def _ensure(path: Path, create: bool) -> Path:
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FluxaError(f"cannot create the backup repository {path}: {exc}", "choose a writable directory") from exc
    return path


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def partial_dir(repo: Path, backup_id: str) -> Path:
    return repo / f".partial-{backup_id}"


def backup_dir(repo: Path, backup_id: str) -> Path:
    return repo / backup_id


NO_PID_GRACE_S = 60.0  # a partial folder without its pid file yet is being created, unless older than this


def write_pid(directory: Path) -> None:
    """``<pid> <process start time>``: the start time tells a reused pid from the writer."""
    import psutil

    tmp = directory / ".pid.tmp"  # never an empty or half-written .pid for a sweep to read
    tmp.write_text(f"{os.getpid()} {psutil.Process().create_time():.3f}")
    os.replace(tmp, directory / ".pid")


def writer_alive(directory: Path) -> bool:
    """Is the process that writes this partial backup still running? (stale rows become failed,
    stale folders are swept)"""
    import psutil

    try:
        fields = (directory / ".pid").read_text().split()
        pid, started = int(fields[0]), float(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError):
        # no pid file yet, or one that cannot be read (an older writer's, not yet written whole):
        # a folder this young is being created, never swept
        try:
            return time.time() - max(directory.stat().st_mtime, _mtime(directory / ".pid")) < NO_PID_GRACE_S
        except OSError:
            return False
    try:
        proc = psutil.Process(pid)
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def dead_partials(repo: Path) -> list[Path]:
    """``.partial-<id>/`` folders whose writer is gone (kill -9, power loss, a full disk's crash)."""
    try:
        found = [p for p in repo.glob(".partial-*") if p.is_dir()]
    except OSError:
        return []
    return [p for p in found if not writer_alive(p)]
