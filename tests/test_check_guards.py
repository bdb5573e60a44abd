"""`check run` refuses a run that would evaluate no rule (issue 9, item 1): a mistyped --db or
a policy none of whose collections exist is exit 2 naming the expected collections, and no run
is recorded; a database lacking only some collections still runs, warns and records them."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import create_engine, text

UTC = timezone.utc
POLICY_COLLECTIONS = ("users", "conversations", "messages", "logs", "auditLog", "analytics")


def _runs(fluxa_home) -> list[tuple]:
    path = fluxa_home / "state.db"
    if not path.exists():
        return []
    with create_engine(f"sqlite:///{path}").connect() as c:
        return [tuple(r) for r in c.execute(text("select id, status, stats from check_runs order by id"))]


def test_a_database_without_the_policys_collections_is_an_error(cli, mongo_uri, fluxa_home, client):
    name = "nosuchdb_fluxa_guard"
    assert name not in client.list_database_names()
    res = cli("check", "run", "--uri", mongo_uri, "--db", name)
    assert res.code == 2, (res.code, res.stderr)
    assert "no findings" not in res.stderr and "Traceback" not in res.stderr
    assert f"database {name!r} has none of the collections" in res.stderr
    assert all(c in res.stderr for c in POLICY_COLLECTIONS) and "--db" in res.stderr  # names them, says what to do
    res = cli("check", "run", "--uri", mongo_uri, "--db", name, "--json")
    assert res.code == 2 and "none of the collections" in res.json()["error"] and res.json()["hint"]
    assert _runs(fluxa_home) == []  # no "complete run of 0 documents" in the history


def test_a_selection_with_no_rule_is_an_error(cli, mongo_uri, db, fluxa_home):
    db.users.insert_one({"_id": 1, "email": "a@b.co", "createdAt": datetime.now(UTC)})
    # users.count_drop is not a per-document rule: an incremental run of it would check nothing
    res = cli("check", "run", "--uri", mongo_uri, "--db", db.name, "--rules", "users.count_drop", "--incremental")
    assert res.code == 2 and "selects no enabled rule" in res.stderr and "--incremental" in res.stderr
    assert _runs(fluxa_home) == []


def test_some_collections_missing_runs_warns_and_records_them(cli, mongo_uri, db, fluxa_home):
    import json

    now = datetime.now(UTC)
    db.users.insert_one({"_id": 1, "email": "a@b.co", "name": "A", "createdAt": now, "lastUpdated": now,
                         "preferences": {"theme": "dark"}})
    res = cli("check", "run", "--uri", mongo_uri, "--db", db.name, "--json")
    assert res.code in (0, 1), res.stderr
    doc = res.json()
    assert any("'messages' does not exist" in w for w in doc["warnings"])
    assert sorted(doc["missing_collections"]) == sorted(c for c in POLICY_COLLECTIONS if c != "users")
    (run,) = _runs(fluxa_home)
    stats = json.loads(run[2]) if isinstance(run[2], str) else run[2]
    assert run[1] == "complete" and sorted(stats["missing_collections"]) == sorted(
        c for c in POLICY_COLLECTIONS if c != "users")
