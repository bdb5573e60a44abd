"""The local MongoDB-compatible server: FerretDB 1.24 (SQLite backend) built from tools/ferretdb.

The binary is built once with the machine's Go and cached next to its source under
``tools/ferretdb/bin/`` (ignored by git), keyed by a hash of the Go sources so an edit rebuilds.
The server runs in the background; its PID, log and data live under ``$FLUXA_HOME/devdb``.
``local.oplog.rs`` is created as a capped collection so every write can be tailed; the server
trims it to the oldest fresh oplog guard of its readers (mongo/oplog_guard.py), else to its cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import pymongo
from pymongo.errors import CollectionInvalid, PyMongoError

from ..errors import FluxaError
from ..home import fluxa_home

DEFAULT_PORT = 27217
DEFAULT_OPLOG_MB = 1024
#: FerretDB re-reads the whole oplog for every tail poll, so the archiver's lag grows with the
#: oplog's length; the server trims it to this many entries every few seconds (docs/local-server.md).
DEFAULT_OPLOG_ENTRIES = 20_000
START_TIMEOUT_S = 30.0


def ferretdb_source_dir() -> Path:
    """Find tools/ferretdb: $FLUXA_FERRETDB_SRC or walking up from this file (editable install)."""
    env = os.environ.get("FLUXA_FERRETDB_SRC")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "ferretdb"
        if (candidate / "go.mod").exists():
            return candidate
    raise FluxaError(
        "cannot find tools/ferretdb (the Go source of the local server)",
        "run from a checkout of fluxa-integrity installed with `pip install -e .`, "
        "or set FLUXA_FERRETDB_SRC or FLUXA_FERRETDB_BIN",
    )


def binary_path() -> Path:
    env = os.environ.get("FLUXA_FERRETDB_BIN")
    if env:
        return Path(env)
    src = ferretdb_source_dir()
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((src / name).read_bytes())
    return src / "bin" / f"ferretdb-{digest.hexdigest()[:12]}"


def build(progress=print) -> Path:
    """Build the server binary if the cached one is missing; return its path."""
    target = binary_path()
    if target.exists():
        return target
    go = shutil.which("go")
    if not go:
        raise FluxaError(
            "the Go toolchain is needed to build the local server and `go` is not on PATH",
            "install Go 1.22 or newer (Debian: apt-get install golang), or point "
            "FLUXA_FERRETDB_BIN at a built binary, or use --uri with your own MongoDB",
        )
    src = ferretdb_source_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    progress(f"building FerretDB from {src} (first time only, takes about a minute)...")
    proc = subprocess.run(
        [go, "build", "-o", str(tmp), "."], cwd=src, capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FluxaError(
            f"building the local server failed (go build in {src}):\n{tail}",
            "check that the Go module proxy is reachable and `go version` is 1.22+",
        )
    tmp.replace(target)  # atomic: a half-written binary is never used
    return target


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_oplog(client: pymongo.MongoClient, size_mb: int = DEFAULT_OPLOG_MB,
                 max_entries: int = DEFAULT_OPLOG_ENTRIES) -> bool:
    """Create ``local.oplog.rs`` as a capped collection if it is missing. True if created.
    An existing oplog keeps the limits it was created with."""
    if "oplog.rs" in client.local.list_collection_names():
        return False
    try:
        client.local.create_collection("oplog.rs", capped=True, size=size_mb * 1024 * 1024, max=max_entries)
    except CollectionInvalid:  # created concurrently
        return False
    return True


@dataclass
class Status:
    running: bool
    pid: int | None
    port: int | None
    uri: str | None
    data_dir: str
    log_file: str

    def as_dict(self) -> dict:
        return asdict(self)


class DevServer:
    """One background FerretDB under ``home`` (a directory of its own)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.data_dir = self.home / "data"
        self.pid_file = self.home / "ferretdb.pid"
        self.state_file = self.home / "state.json"
        self.log_file = self.home / "ferretdb.log"

    @classmethod
    def default(cls) -> "DevServer":
        return cls(fluxa_home() / "devdb")

    # -- state -----------------------------------------------------------------------------
    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _alive_pid(self) -> int | None:
        state = self._state()
        pid = state.get("pid")
        if not pid:
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            # A recycled PID belongs to another program: the server is not running.
            if not any("ferretdb" in part for part in proc.cmdline()):
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid

    def status(self) -> Status:
        pid = self._alive_pid()
        state = self._state()
        port = state.get("port")
        uri = f"mongodb://127.0.0.1:{port}/" if port else None
        return Status(
            running=pid is not None,
            pid=pid,
            port=port,
            uri=uri if pid else None,
            data_dir=str(self.data_dir),
            log_file=str(self.log_file),
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, port: int | None = None, oplog_mb: int = DEFAULT_OPLOG_MB,
              oplog_entries: int = DEFAULT_OPLOG_ENTRIES, oplog_trim_s: float = 1.0, progress=print,
              oplog_guard_ttl_s: float | None = None, oplog_guard_max: int | None = None,
              oplog_keep: int | None = None, exit_with_pid: int | None = None) -> Status:
        """``exit_with_pid``: the server stops once that process is gone (test runs: a killed
        run leaves no server behind; the CLI's server outlives the CLI on purpose). Defaults to
        $FLUXA_DEVDB_EXIT_WITH_PID, which the test suite sets to its own pid."""
        exit_with_pid = exit_with_pid or int(os.environ.get("FLUXA_DEVDB_EXIT_WITH_PID") or 0)
        current = self.status()
        if current.running:
            if port and port != current.port:
                raise FluxaError(
                    f"the dev server is already running on port {current.port}",
                    "stop it first with `fluxa-integrity devdb stop`",
                )
            return current
        port = port or self._state().get("port") or DEFAULT_PORT
        if not port_is_free(port):
            raise FluxaError(
                f"port {port} on 127.0.0.1 is already in use by another program",
                "pick another with `fluxa-integrity devdb start --port N`",
            )
        binary = build(progress)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        proc = subprocess.Popen(
            [str(binary), "-listen", f"127.0.0.1:{port}", "-data-dir", str(self.data_dir),
             "-oplog-trim-interval", f"{oplog_trim_s}s"]
            # readers' guards hold the oplog (mongo/oplog_guard.py); defaults in tools/ferretdb/main.go
            + (["-oplog-guard-ttl", f"{oplog_guard_ttl_s}s"] if oplog_guard_ttl_s is not None else [])
            + (["-oplog-guard-max", str(oplog_guard_max)] if oplog_guard_max is not None else [])
            + (["-oplog-keep", str(oplog_keep)] if oplog_keep is not None else [])
            + (["-exit-with-pid", str(exit_with_pid)] if exit_with_pid else [])
            # diagnosing a hang: goroutine dumps at http://<addr>/debug/pprof/goroutine?debug=1
            + (["-debug-addr", os.environ["FLUXA_DEVDB_DEBUG_ADDR"]] if os.environ.get("FLUXA_DEVDB_DEBUG_ADDR") else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it
        )
        log.close()
        self.state_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
        self.pid_file.write_text(str(proc.pid))
        uri = f"mongodb://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise FluxaError(
                    f"the local server exited at start (code {proc.returncode}); log tail:\n"
                    + self._log_tail(),
                    f"see {self.log_file}",
                )
            try:
                client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
                client.admin.command("ping")
                break
            except PyMongoError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise FluxaError(
                        f"the local server did not answer ping within {START_TIMEOUT_S:.0f}s",
                        f"see {self.log_file}",
                    )
                time.sleep(0.1)
        try:
            ensure_oplog(client, oplog_mb, oplog_entries)
        finally:
            client.close()
        return self.status()

    def trim_oplog_now(self) -> None:
        """Trim local.oplog.rs now instead of at the next interval (SIGUSR1 to the server)."""
        pid = self._alive_pid()
        if pid is None:
            raise FluxaError("the dev server is not running", "start it with `fluxa-integrity devdb start`")
        os.kill(pid, signal.SIGUSR1)

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server; True if one was running."""
        pid = self._alive_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
            psutil.Process(pid).wait(timeout)
        except psutil.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            psutil.Process(pid).wait(5)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would. For fault-injection tests."""
        pid = self._alive_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            try:
                psutil.Process(pid).wait(5)
            except psutil.NoSuchProcess:
                pass

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
