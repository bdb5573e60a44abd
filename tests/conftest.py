"""Shared fixtures: one real server per test session, a fresh database per test.

By default the session starts the project's own FerretDB (tools/ferretdb) on a free port in a
temporary directory. With FLUXA_TEST_MONGODB_URI set, the whole suite runs against that server
(a real MongoDB replica set) instead, unchanged; tests that must kill or restart a server
start a private FerretDB of their own and are skipped there.
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
