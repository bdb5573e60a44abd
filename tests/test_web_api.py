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
    made = cli("token", "create", "--role", "responder", "--name", "bob", "--expires", "30d", "--json")
    assert made.code == 0, made.stderr
    t = made.json()
    assert tokens.authenticate(store, t["token"]).name == "bob"
    assert timedelta(days=29, hours=23) < (tokens.utc(__import__("datetime").datetime.fromisoformat(t["expires_at"]))
                                           - tokens.now()) <= timedelta(days=30)
    plain = cli("token", "create", "--role", "viewer")
    assert plain.code == 0 and plain.stdout.strip().startswith("fxt_")  # the token alone on stdout
    listed = cli("token", "list", "--json").json()
    assert {r["name"] for r in listed} == {"bob", f"viewer-{plain.stdout.strip().split('_')[1]}"}
    assert all("token" not in r and "secret_sha256" not in r for r in listed)
    assert cli("token", "revoke", t["id"], "--json").json()["state"] == "revoked"
    again = cli("token", "revoke", t["id"], "--json")
    assert again.code == 2 and "already revoked" in again.json()["error"]
    bad = cli("token", "create", "--role", "root", "--json")
    assert bad.code == 2 and bad.json()["hint"] == "one of: viewer, responder, admin"
    with store.session() as s:
        assert len(s.scalars(select(ApiToken)).all()) == 2
