"""The web face (issue 12): API tokens and roles, the HTTP API over the same domain code as the CLI.

Tokens first (store, CLI), then the API through FastAPI's TestClient (no server process), and one
test that starts `fluxa-integrity web` for real and waits for its readiness line.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from fluxa_integrity.access import tokens
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.store import open_store
from fluxa_integrity.store.access_models import ApiToken


@pytest.fixture()
def store(fluxa_home):
    s = open_store()
    yield s
    s.dispose()


# -- tokens -------------------------------------------------------------------------------------

def test_migration_creates_the_token_table_as_the_model_says(store):
    from alembic.migration import MigrationContext
    from alembic.autogenerate import compare_metadata
    from fluxa_integrity.store.models import Base

    cols = {c["name"] for c in inspect(store.engine).get_columns("api_tokens")}
    assert cols == {c.name for c in ApiToken.__table__.columns}
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "api_tokens" in repr(d)] == []


def test_a_token_is_stored_hashed_and_lets_its_holder_in(store):
    row, secret = tokens.create(store, "responder", "alice")
    assert secret.startswith(f"fxt_{row['id']}_")
    with store.session() as s:
        stored = s.get(ApiToken, row["id"])
        assert secret.split("_", 2)[2] not in repr(vars(stored))  # the secret itself is nowhere
        assert stored.secret_sha256 == hashlib.sha256(secret.split("_", 2)[2].encode()).hexdigest()
    who = tokens.authenticate(store, secret)
    assert (who.token_id, who.name, who.role) == (row["id"], "alice", "responder")
    assert who.may("viewer") and who.may("responder") and not who.may("admin")


@pytest.mark.parametrize("mangle, says", [
    (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "invalid API token"),  # right id, wrong secret
    (lambda t: "fxt_000000000000_" + t.split("_", 2)[2], "invalid API token"),  # unknown id
    (lambda t: "Bearer-ish nonsense", "malformed API token"),
])
def test_wrong_tokens_are_refused_saying_why(store, mangle, says):
    _, secret = tokens.create(store, "admin")
    with pytest.raises(tokens.AccessDenied, match=says):
        tokens.authenticate(store, mangle(secret))


def test_expired_and_revoked_tokens_are_refused(store):
    t0 = tokens.now()
    row, secret = tokens.create(store, "viewer", expires_at=t0 + timedelta(hours=1), at=t0)
    assert tokens.authenticate(store, secret, at=t0 + timedelta(minutes=59)).role == "viewer"
    with pytest.raises(tokens.AccessDenied, match=f"API token {row['id']} expired"):
        tokens.authenticate(store, secret, at=t0 + timedelta(hours=1))
    row2, secret2 = tokens.create(store, "viewer")
    assert tokens.revoke(store, row2["id"])["state"] == "revoked"
    with pytest.raises(tokens.AccessDenied, match=f"API token {row2['id']} was revoked"):
        tokens.authenticate(store, secret2)
    with pytest.raises(FluxaError, match="already revoked"):
        tokens.revoke(store, row2["id"])
    with pytest.raises(FluxaError, match="no token"):
        tokens.revoke(store, "nope")
    with pytest.raises(FluxaError, match="unknown role"):
        tokens.create(store, "root")
    with pytest.raises(FluxaError, match="expired already"):
        tokens.create(store, "viewer", expires_at=t0 - timedelta(seconds=1))


def test_token_cli_creates_lists_and_revokes(cli, store):
    from typer.testing import CliRunner

    from fluxa_integrity.cli.main import cli as commands

    made = cli("token", "create", "--role", "responder", "--name", "bob", "--expires", "30d", "--json")
    assert made.code == 0, made.stderr
    t = made.json()
    assert tokens.authenticate(store, t["token"]).name == "bob"
    left = tokens.utc(__import__("datetime").datetime.fromisoformat(t["expires_at"])) - tokens.now()
    assert timedelta(days=29, hours=23) < left <= timedelta(days=30)
    bad = cli("token", "create", "--role", "root", "--json")  # errors as JSON on stdout, exit 2
    assert bad.code == 2 and bad.json() == {"error": "unknown role 'root'", "hint": "one of: viewer, responder, admin"}
    run = CliRunner().invoke
    plain = run(commands, ["token", "create", "--role", "viewer"])
    assert plain.exit_code == 0 and plain.stdout.strip().startswith("fxt_")  # the token alone on stdout
    listed = __import__("json").loads(run(commands, ["token", "list", "--json"]).stdout)
    assert {r["name"] for r in listed} == {"bob", f"viewer-{plain.stdout.strip().split('_')[1]}"}
    assert all("token" not in r and "secret_sha256" not in r for r in listed)
    assert __import__("json").loads(run(commands, ["token", "revoke", t["id"], "--json"]).stdout)["state"] == "revoked"
    with pytest.raises(tokens.AccessDenied):
        tokens.authenticate(store, t["token"])
    with store.session() as s:
        assert len(s.scalars(select(ApiToken)).all()) == 2


def test_tokens_on_postgresql(postgres_url, tmp_path):
    """The migration and the expiry/revocation checks on PostgreSQL (aware datetimes) as on SQLite."""
    from sqlalchemy import create_engine, text

    name = f"t_tok_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    pg = open_store(postgres_url.rsplit("/", 1)[0] + "/" + name)
    try:
        t0 = tokens.now()
        row, secret = tokens.create(pg, "responder", "alice", expires_at=t0 + timedelta(days=1), at=t0)
        assert tokens.authenticate(pg, secret, at=t0 + timedelta(hours=23)).name == "alice"
        with pytest.raises(tokens.AccessDenied, match="expired"):
            tokens.authenticate(pg, secret, at=t0 + timedelta(days=1, seconds=1))
        tokens.revoke(pg, row["id"])
        assert [t["state"] for t in tokens.list_tokens(pg)] == ["revoked"]
    finally:
        pg.dispose()


def test_only_the_faces_import_the_web_and_the_web_never_imports_the_cli():
    """web/ is a face like cli/: no domain package reaches up into it, and it does not go through
    the CLI to reach the domain."""
    from test_layout import import_graph

    graph = import_graph()
    into_web = sorted((m, d) for m, deps in graph.items() for d in deps
                      if d.startswith("fluxa_integrity.web") and not m.startswith(("fluxa_integrity.web",
                                                                                   "fluxa_integrity.cli")))
    assert into_web == []
    assert sorted((m, d) for m, deps in graph.items() if m.startswith("fluxa_integrity.web")
                  for d in deps if d.startswith("fluxa_integrity.cli")) == []
    assert "fluxa_integrity.web.app" in graph["fluxa_integrity.cli.web_cmd"]  # the walk sees the real modules


# -- the API ------------------------------------------------------------------------------------

@pytest.fixture()
def web(store):
    """The app over the store of this test's $FLUXA_HOME, a TestClient, and one token per role
    (the responder's is named alice: the actor its actions record)."""
    from fastapi.testclient import TestClient

    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.web.app import create_app

    api = Incidents(store, load_policy(None))
    app = create_app(api)

    class Web:
        incidents = api
        http = TestClient(app)
        token = {role: tokens.create(store, role, name)[1]
                 for role, name in (("viewer", "vera"), ("responder", "alice"), ("admin", "root-admin"))}

        def call(self, method: str, path: str, role: str | None = None, **kw):
            headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {self.token[role]}"} if role else {})}
            return self.http.request(method, path, headers=headers, **kw)

    return Web()


def _error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error", "hint"} and body["error"], body
    return body


def test_no_wrong_expired_or_revoked_token_is_a_401_saying_which(web, store):
    t0 = tokens.now()
    _, expired = tokens.create(store, "admin", "old", expires_at=t0 - timedelta(minutes=1), at=t0 - timedelta(hours=1))
    revoked_row, revoked = tokens.create(store, "admin", "gone")
    tokens.revoke(store, revoked_row["id"])
    wrong = web.token["admin"][:-2] + ("xy" if not web.token["admin"].endswith("xy") else "zz")
    cases = {None: "no API token", wrong: "invalid API token", "not-a-token": "malformed API token",
             expired: "expired at", revoked: "was revoked at"}
    for token, says in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, path in (("GET", "/api/incidents"), ("POST", "/api/incidents/1/ack")):
            resp = web.http.request(method, path, headers=headers)
            assert says in _error(resp, 401)["error"], (token, path, resp.json())
            assert resp.headers["www-authenticate"] == "Bearer"
    assert web.call("GET", "/api/whoami", "viewer").json() == {"token_id": web.token["viewer"].split("_")[1],
                                                               "name": "vera", "role": "viewer"}


def test_each_role_is_refused_what_it_may_not_do_and_nothing_is_written(web):
    inc = web.incidents.open("Duplicate emails", ["users"], actor="pager")
    path, rows = f"/api/incidents/{inc['id']}", inc["timeline_rows"]
    body = _error(web.call("POST", f"{path}/ack", "viewer"), 403)
    assert body["error"].startswith("this needs the responder role") and "vera" in body["error"]
    assert _error(web.call("POST", f"{path}/note", "viewer", json={"text": "hi"}), 403)
    assert _error(web.call("POST", "/api/incidents", "viewer", json={"title": "x"}), 403)
    assert web.incidents.get(inc["id"])["timeline_rows"] == rows  # the refusals wrote nothing
    assert [i["id"] for i in web.incidents.list()] == [inc["id"]]
    for role in ("viewer", "responder"):
        assert "needs the admin role" in _error(web.call("GET", "/api/tokens", role), 403)["error"]
        assert _error(web.call("POST", "/api/tokens", role, json={"role": "admin"}), 403)
    # and each role may do what it may: read, act, manage tokens
    assert web.call("GET", path, "viewer").status_code == 200
    assert web.call("POST", f"{path}/ack", "responder").json()["status"] == "acknowledged"
    made = web.call("POST", "/api/tokens", "admin", json={"role": "viewer", "name": "ext"})
    assert made.status_code == 201 and tokens.authenticate(web.incidents.store, made.json()["token"]).name == "ext"
    assert {t["name"] for t in web.call("GET", "/api/tokens", "admin").json()} == {"vera", "alice", "root-admin", "ext"}
    ext = made.json()["id"]
    assert web.call("POST", f"/api/tokens/{ext}/revoke", "admin").json()["state"] == "revoked"
    assert "already revoked" in _error(web.call("POST", f"/api/tokens/{ext}/revoke", "admin"), 409)["error"]
    assert _error(web.call("GET", "/api/whoami", headers={"Authorization": f"Bearer {made.json()['token']}"}), 401)


def test_unknown_ids_are_404_with_the_domains_message(web):
    for method, path, json_body, says in (
            ("GET", "/api/incidents/999", None, "no incident 999"),
            ("GET", "/api/incidents/999/timeline", None, "no incident 999"),
            ("POST", "/api/incidents/999/ack", None, "no incident 999"),
            ("POST", "/api/incidents/999/note", {"text": "x"}, "no incident 999"),
            ("GET", "/api/findings/424242", None, "no finding '424242'"),
            ("GET", "/api/backups/nope", None, "no backup 'nope'"),
            ("GET", "/api/recovery/plans/nope", None, "no recovery plan 'nope'"),
            ("GET", "/api/no-such-route", None, "no route GET /api/no-such-route")):
        assert says in _error(web.call(method, path, "responder", json=json_body), 404)["error"], path
    assert "no token" in _error(web.call("POST", "/api/tokens/nope/revoke", "admin"), 404)["error"]


def test_malformed_bodies_are_422_naming_the_field(web):
    inc = web.incidents.open("Lost messages", ["messages"])
    path = f"/api/incidents/{inc['id']}"
    body = _error(web.call("POST", f"{path}/assign", "responder", json={"role": "CTO"}), 422)
    assert "person: Field required" in body["error"] and body["details"][0]["loc"] == ["body", "person"]
    assert "persn: Extra inputs are not permitted" in _error(
        web.call("POST", f"{path}/assign", "responder", json={"role": "CTO", "person": "x", "persn": "y"}), 422)["error"]
    assert "the body is not valid JSON" in _error(web.call("POST", f"{path}/note", "responder", content=b"{not json",
                                                headers={"Content-Type": "application/json"}), 422)["error"]
    assert "incident_id" in _error(web.call("GET", "/api/incidents/abc", "viewer"), 422)["error"]
    assert "status" in _error(web.call("GET", "/api/incidents?status=sleeping", "viewer"), 422)["error"]
    # a well-formed body the domain refuses: 400 with the domain's hint; a refused transition: 409
    bad_role = _error(web.call("POST", f"{path}/assign", "responder", json={"role": "Janitor", "person": "x"}), 400)
    assert bad_role["error"] == "unknown role 'Janitor'" and "Incident Commander" in bad_role["hint"]
    assert "before it is acknowledged" in _error(web.call("POST", f"{path}/resolve", "responder", json={}), 409)["error"]
    rows = web.incidents.get(inc["id"])["timeline_rows"]
    web.call("POST", f"{path}/ack", "responder")
    assert "already acknowledged" in _error(web.call("POST", f"{path}/ack", "responder"), 409)["error"]
    assert web.incidents.get(inc["id"])["timeline_rows"] == rows + 1  # the acknowledgement only


def test_viewers_see_emails_masked_and_responders_see_them(web):
    inc = web.incidents.open("Bounce from jane.doe@example.com", ["users"],
                             description="reported by support (ops@fluxa.example) for jane.doe@example.com")
    web.incidents.assign(inc["id"], "Incident Commander", "sam.lee@fluxa.example", actor="pager")
    seen = web.call("GET", f"/api/incidents/{inc['id']}", "viewer").json()
    text = repr(seen)
    assert "jane.doe@example.com" not in text and "sam.lee@" not in text and "ops@" not in text
    assert seen["title"] == "Bounce from j***@example.com"
    assert seen["roles"] == {"Incident Commander": "s***@fluxa.example"}
    assert any(e["data"].get("person") == "s***@fluxa.example" for e in seen["timeline"])
    assert web.call("GET", "/api/incidents", "viewer").json()[0]["description"] == \
        "reported by support (o***@fluxa.example) for j***@example.com"
    full = web.call("GET", f"/api/incidents/{inc['id']}", "responder").json()
    assert full["roles"] == {"Incident Commander": "sam.lee@fluxa.example"} and full["title"].endswith("jane.doe@example.com")


def test_masking_keeps_secrets_from_everyone():
    from fluxa_integrity.web.masking import mask

    data = {"uri": "mongodb://app:s3cret@db.example:27017/fluxa", "api_key": "abc", "routing_key": "R",
            "note": "see mongodb://u:p@h/x and a@b.co", "n": 3, "password": None}
    assert mask(data, emails=False) == {"uri": "mongodb://app:***@db.example:27017/fluxa", "api_key": "***",
                                        "routing_key": "***", "note": "see mongodb://u:***@h/x and a@b.co", "n": 3,
                                        "password": None}
    assert mask(data, emails=True)["note"] == "see mongodb://u:***@h/x and a***@b.co"


def _timeline(api, incident_id: int) -> list[tuple]:
    """The entries as the comparison needs them: kind, actor, data (a publication's id aside)."""
    return [(e["kind"], e["actor"], {k: v for k, v in e["data"].items() if k != "publication"})
            for e in api.timeline(incident_id)]


def test_an_incident_action_through_the_api_records_what_the_cli_records(web):
    """Pairwise on the timeline: the same actions, by the CLI with --by alice on one incident and
    through the API with alice's token on its twin, give the same entries in the same order."""
    from typer.testing import CliRunner

    from fluxa_integrity.cli.main import cli

    by_cli = web.incidents.open("Twin", ["conversations"], actor="pager")
    by_api = web.incidents.open("Twin", ["conversations"], actor="pager")
    when = "2026-01-01T00:00:00Z"
    steps = [  # (CLI args after the incident id, API path after the incident, API body)
        (["ack"], "ack", None),
        (["assign", "--role", "Incident Commander", "--person", "Sam"], "assign",
         {"role": "Incident Commander", "person": "Sam"}),
        (["note", "looking at conversations"], "note", {"text": "looking at conversations"}),
        (["phase", "notify_on_call", "--done", "--note", "paged"], "checklist/notify_on_call",
         {"done": True, "note": "paged"}),
        (["phase", "read_only_mode", "--owner", "CTO"], "checklist/read_only_mode", {"owner": "CTO"}),
        (["comms", "initial", "--publish", "--set", "SPECIFIC_ISSUES=missing chats", "--set", f"CURRENT_TIME={when}"],
         "comms/initial", {"publish": True, "values": {"SPECIFIC_ISSUES": "missing chats", "CURRENT_TIME": when}}),
        (["escalate", "--reason", "wider than thought", "--notify", "CTO"], "escalate",
         {"reason": "wider than thought", "notify": "CTO"}),
        (["status", "investigating", "--note", "cause unknown"], "status", {"to": "investigating", "note": "cause unknown"}),
        (["resolve", "--resolution", "restored from backup"], "resolve", {"resolution": "restored from backup"}),
        (["postmortem", "--root-cause", "a bad deploy", "--lesson", "canary"], "review",
         {"root_cause": "a bad deploy", "lessons": ["canary"]}),
        (["close"], "close", {}),
    ]
    runner = CliRunner()
    for args, path, body in steps:
        res = runner.invoke(cli, ["incident", args[0], str(by_cli["id"]), *args[1:], "--by", "alice", "--json"])
        assert res.exit_code == 0, (args, res.output)
        resp = web.call("POST", f"/api/incidents/{by_api['id']}/{path}", "responder", json=body)
        assert resp.status_code == 200, (path, resp.text)
    cli_tl, api_tl = _timeline(web.incidents, by_cli["id"]), _timeline(web.incidents, by_api["id"])
    opened = by_cli["timeline_rows"]  # opening's own rows (opened, escalation to the policy's first roles)
    assert len(cli_tl) >= opened + len(steps) and {e[1] for e in cli_tl[opened:]} == {"alice"}
    assert api_tl == cli_tl
    assert web.incidents.get(by_api["id"])["status"] == "closed"
    assert [r["ok"] for r in web.incidents.verify_timeline(by_api["id"])] == [True]


def test_reading_routes_answer_from_the_store(web, store):
    from fluxa_integrity.service import history

    inc = web.incidents.open("Read me", ["users"])
    rid = history.claim(store, job="check-integrity", db="fluxa", scheduled_for=tokens.now(), attempt=1,
                        trigger="manual", holder="test")
    history.finish(store, rid, "ok", "nothing found")
    got = {p: web.call("GET", p, "viewer") for p in ("/api/incidents", f"/api/incidents/{inc['id']}/checklist",
                                                     f"/api/incidents/{inc['id']}/clocks", "/api/findings?status=all",
                                                     "/api/check-runs", "/api/backups", "/api/recovery/plans",
                                                     "/api/jobs", "/api/jobs/runs")}
    assert {p: r.status_code for p, r in got.items()} == {p: 200 for p in got}
    assert [i["id"] for i in got["/api/incidents"].json()] == [inc["id"]]
    assert [(r["id"], r["outcome"], r["summary"]) for r in got["/api/jobs/runs"].json()] == [(rid, "ok", "nothing found")]
    assert got["/api/findings?status=all"].json() == [] and got["/api/backups"].json() == []
    assert [p["name"] for p in got[f"/api/incidents/{inc['id']}/checklist"].json()][:1] == ["Immediate Response"]


def test_the_web_command_serves_the_api_until_sigterm(fluxa_home, store):
    """`fluxa-integrity web` for real: readiness line, the schema, a token checked against the
    store it opened, a clean stop on SIGTERM; a taken port is a clear error."""
    import os
    import re
    import subprocess
    import sys

    import httpx

    from waiting import StderrWatch

    _, viewer = tokens.create(store, "viewer", "vera")
    env = {**os.environ, "FLUXA_HOME": str(fluxa_home)}
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "web", "--port", "0", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        url = watch.wait_for(r"serving the API on (http://127\.0\.0\.1:\d+) ").group(1)
        schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
        assert schema["info"]["title"] == "Fluxa Integrity API"
        assert {"/api/incidents", "/api/incidents/{incident_id}/ack", "/api/tokens"} <= set(schema["paths"])
        assert httpx.get(f"{url}/api/incidents", timeout=30).status_code == 401
        assert httpx.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {viewer}"}, timeout=30).json()["name"] == "vera"
        port = int(url.rsplit(":", 1)[1])
        taken = subprocess.run([sys.executable, "-m", "fluxa_integrity", "web", "--port", str(port), "--json"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert taken.returncode == 2 and re.match(rf"cannot listen on 127\.0\.0\.1:{port}: ", __import__("json").loads(
            taken.stdout)["error"]), taken.stdout + taken.stderr
    finally:
        proc.terminate()  # SIGTERM to the process this test started
    code, err = watch.finish()
    assert code == 0 and "web: stopped" in err, err
    assert __import__("json").loads(proc.stdout.read())["port"] == port


# -- every incident command has its route: pairwise on two state stores --------------------------

def _seed(store, database: str, opened_at) -> None:
    """The same starting state in a store: a complete check run on ``database`` with two open
    findings (for intake) and an incident opened at ``opened_at`` (its clocks are due: for tick)."""
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.store.models import CheckRun, Finding

    with store.session() as s:
        run = CheckRun(database=database, started_at=opened_at, finished_at=opened_at, status="complete",
                       rules=["users.email_unique", "messages.orphans"], collections=["users", "messages"], stats={})
        s.add(run)
        s.flush()
        for i, (rule, coll, dc) in enumerate((("users.email_unique", "users", "user_accounts"),
                                              ("messages.orphans", "messages", None))):
            s.add(Finding(database=database, fingerprint=f"{i:064x}", rule_id=rule, variant="", collection=coll,
                          category="uniqueness", data_class=dc, criticality=None, status="open",
                          message=f"{rule} broken", count=3 + i, affected_users=2, samples=[],
                          opened_at=opened_at, first_run_id=run.id, last_run_id=run.id))
    Incidents(store, load_policy(None)).open("Clocks running", ["conversations"], at=opened_at, actor="pager")


def _comparable(api) -> list[tuple]:
    """Every incident's timeline: kind, actor and details, with times and publication ids left out."""
    import re

    iso_time = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items() if k not in ("publication", "updated_at", "at")}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return "<time>" if isinstance(v, str) and iso_time.match(v) else v

    return [(i["id"], i["status"], [(e["kind"], e["actor"], plain(e["data"])) for e in api.timeline(i["id"])])
            for i in sorted(api.list(), key=lambda i: i["id"])]


def test_every_incident_command_has_a_route_that_records_the_same(tmp_path, monkeypatch, mongo_uri, db):
    """The commands that change incidents and are not in the test above (report, event, merge,
    intake, contain, lift, a checklist item's --run, postmortem, tick, notify-retry): run by the
    CLI on one state store and through the API on another seeded the same, then every timeline
    compared (kind, actor, details; times aside) and the notification queues. Two stores, because
    intake, tick and notify-retry act on every incident."""
    import json
    from datetime import datetime, timezone

    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from fluxa_integrity.cli.main import cli
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.web.app import create_app

    app_db, t0 = db.name, datetime.now(timezone.utc) - timedelta(minutes=150)
    homes = {face: tmp_path / face for face in ("cli", "api")}
    stores = {}
    for face, home in homes.items():  # a webhook nobody listens on: deliveries fail and queue for retry
        home.mkdir()
        (home / "config.yaml").write_text(json.dumps({
            "notifications": [{"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/nobody"}],
            "notify_retry": {"attempts": 1, "backoff_seconds": 0}}))
        monkeypatch.setenv("FLUXA_HOME", str(home))
        stores[face] = open_store()
        _seed(stores[face], app_db, t0)
    monkeypatch.setenv("FLUXA_MONGODB_URI", mongo_uri)
    stay, dup, ev = 2, 4, 3  # ids: 1 is the seeded one; then the report, the event, the duplicate
    steps = [  # (CLI args, API method path, API body)
        (["report", "support", "--title", "Users cannot log in", "--collections", "users", "--by", "alice"],
         "", {"source": "report", "kind": "support", "title": "Users cannot log in", "collections": ["users"]}),
        (["event", "failed_migration", "--title", "Migration 42 failed", "--collections", "messages"],
         "", {"source": "event", "kind": "failed_migration", "title": "Migration 42 failed",
              "collections": ["messages"]}),
        (["open", "--title", "Login broken", "--collections", "users", "--by", "alice"],
         "", {"title": "Login broken", "collections": ["users"]}),
        (["merge", str(stay), str(dup), "--reason", "same outage", "--by", "alice"],
         f"/{stay}/merge", {"duplicates": [dup], "reason": "same outage"}),
        (["intake", "--db", app_db], "/intake", {"db": app_db}),
        (["contain", str(ev), "--read-only", "--collections", "messages", "--pause", "exports", "--db", app_db,
          "--by", "alice"], f"/{ev}/contain",
         {"read_only": True, "collections": ["messages"], "pause": ["exports"], "db": app_db}),
        (["lift", str(ev), "--feature", "exports", "--db", app_db, "--by", "alice"], f"/{ev}/lift",
         {"features": ["exports"], "db": app_db}),
        (["lift", str(ev), "--db", app_db, "--by", "alice"], f"/{ev}/lift", {"db": app_db}),
        (["phase", str(ev), "read_only_mode", "--run", "--param", f"db={app_db}", "--by", "alice"],
         f"/{ev}/checklist/read_only_mode", {"run": True, "params": {"db": app_db}}),
        (["postmortem", str(stay), "--root-cause", "an expired certificate", "--lesson", "watch expiries", "--by",
          "alice"], f"/{stay}/postmortem", {"root_cause": "an expired certificate", "lessons": ["watch expiries"]}),
        (["tick"], "/tick", None),
        (["notify-retry"], "/notify-retry", {}),
    ]
    results = {"cli": [], "api": []}
    monkeypatch.setenv("FLUXA_HOME", str(homes["cli"]))
    runner = CliRunner()
    for args, _, _ in steps:
        res = runner.invoke(cli, ["incident", *args, "--json"])
        assert res.exit_code == (1 if args[0] == "notify-retry" else 0), (args, res.output, res.exception)
        results["cli"].append(json.loads(res.stdout))
    monkeypatch.setenv("FLUXA_HOME", str(homes["api"]))
    app = create_app(Incidents.from_environment())
    _, alice = tokens.create(stores["api"], "responder", "alice")
    http = TestClient(app)
    for args, path, body in steps:
        resp = http.post(f"/api/incidents{path}", json=body, headers={"Authorization": f"Bearer {alice}"})
        assert resp.status_code in (200, 201), (path, resp.text)
        results["api"].append(resp.json())
    apis = {face: Incidents(stores[face], app.state.incidents.policy) for face in stores}
    cli_view, api_view = _comparable(apis["cli"]), _comparable(apis["api"])
    assert api_view == cli_view
    # what each step changed is there, on both (not two equally empty timelines)
    kinds = {k for _, _, tl in cli_view for k, _, _ in tl}
    assert {"opened", "merged", "findings_linked", "contained", "lifted", "action", "review",
            "clock_breached"} <= kinds, kinds
    by_id = {i: tl for i, _, tl in cli_view}
    assert [s for i, s, _ in cli_view if i == dup] == ["closed"]
    assert [d["root_cause"] for k, _, d in by_id[stay] if k == "review"] == ["an expired certificate"]
    intake = results["cli"][4]  # both findings join live incidents: users the report, messages the event
    assert intake["attached"] == {str(stay): [1], str(ev): [2]} and results["api"][4] == intake
    assert results["api"][-1]["failed"] == results["cli"][-1]["failed"] > 0  # the retry, failing the same
    assert all("an expired certificate" in results[face][9]["markdown"] for face in results)
    queued = {face: [(n["kind"], n["status"], n["attempts"]) for i in apis[face].list()
                     for n in apis[face].notifications(i["id"])] for face in apis}
    assert queued["api"] == queued["cli"] and queued["cli"]
    for s in stores.values():
        s.dispose()
