"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis, over ASGI: no
server process), with an admin token so every route is reachable: no answer is a server error
(5xx), and every 4xx is the API's JSON error with a non-empty ``error`` and ``hint``. Incidents
exist beforehand (ids 1-3, one acknowledged) so generated ids land on real ones as well as
unknown ones; containment reaches the session's FerretDB, as a configured server would.

Bounded: schemathesis's examples and fuzzing phases, FUZZ_EXAMPLES (default 12) per operation:
about 50 s on the 2-core machine under load. The deeper run adds the coverage phase (boundary
values, missing and extra fields, wrong types): FUZZ_PHASES=examples,coverage,fuzzing (about
95 s; it passed on 2026-11-26). What it found and was fixed: ids beyond 64 bits were a 500
(SQLite's OverflowError; ids are now bounded in the schema, 1..2^31-1, and a safety net answers
422), MongoDB-refused database names were a 500 (now 400), a body FastAPI cannot parse and
refusals of the domain without a hint had ``hint: null`` (now each says where to look).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import schemathesis  # a test dependency (pyproject: test); missing, the file fails rather than skips

from fluxa_integrity.access import tokens
from fluxa_integrity.store import open_store

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, mongo_uri):
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.web.app import create_app

    home = tmp_path_factory.mktemp("fuzz-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLUXA_HOME", str(home))
        store = open_store()
    api = Incidents(store, load_policy(None))
    for n, coll in enumerate(("users", "messages", "conversations")):
        inc = api.open(f"Fuzz target {n}", [coll], actor="pager")
        if n == 1:
            api.acknowledge(inc["id"], "pager")
    _, admin = tokens.create(store, "admin", "fuzzer")
    app = create_app(api)
    yield {"app": app, "token": admin, "home": home, "mongo_uri": mongo_uri}
    store.dispose()


def _schema():
    """The schema of the app's routes (they do not need a store to be described)."""
    from types import SimpleNamespace

    from fluxa_integrity.web.app import create_app

    loaded = schemathesis.openapi.from_dict(create_app(SimpleNamespace(store=None)).openapi())
    loaded.config.phases.update(phases=os.environ.get("FUZZ_PHASES", "examples,fuzzing").split(","))
    return loaded


schema = _schema()


@pytest.fixture(autouse=True)
def configured(fuzzed, monkeypatch):
    # containment reaches the test's FerretDB, as a server configured with it would
    monkeypatch.setenv("FLUXA_HOME", str(fuzzed["home"]))
    monkeypatch.setenv("FLUXA_MONGODB_URI", fuzzed["mongo_uri"])


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None)
def test_the_api_never_fails_and_every_refusal_says_why(case, fuzzed):
    resp = case.call(app=fuzzed["app"], headers={"Authorization": f"Bearer {fuzzed['token']}"})
    where = f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}"
    assert resp.status_code < 500, where
    if 400 <= resp.status_code < 500:
        body = resp.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), where
        assert isinstance(body.get("hint"), str) and body["hint"].strip(), where
