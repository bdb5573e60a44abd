"""The real mongodump and mongorestore (mongo-tools 100.x), found or built, run as subprocesses.

``obtain()`` takes the first of four sources that applies, and the returned ``MongoTools`` says
which in ``source`` (``source()`` returns just that):

a. ``FLUXA_MONGOTOOLS_BIN``: a directory holding installed mongodump and mongorestore;
b. ``mongodump``/``mongorestore`` on PATH, if both report a 100.x version;
c. ``FLUXA_MONGOTOOLS_SRC``: a checkout of github.com/mongodb/mongo-tools, built with Go;
d. the Go module proxy: ``go mod download`` of the pseudo-version in tools/mongo-tools/PIN, then
   a build in a writable copy of that module (the module cache is read-only).

Builds (c, d) run on first use, are cached under ``tools/mongo-tools/bin/`` (ignored by git; under
``$FLUXA_HOME/mongo-tools/bin`` outside a checkout) keyed by the sources' hash or the pinned
version, and are installed atomically: written under a temporary name and renamed, so a
half-built binary is never used. Their ``--version`` names their source.

Failures raise FluxaError: a source asked for explicitly (a, c) that is wrong, a build that fails,
a tool exiting non-zero. When none of the four can give the tools - the usual case where the
proxy refuses mongo-tools (403) - it is ``ToolsUnavailable``, naming every reason and the three
ways to provide them; that answer is remembered for the life of the process only.

Used by the interop tests and benchmarks/bench_backup.py as the reference implementation of the
dump format: Fluxa's own backup and restore never call them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import FluxaError
from ..home import fluxa_home

TOOLS = ("mongodump", "mongorestore")
MODULE = "github.com/mongodb/mongo-tools"
PROVIDE = (
    "provide mongodump and mongorestore 100.x one of three ways: set FLUXA_MONGOTOOLS_BIN to a "
    "directory holding both; put both on PATH; or set FLUXA_MONGOTOOLS_SRC to a mongo-tools "
    "checkout (git clone https://github.com/mongodb/mongo-tools) to build them from with Go 1.25+"
)


class ToolsUnavailable(FluxaError):
    """None of the four sources can give the tools here; the message names why, the hint how to provide them."""

    def __init__(self, reasons: list[str], hint: str = PROVIDE):
        self.reason = "; ".join(reasons)
        super().__init__(f"mongodump and mongorestore are unavailable: {self.reason}", hint)


@dataclass(frozen=True)
class MongoTools:
    mongodump: Path
    mongorestore: Path
    source: str  # which of the four ways, e.g. "FLUXA_MONGOTOOLS_BIN=/opt/mongo-tools/bin"


def tools_dir() -> Path | None:
    """tools/mongo-tools of this checkout (editable install), found walking up from this file."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "mongo-tools"
        if (candidate / "PIN").exists():
            return candidate
    return None


def cache_dir() -> Path:
    here = tools_dir()
    return here / "bin" if here else fluxa_home() / "mongo-tools" / "bin"


def pin(path: Path | None = None) -> dict[str, str]:
    """The ``version`` and ``commit`` lines of tools/mongo-tools/PIN."""
    path = path or ((tools_dir() or Path("tools/mongo-tools")) / "PIN")
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


_refused: dict[tuple, ToolsUnavailable] = {}  # negative answers, for this process only


def obtain(progress=print) -> MongoTools:
    """The tools from the first source that applies (module docstring); builds on first use."""
    env_bin = os.environ.get("FLUXA_MONGOTOOLS_BIN")
    if env_bin:
        return _from_bin(Path(env_bin))
    reasons = ["FLUXA_MONGOTOOLS_BIN is not set"]
    found = _from_path(reasons)
    if found:
        return found
    env_src = os.environ.get("FLUXA_MONGOTOOLS_SRC")
    if env_src:
        return _from_checkout(Path(env_src), progress)
    reasons.append("FLUXA_MONGOTOOLS_SRC is not set")
    return _from_proxy(reasons, progress)


def source(progress=print) -> str:
    """Which of the four ways gives the tools here (building them if that is the way)."""
    return obtain(progress).source


def version(binary: Path) -> str:
    """The first line of ``binary --version``, e.g. ``mongodump version: 100.9.4``."""
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return (proc.stdout.strip().splitlines() or [""])[0]


def _from_bin(target: Path) -> MongoTools:
    missing = [name for name in TOOLS if not os.access(target / name, os.X_OK)]
    if missing:
        raise FluxaError(
            f"FLUXA_MONGOTOOLS_BIN={target} has no executable {' or '.join(missing)}",
            "point it at a directory holding both mongodump and mongorestore, or unset it",
        )
    return MongoTools(target / "mongodump", target / "mongorestore", f"FLUXA_MONGOTOOLS_BIN={target}")


def _from_path(reasons: list[str]) -> MongoTools | None:
    paths = {name: shutil.which(name) for name in TOOLS}
    if not all(paths.values()):
        reasons.append(f"no {' or '.join(n for n, p in paths.items() if not p)} on PATH")
        return None
    versions = {}
    for name, path in paths.items():
        try:
            line = version(Path(path))
        except (OSError, subprocess.TimeoutExpired) as exc:
            line = f"unrunnable ({exc})"
        versions[name] = (m.group(1) if (m := re.search(r"version:?\s+v?(\S+)", line)) else line or "no version")
    if all(v.startswith("100.") for v in versions.values()):
        return MongoTools(Path(paths["mongodump"]), Path(paths["mongorestore"]),
                          f"PATH ({paths['mongodump']} {versions['mongodump']})")
    reasons.append("the mongodump/mongorestore on PATH are not 100.x ("
                   + ", ".join(f"{n} {v}" for n, v in versions.items()) + ")")
    return None


def _go(reasons: list[str] | None = None) -> str:
    go = shutil.which("go")
    if not go:
        raise ToolsUnavailable(
            [*(reasons or []), "the Go toolchain needed to build them is missing: `go` is not on PATH"],
            "install Go 1.25 or newer (Debian: apt-get install golang), or " + PROVIDE,
        )
    return go


def _from_checkout(src: Path, progress) -> MongoTools:
    gomod = src / "go.mod"
    if not gomod.exists() or not gomod.read_text().startswith(f"module {MODULE}") \
            or not all((src / name / "main").is_dir() for name in TOOLS):
        raise FluxaError(
            f"FLUXA_MONGOTOOLS_SRC={src} is not a mongo-tools checkout "
            f"(wanted go.mod of {MODULE}, mongodump/main and mongorestore/main)",
            "point it at the root of a clone of https://github.com/mongodb/mongo-tools, or unset it",
        )
    go = _go()
    commit = _git(src, "rev-parse", "HEAD") or "unknown"
    described = _git(src, "describe", "--tags", "--always") or "unversioned"
    target = cache_dir() / f"checkout-{_digest(src)}"
    return _build(go, src, target, f"{described} (built from the checkout {src})", commit,
                  f"FLUXA_MONGOTOOLS_SRC={src} (cached in {target})", progress)


def _from_proxy(reasons: list[str], progress) -> MongoTools:
    here = tools_dir()
    if not here:
        raise ToolsUnavailable([*reasons, "tools/mongo-tools/PIN (the pinned version) is not found: "
                                "not running from a checkout of fluxa-integrity"])
    go = _go(reasons)
    pinned = pin(here / "PIN")
    ver, commit = pinned.get("version", ""), pinned.get("commit", "")
    target = cache_dir() / f"proxy-{ver}"
    label = f"the Go module proxy ({MODULE}@{ver}, cached in {target})"
    if all((target / name).exists() for name in TOOLS):
        return MongoTools(target / "mongodump", target / "mongorestore", label)
    key = (go, ver, *(os.environ.get(v) for v in ("GOPROXY", "GOFLAGS", "GOMODCACHE", "GONOSUMDB", "GOPRIVATE")))
    if key in _refused:
        raise _refused[key]
    progress(f"downloading {MODULE}@{ver} from the Go module proxy...")
    try:
        with tempfile.TemporaryDirectory() as outside:  # outside any go.mod
            proc = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{ver}"], cwd=outside,
                                  capture_output=True, text=True, timeout=600)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired:
        out, err, code = "", "no answer in 600 s", -1
    try:
        info = json.loads(out)
    except ValueError:
        info = {"Error": err.strip() or f"go mod download exited with code {code}"}
    if code != 0 or info.get("Error") or not info.get("Dir"):
        why = " ".join(str(info.get("Error") or err).split()).removeprefix(f"{MODULE}@{ver}: ")
        _refused[key] = ToolsUnavailable([*reasons, f"the Go module proxy does not serve {MODULE}@{ver}: {why}"])
        raise _refused[key]
    work = target.parent / f".proxy-{os.getpid()}.work"  # writable copy: go build -mod=mod may touch go.sum
    shutil.rmtree(work, ignore_errors=True)
    try:
        shutil.copytree(info["Dir"], work, ignore=shutil.ignore_patterns(".git"))
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
        return _build(go, work, target, f"{ver} (built from the Go module proxy)", commit, label, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _git(src: Path, *args: str) -> str:
    if not (src / ".git").exists():
        return ""
    proc = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _digest(src: Path) -> str:
    """The Go sources of a checkout (not its .git or build output): an edit rebuilds."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == src and d in (".git", "bin")))
        for name in sorted(files):
            if name.endswith(".go") or name in ("go.mod", "go.sum", "modules.txt"):
                path = Path(root) / name
                digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _build(go: str, src: Path, target: Path, version_str: str, commit: str, label: str, progress) -> MongoTools:
    """Build whichever of the two is missing from ``target``; return both."""
    tools = MongoTools(target / "mongodump", target / "mongorestore", label)
    missing = [name for name in TOOLS if not (target / name).exists()]
    if not missing:
        return tools
    target.mkdir(parents=True, exist_ok=True)
    progress(f"building {', '.join(missing)} from {src} (first time only, a minute or more)...")
    for name in missing:
        tmp = target / f".{name}.{os.getpid()}.tmp"  # concurrent builders never share a file
        ldflags = f"-X 'main.VersionStr={version_str}' -X 'main.GitCommit={commit}'"
        proc = subprocess.run(
            # -mod=mod: dependencies come from the Go module proxy as configured, pinned by go.sum
            [go, "build", "-mod=mod", "-buildvcs=false", "-trimpath", "-ldflags", ldflags,
             "-o", str(tmp), f"./{name}/main"],
            cwd=src, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise FluxaError(
                f"building {name} failed (go build in {src}):\n{tail}",
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
