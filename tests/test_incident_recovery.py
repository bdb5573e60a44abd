"""Recovery actions on an incident (issue 9, item 22): the contract the restore commands call
(``require_open`` before any write, ``record_recovery_action`` after), the postmortem's
"Recovery actions" table with counts, and checklist actions that run the real thing or say
they are manual."""

from __future__ import annotations

import re

import pytest

from fluxa_integrity.errors import FluxaError
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store


@pytest.fixture()
def api(tmp_path):
    return Incidents(open_store(f"sqlite:///{tmp_path / 's.db'}"), default_policy())


def test_require_open_refuses_unknown_resolved_and_closed(api):
    with pytest.raises(FluxaError, match="no incident 999") as e:
        api.require_open(999)
    assert "incident list" in e.value.hint
    iid = api.open("Lost messages", collections=["messages"])["id"]
    assert api.require_open(iid)["id"] == iid
    api.acknowledge(iid)
    api.resolve(iid, "restored")
    with pytest.raises(FluxaError, match=f"incident {iid} is resolved") as e:
        api.require_open(iid)
    assert "investigating" in e.value.hint  # how to reopen
    api.review(iid, root_cause="a purge job")
    api.close(iid)
    with pytest.raises(FluxaError, match=f"incident {iid} is closed"):
        api.require_open(iid)
    with pytest.raises(FluxaError, match="closed"):
        api.record_recovery_action(iid, "restore", "r1", "late", {})


def test_recovery_actions_go_on_the_timeline_and_into_the_postmortem_with_counts(api):
    iid = api.open("Lost messages", collections=["messages"])["id"]
    api.acknowledge(iid, by="alice")
    api.record_recovery_action(iid, "restore", "20260101T000000-ab12", "messages of conversation 7 from backup",
                               {"messages": {"inserted": 3, "replaced": 2, "deleted": 0}}, actor="bob")
    api.record_recovery_action(iid, "promote", "p-4", "scratch -> app", {"messages": {"replaced": 5}},
                               status="partial")
    api.record_recovery_action(iid, "undo", "p-4", "undo of promotion p-4", {"messages": {"restored": 5}},
                               status="failed")
    rows = [e for e in api.timeline(iid) if e["kind"] == "recovery_action"]
    assert [(r["data"]["action"], r["data"]["status"]) for r in rows] == [
        ("restore", "applied"), ("promote", "partial"), ("undo", "failed")]
    assert rows[0]["data"]["counts"] == {"messages": {"inserted": 3, "replaced": 2, "deleted": 0}}
    assert rows[0]["actor"] == "bob"
    assert api.get(iid)["restores"] == ["20260101T000000-ab12"]
    assert api.verify_timeline(iid)[0]["ok"]
    md = api.postmortem(iid)["markdown"]
    section = md.split("## Recovery actions")[1].split("## Communications")[0]
    assert "| restore - messages of conversation 7 from backup | 20260101T000000-ab12 | " \
           "messages: 3 inserted, 2 replaced, 0 deleted | applied | bob |" in section
    assert "| partial |" in section and "| failed |" in section
    with pytest.raises(FluxaError, match="unknown recovery action"):
        api.record_recovery_action(iid, "teleport", "x", "", {})
    with pytest.raises(FluxaError, match="unknown recovery status"):
        api.record_recovery_action(iid, "restore", "x", "", {}, status="done")


# -- checklist actions run the real thing, or are manual ------------------------------------------

def test_verify_backups_and_run_checks_run_for_real_and_monitoring_is_manual(mongo_uri, db, tmp_path):
    from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
    from fluxa_integrity.fluxa.faults import inject
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.fluxa.manifest import Manifest

    generate(db, GenerateOptions(users=30, seed=11))
    inject(db, Manifest(tmp_path / "m.json", db.name), "duplicate-emails", 2)  # ground truth for the checks
    api = Incidents(open_store(f"sqlite:///{tmp_path / 's.db'}"), default_policy())
    snap = run_backup(mongo_uri, db.name, api.store, BackupOptions(oplog_probe="clock"))
    iid = api.open("Duplicate accounts", collections=["users"], database=db.name)["id"]
    api.acknowledge(iid)

    r = api.complete_item(iid, "verify_backup_integrity", run=True, params={"uri": mongo_uri})
    assert r["action_result"]["status"] == "done", r["action_result"]
    assert r["action_result"]["verdicts"] == {snap.id: "pass"}
    r = api.complete_item(iid, "identify_affected_records", run=True, params={"uri": mongo_uri})
    res = r["action_result"]
    assert res["status"] == "done" and "users.email.unique" in res["rules"] and res["finding_ids"]
    api.attach_findings(iid, res["finding_ids"])
    assert set(res["finding_ids"]) <= set(api.get(iid)["findings"])
    done = {i["id"]: i["done_at"] for p in api.checklist(iid) for i in p["items"]}
    assert done["verify_backup_integrity"] and done["identify_affected_records"]

    items = {i["id"]: i for p in api.checklist(iid) for i in p["items"]}
    assert items["monitor_residual_issues"]["manual"] and not items["verify_backup_integrity"]["manual"]
    with pytest.raises(FluxaError, match="monitor_residual_issues is manual") as e:
        api.complete_item(iid, "monitor_residual_issues", run=True)
    assert "--done" in e.value.hint
    # nothing answers "hook not installed" any more
    assert not any("not installed" in str(ev["data"]) for ev in api.timeline(iid))


def test_only_the_action_plugins_import_backup_restore_and_checks_code():
    # review 1, item 8: what actions.py's docstring says about the import boundary is true
    import ast
    from pathlib import Path

    import fluxa_integrity.incidents as pkg

    reaching = set()
    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and \
                    (node.module or "").split(".")[0] in ("backup", "restore", "checks"):
                reaching.add(path.stem)
    assert reaching == {"evidence", "tool_actions"}


def test_run_checks_suggests_attaching_only_findings_free_to_attach(mongo_uri, db, tmp_path):
    # review 1, item 9: a finding already on another live incident would be refused by attach
    from fluxa_integrity.checks.history import list_findings, record_run
    from fluxa_integrity.checks.runner import run_checks
    from fluxa_integrity.fluxa.faults import inject
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.fluxa.manifest import Manifest

    generate(db, GenerateOptions(users=30, seed=12))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "duplicate-emails", 2, seed=12)
    inject(db, manifest, "orphan-messages", 2, seed=12)
    api = Incidents(open_store(f"sqlite:///{tmp_path / 's.db'}"), default_policy())
    record_run(api.store, run_checks(mongo_uri, db.name, api.policy))
    found = list_findings(api.store, db.name)
    accounts = [f.id for f in found if f.rule_id == "users.email.unique"]
    orphans = [f.id for f in found if f.rule_id == "messages.conversationId.ref"]
    assert accounts and orphans
    other = api.open("Duplicate accounts", finding_ids=accounts)["id"]
    iid = api.open("Lost chats", collections=["messages"], database=db.name)["id"]
    api.acknowledge(iid)
    res = api.complete_item(iid, "identify_affected_records", run=True, params={"uri": mongo_uri})["action_result"]
    assert res["status"] == "done" and set(res["finding_ids"]) == set(accounts + orphans)
    suggested = re.search(r"`fluxa-integrity incident attach (\d+) ((?:--finding \d+ ?)+)`", res["message"])
    assert suggested and int(suggested.group(1)) == iid
    assert [int(x) for x in re.findall(r"--finding (\d+)", suggested.group(2))] == orphans
    assert f"{accounts[0]} (incident {other})" in res["message"]
    assert res["to_attach"] == orphans
    assert {int(k): v for k, v in res["on_other_incidents"].items()} == {a: other for a in accounts}
    api.attach_findings(iid, res["to_attach"])  # every suggested finding is taken
    assert api.get(iid)["findings"] == orphans
