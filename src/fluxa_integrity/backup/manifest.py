"""manifest.json: what a backup holds and how to check it, written last, before the rename.

Its own sha256 is kept in the catalog, so a manifest edited after the fact is caught too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import FluxaError
from .files import file_sha256
from .repository import backup_dir

MANIFEST = "manifest.json"
FORMAT = 1


def write_manifest(directory: Path, manifest: dict) -> str:
    data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
    (directory / MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def seal(work: Path, repo: Path, backup_id: str, manifest: dict) -> tuple[Path, str]:
    """Write the manifest into the ``.partial-<id>`` directory and rename it to ``<id>``: only a
    whole backup ever carries a backup's name. Returns (its directory, the manifest's sha256)."""
    sha = write_manifest(work, manifest)
    (work / ".pid").unlink()
    final = backup_dir(repo, backup_id)
    work.rename(final)
    return final, sha


def read_manifest(directory: Path, expected_sha256: str | None = None) -> dict:
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FluxaError(f"cannot read {path}: {exc}", "the backup directory is incomplete or was moved") from exc
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise FluxaError(f"checksum mismatch: {path} differs from the catalog's manifest sha256",
                         "the backup was altered after it was written; do not use it")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise FluxaError(f"{path}: not valid JSON: {exc}", "the backup is damaged; use another one") from exc
    if manifest.get("format") != FORMAT:
        raise FluxaError(f"{path}: unknown manifest format {manifest.get('format')!r}", "written by a newer version?")
    return manifest


def files_of(manifest: dict, collections: list[str] | None = None) -> list[dict]:
    """File entries ({path, sha256, size}) of the chosen collections (all when None)."""
    out = []
    for name, entry in manifest["collections"].items():
        if collections is None or name in collections:
            out.extend(f for f in (entry.get("data"), entry.get("metadata")) if f)
    return out


def check_files(directory: Path, entries: list[dict], progress=None) -> list[str]:
    """Problems (each naming its file): missing, wrong size, wrong sha256. Empty when all good."""
    problems = []
    for entry in entries:
        path = directory / entry["path"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{path}: size {path.stat().st_size} bytes, the manifest says {entry['size']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 mismatch (the file changed after the backup was written)")
        if progress:
            progress(entry)
    return problems


def require_intact(directory: Path, entries: list[dict]) -> None:
    problems = check_files(directory, entries)
    if problems:
        raise FluxaError("backup files failed their checksum: " + "; ".join(problems),
                         "the backup is damaged and is refused; restore from another backup (`backup list`)")
