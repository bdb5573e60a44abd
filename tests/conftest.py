"""Shared fixtures: one real server per test session, a fresh database per test.

By default the session starts the project's own FerretDB (tools/ferretdb) on a free port in a
temporary directory. With FLUXA_TEST_MONGODB_URI set, the whole suite runs against that server
(a real MongoDB replica set) instead, unchanged; tests that must kill or restart a server
start a private FerretDB of their own and are skipped there.

FLUXA_TEST_LOAD=N runs the session beside N busy-loop processes (one per core keeps the machine
fully loaded): tests must wait on readiness signals, never on sleeps, and this is how that is
checked (`FLUXA_TEST_LOAD=2 ./dev test tests/test_check_cli.py`). See tests/waiting.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo
import pytest

from fluxa_integrity.fluxa import model as m
from fluxa_integrity.mongo.devserver import DevServer, build, free_port

EXTERNAL_URI = os.environ.get("FLUXA_TEST_MONGODB_URI")
# every dev server this run starts (fixtures, and the CLI in subprocesses) stops when the run is
# gone: a run killed by a timeout or SIGKILL leaves no FerretDB behind (tools/ferretdb/main.go)
os.environ["FLUXA_DEVDB_EXIT_WITH_PID"] = str(os.getpid())

#: One busy loop; it exits on its own when pytest goes away (a killed session leaves no spinner).
_BUSY_LOOP = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(10**6): pass\n"


def load_processes() -> int:
    raw = os.environ.get("FLUXA_TEST_LOAD", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise pytest.UsageError(f"FLUXA_TEST_LOAD={raw!r}: expected a number of busy processes (e.g. 2)")
    return int(raw)


def pytest_report_header(config):
    n = load_processes()
    return [f"FLUXA_TEST_LOAD: {n} busy-loop processes beside the tests"] if n else []


@pytest.fixture(scope="session", autouse=True)
def background_load():
    """N busy-loop processes for the whole session when FLUXA_TEST_LOAD=N; their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY_LOOP]) for _ in range(load_processes())]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture(scope="session")
def ferretdb_binary() -> Path:
    return build(progress=lambda msg: None)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> str:
    if EXTERNAL_URI:
        yield EXTERNAL_URI
        return
    server = DevServer(tmp_path_factory.mktemp("session-devdb"))
    status = server.start(port=free_port(), progress=lambda msg: None)
    yield status.uri
    server.stop()


@pytest.fixture(scope="session")
def client(mongo_uri) -> pymongo.MongoClient:
    c = pymongo.MongoClient(mongo_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    yield c
    c.close()


@pytest.fixture(scope="session")
def server_is_ferretdb(client) -> bool:
    """Whether the session's server is FerretDB (the dev server) rather than a real MongoDB."""
    from fluxa_integrity.mongo.unsupported import is_ferretdb

    return is_ferretdb(client)


@pytest.fixture()
def real_mongodb_only(server_is_ferretdb):
    """Skip (not fail) on FerretDB a test of values only a real MongoDB stores (docs/local-server.md)."""
    if server_is_ferretdb:
        pytest.skip("FerretDB 1.24 cannot store Decimal128, MinKey/MaxKey, JavaScript code, NaN, Infinity, "
                    "nested arrays, DBRefs or '.'/'$' keys: run with FLUXA_TEST_MONGODB_URI=<a real MongoDB>")


@pytest.fixture()
def db(client):
    """A fresh database for one test (and its secondary-system twin), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield client[name]
    client.drop_database(name)
    client.drop_database(m.secondary_db_name(name))


@pytest.fixture(autouse=True)
def fluxa_home(tmp_path, monkeypatch) -> Path:
    """Each test gets its own $FLUXA_HOME (manifests, config, state)."""
    home = tmp_path / "fluxa-home"
    monkeypatch.setenv("FLUXA_HOME", str(home))
    for var in ("FLUXA_MONGODB_URI", "FLUXA_DB"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture()
def private_server(tmp_path, ferretdb_binary):
    """A FerretDB of this test's own, for tests that kill or restart the server."""
    server = DevServer(tmp_path / "private-devdb")
    server.start(port=free_port(), progress=lambda msg: None)
    yield server
    server.stop()


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture()
def cli(fluxa_home):
    """Run the real command line in a subprocess, as a user would."""

    def run(*args: str, env: dict | None = None, timeout: float = 600) -> CliResult:
        full_env = {**os.environ, "FLUXA_HOME": str(fluxa_home), "COLUMNS": "200", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "fluxa_integrity", *args], capture_output=True,
                              text=True, env=full_env, timeout=timeout)
        return CliResult(proc)

    return run


def _pg_bin(name: str) -> str | None:
    import glob
    import shutil as sh

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else sh.which(name)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A PostgreSQL server of the test session's own (Debian's binaries), or FLUXA_TEST_POSTGRES_URL."""
    if os.environ.get("FLUXA_TEST_POSTGRES_URL"):
        yield os.environ["FLUXA_TEST_POSTGRES_URL"]
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail("PostgreSQL server binaries not found: ./dev test installs them (apt-get install postgresql)")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="fluxa-pg-"))  # not under pytest's 0700 root-owned tree
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres account the package made
        import shutil as sh

        sh.chown(base, "postgres")
        sh.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "fluxa", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(base / "pg.log"), "-w", "start", "-o",
                    f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    yield f"postgresql+psycopg2://fluxa@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    import shutil as sh

    sh.rmtree(base, ignore_errors=True)
