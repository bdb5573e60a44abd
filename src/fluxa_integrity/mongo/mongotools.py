"""The real mongodump and mongorestore, built from tools/mongo-tools and run as subprocesses.

tools/mongo-tools/src holds mongo-tools at a pinned commit (tools/mongo-tools/PIN): the packages
the two tools import, with mongo-tools' own go.mod/go.sum, whose dependencies the Go module proxy
serves. ``build()`` compiles both with the machine's Go on first use and caches them under
``tools/mongo-tools/bin/<hash of the sources>/`` (ignored by git), so an edit or a new pin
rebuilds; a binary is written under a temporary name and renamed, so a half-built one is never
used. ``FLUXA_MONGOTOOLS_BIN`` names a directory holding installed mongodump and mongorestore
instead. Failures (no Go, no source, a failed build, a tool exiting non-zero) raise FluxaError.

Used by the interop tests and benchmarks/bench_backup.py as the reference implementation of the
dump format: Fluxa's own backup and restore never call them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import FluxaError

TOOLS = ("mongodump", "mongorestore")


def source_dir() -> Path:
    """tools/mongo-tools: $FLUXA_MONGOTOOLS_SRC or found walking up from this file (editable install)."""
    env = os.environ.get("FLUXA_MONGOTOOLS_SRC")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "mongo-tools"
        if (candidate / "src" / "go.mod").exists():
            return candidate
    raise FluxaError(
        "cannot find tools/mongo-tools (the pinned source of mongodump and mongorestore)",
        "run from a checkout of fluxa-integrity installed with `pip install -e .`, "
        "or set FLUXA_MONGOTOOLS_SRC, or FLUXA_MONGOTOOLS_BIN to a directory with both tools",
    )


def pin(src: Path | None = None) -> dict[str, str]:
    """The ``version`` and ``commit`` lines of tools/mongo-tools/PIN."""
    path = (src or source_dir()) / "PIN"
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _digest(src: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([src / "PIN", *(src / "src").rglob("*")]):
        if path.is_file():
            digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class MongoTools:
    mongodump: Path
    mongorestore: Path


def binary_dir() -> Path:
    env = os.environ.get("FLUXA_MONGOTOOLS_BIN")
    if env:
        return Path(env)
    src = source_dir()
    return src / "bin" / _digest(src)


def build(progress=print) -> MongoTools:
    """Build whichever of mongodump/mongorestore is missing from the cache; return both paths."""
    target = binary_dir()
    tools = MongoTools(*(target / name for name in TOOLS))
    missing = [name for name in TOOLS if not (target / name).exists()]
    if not missing:
        return tools
    if os.environ.get("FLUXA_MONGOTOOLS_BIN"):
        raise FluxaError(
            f"FLUXA_MONGOTOOLS_BIN={target} has no {' or '.join(missing)}",
            "point it at a directory holding both mongodump and mongorestore, or unset it to build them",
        )
    go = shutil.which("go")
    if not go:
        raise FluxaError(
            "the Go toolchain is needed to build mongodump and mongorestore and `go` is not on PATH",
            "install Go 1.25 or newer (Debian: apt-get install golang), "
            "or set FLUXA_MONGOTOOLS_BIN to a directory with installed mongo-tools",
        )
    src = source_dir()
    version = pin(src)
    target.mkdir(parents=True, exist_ok=True)
    progress(f"building {', '.join(missing)} from {src} (first time only, a minute or more)...")
    for name in missing:
        tmp = target / f".{name}.{os.getpid()}.tmp"  # concurrent builders never share a file
        ldflags = f"-X main.VersionStr={version.get('version', '')} -X main.GitCommit={version.get('commit', '')}"
        proc = subprocess.run(
            # -mod=mod: dependencies come from the Go module proxy as configured, pinned by go.sum
            [go, "build", "-mod=mod", "-buildvcs=false", "-trimpath", "-ldflags", ldflags,
             "-o", str(tmp), f"./{name}/main"],
            cwd=src / "src", capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise FluxaError(
                f"building {name} failed (go build in {src / 'src'}):\n{tail}",
                "check that the Go module proxy is reachable and `go version` is 1.25 or newer",
            )
        tmp.replace(target / name)  # atomic: a half-written binary is never used
    return tools


def run(binary: Path, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run one tool; a non-zero exit raises FluxaError with the tail of its output."""
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FluxaError(f"{binary.name} exited with code {proc.returncode}:\n{tail}",
                         f"the command was: {binary.name} {' '.join(args)}")
    return proc


def mongodump(tools: MongoTools, uri: str, db: str, out: Path, gzip: bool = False,
              threads: int | None = None) -> None:
    """Dump one database into ``out/<db>/`` as mongodump does."""
    args = [f"--uri={uri}", f"--db={db}", f"--out={out}"]  # not --quiet: it hides the reason of a failure
    args += ["--gzip"] if gzip else []
    args += [f"--numParallelCollections={threads}"] if threads else []
    run(tools.mongodump, args)


def mongorestore(tools: MongoTools, uri: str, dump_dir: Path, source_db: str, target_db: str,
                 gzip: bool = False, indexes: bool = False, threads: int | None = None) -> None:
    """Restore ``dump_dir/<source_db>/`` into ``target_db``. ``indexes=False`` passes
    --noIndexRestore: FerretDB 1.24 refuses the createIndexes mongorestore sends (it adds an
    ``ns`` field to each index spec), whoever wrote the dump."""
    args = [f"--uri={uri}", f"--dir={dump_dir}", f"--nsInclude={source_db}.*",
            f"--nsFrom={source_db}.*", f"--nsTo={target_db}.*"]  # not --quiet: it hides the reason of a failure
    args += ["--gzip"] if gzip else []
    args += [] if indexes else ["--noIndexRestore"]
    args += [f"--numParallelCollections={threads}"] if threads else []
    run(tools.mongorestore, args)
