"""The command line as a user meets it: help, version, JSON purity, clear errors, exit codes."""

from __future__ import annotations

import json

from fluxa_integrity import __version__
from fluxa_integrity.mongo.devserver import free_port


def test_version_and_help(cli):
    res = cli("--version")
    assert res.code == 0 and res.stdout.strip() == f"fluxa-integrity {__version__}"
    res = cli("--help")
    assert res.code == 0 and "devdb" in res.stdout and "fluxa" in res.stdout
    res = cli("fluxa", "inject", "--help")
    assert res.code == 0 and "orphan-messages" in res.stdout and "sync-drift" in res.stdout


def test_generate_inject_summary_json_round_trip(cli, db, mongo_uri):
    target = ("--uri", mongo_uri, "--db", db.name)
    res = cli("fluxa", "generate", "--users", "60", "--seed", "5", *target, "--json")
    assert res.code == 0, res.stderr
    gen = json.loads(res.stdout)  # stdout is exactly one JSON document
    assert gen["counts"]["users"] == 60 and gen["documents"] == sum(gen["counts"].values())
    res = cli("fluxa", "inject", "broken-counter", "--count", "3", *target, "--json")
    assert res.code == 0, res.stderr
    injected = res.json()["injections"]
    assert injected[0]["kind"] == "broken-counter" and len(injected[0]["ids"]) == 3
    res = cli("fluxa", "summary", *target, "--json")
    summary = res.json()
    assert summary["faults"] == {"broken-counter": 3}
    assert summary["counts"]["conversations"] == gen["counts"]["conversations"]


def test_uri_from_environment(cli, db, mongo_uri):
    res = cli("fluxa", "generate", "--users", "10", "--json", env={"FLUXA_MONGODB_URI": mongo_uri, "FLUXA_DB": db.name})
    assert res.code == 0, res.stderr
    assert db.users.count_documents({}) == 10


def test_unreachable_server_is_exit_2_with_a_hint(cli):
    res = cli("fluxa", "summary", "--uri", f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500")
    assert res.code == 2
    assert "cannot reach MongoDB" in res.stderr and "hint:" in res.stderr
    assert "Traceback" not in res.stderr
    res = cli("fluxa", "summary", "--uri", f"mongodb://127.0.0.1:{free_port()}/", "--json")
    assert res.code == 2 and "cannot reach MongoDB" in res.json()["error"]


def test_no_server_configured_says_how_to_start_one(cli):
    res = cli("fluxa", "summary")
    assert res.code == 2 and "devdb start" in res.stderr


def test_invalid_uri_and_bad_config(cli, fluxa_home):
    res = cli("fluxa", "summary", "--uri", "http://nope")
    assert res.code == 2 and "invalid MongoDB URI" in res.stderr
    fluxa_home.mkdir(parents=True, exist_ok=True)
    (fluxa_home / "config.yaml").write_text("mongodb_uri: [unclosed\n")
    res = cli("fluxa", "summary")
    assert res.code == 2 and "config.yaml" in res.stderr and "not valid YAML" in res.stderr


def test_unknown_fault_kind_and_bad_count(cli, db, mongo_uri):
    res = cli("fluxa", "inject", "nonsense", "--uri", mongo_uri, "--db", db.name)
    assert res.code == 2 and "unknown fault kind" in res.stderr
    res = cli("fluxa", "inject", "null-parent", "--count", "0", "--uri", mongo_uri, "--db", db.name)
    assert res.code == 2 and "--count" in res.stderr


def test_devdb_status_when_stopped(cli):
    res = cli("devdb", "status", "--json")
    assert res.code == 1 and res.json()["running"] is False


def test_usage_errors_with_json_are_one_json_document_on_stdout(cli):
    res = cli("check", "run", "--bogus", "--json")
    assert res.code == 2 and res.json() == {"error": "No such option: --bogus",
                                            "hint": "see `fluxa-integrity check run --help`"}
    assert "No such option" in res.stderr and "Traceback" not in res.stderr
    res = cli("backup", "list", "--json", "--kind")  # an option missing its value
    assert res.code == 2 and "--kind" in res.json()["error"]
    res = cli("check", "run", "--workers", "zero", "--json")
    assert res.code == 2 and "--workers" in res.json()["error"]
    res = cli("check", "show", "999", "--json")  # a command's own error keeps its shape
    assert res.code == 2 and res.json()["error"] == "no finding '999'"
    res = cli("check", "run", "--bogus")  # without --json nothing lands on stdout
    assert res.code == 2 and res.stdout == "" and "No such option" in res.stderr
    res = cli("devdb", "status", "--json", "--help")
    assert res.code == 0 and "Usage" in res.stdout
