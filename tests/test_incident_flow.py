"""The incident flow as a responder lives it (issue 9, items 9, 10, 18-22): every id must exist,
failed notifications are said on the console, duplicates are attached, merged and closed in one
command, findings are never dropped, severity is as fine as the policy's classes, clocks are
shown, and time travel stays in drills."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import yaml

from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.mongo.devserver import free_port
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store

from test_incidents import http  # noqa: F401 (a fixture: a real local HTTP receiver)

H, M = timedelta(hours=1), timedelta(minutes=1)


@pytest.fixture()
def api(tmp_path):
    return Incidents(open_store(f"sqlite:///{tmp_path / 's.db'}"), default_policy())


def opened(cli, *args) -> str:
    r = cli("incident", "open", *args, "--json")
    assert r.code == 0, r.stderr
    return str(r.json()["id"])


# -- item 9: every id a command is given must exist ----------------------------------------------

def test_unknown_ids_are_refused_with_exit_2(cli):
    r = cli("incident", "notify-retry", "999", "--json")
    assert r.code == 2 and "no incident 999" in r.json()["error"]
    iid = opened(cli, "--title", "Lost chats", "--collections", "messages")
    r = cli("incident", "link", iid, "--restore", "nope", "--json")
    assert r.code == 2 and "no restore or promotion 'nope'" in r.json()["error"]
    r = cli("incident", "link", iid, "--backup", "20990101T000000Z-ffffff", "--json")
    assert r.code == 2 and "no backup '20990101T000000Z-ffffff'" in r.json()["error"]
    r = cli("incident", "open", "--title", "x", "--finding", "4242", "--json")
    assert r.code == 2 and "no finding 4242" in r.json()["error"]
    r = cli("incident", "show", iid, "--json")
    assert r.json()["backups"] == [] and r.json()["restores"] == []  # nothing half-written
    assert "linked" not in [e["kind"] for e in r.json()["timeline"]]


def test_link_resolves_real_backups_restores_and_promotions(api):
    from datetime import datetime, timezone

    from fluxa_integrity.errors import FluxaError
    from fluxa_integrity.store.backup_models import Backup, Promotion, RestoreRun

    t = datetime.now(timezone.utc)
    with api.store.session() as s:
        for bid in ("20261126T101500Z-aaaaaa", "20261126T101500Z-bbbbbb"):
            s.add(Backup(id=bid, kind="full", db="app", repo="/r", status="complete", collections=[], started_at=t))
        s.add(RestoreRun(id=7, backup_id="20261126T101500Z-aaaaaa", target_db="app_r", status="complete",
                         started_at=t))
        s.add(Promotion(id="p-20261126-1", from_db="app_r", live_db="app", collections=["users"],
                        authorized_by="incident:1", status="applied", undo_dir="/u", created_at=t))
    iid = api.open("Lost users", collections=["users"])["id"]
    with pytest.raises(FluxaError, match="matches several backups"):
        api.link(iid, backups=["20261126T1015"])
    inc = api.link(iid, backups=["20261126T101500Z-a"], restores=["7", "p-20261126-1"])
    assert inc["backups"] == ["20261126T101500Z-aaaaaa"] and inc["restores"] == ["7", "p-20261126-1"]
    with pytest.raises(FluxaError, match="no restore or promotion '8'"):
        api.link(iid, restores=["8"])


# -- item 10: failed notifications are said on the console ---------------------------------------

def test_failed_channels_are_named_with_host_port_and_error_while_the_command_succeeds(cli, fluxa_home, http):
    closed_port = free_port()  # nothing listens there: a real connection refusal
    http.down.add("/hook")  # a receiver that is up but answers 503
    cfg = {"notifications": [
        {"name": "hook", "type": "webhook", "url": f"{http.url}/hook"},
        {"name": "chat", "type": "slack", "webhook_url": f"http://127.0.0.1:{closed_port}/slack"},
        {"name": "mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": closed_port, "mode": "insecure",
         "from": "fluxa@example.com", "to": ["oncall@example.com"]},
        {"name": "fine", "type": "webhook", "url": f"{http.url}/ok"},
    ], "notify_retry": {"attempts": 1, "backoff_seconds": 0}}
    fluxa_home.mkdir(parents=True, exist_ok=True)
    (fluxa_home / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = cli("incident", "open", "--title", "Counters off", "--collections", "conversations", "--json")
    assert r.code == 0 and r.json()["status"] == "open"
    port = http.url.rsplit(":", 1)[1]
    err = " ".join(r.stderr.split())
    assert re.search(rf"notification failed: incident \d+ opened via hook \(webhook to 127\.0\.0\.1:{port}\): "
                     r"[^(]*error=503", err), err
    assert f"chat (slack to 127.0.0.1:{closed_port}): [Errno 111] Connection refused" in err
    assert f"mail (email to 127.0.0.1:{closed_port}): [Errno 111] Connection refused" in err
    assert "via fine" not in err and len(http.at("/ok")) >= 1  # the healthy channel got it, and is not reported
    r = cli("incident", "notify-retry", "--json")
    assert r.code == 1 and {f["channel"] for f in r.json()["failures"]} == {"hook", "chat", "mail"}
    assert "Connection refused" in r.stderr


# -- items 18, 19, 20: one ticket, one incident; findings never dropped; severity by field -------

def test_reports_join_intake_attach_merge_and_close_duplicates_with_field_level_severity(
        mongo_uri, db, tmp_path, cli):
    from fluxa_integrity.checks.history import list_findings, record_run
    from fluxa_integrity.checks.runner import run_checks
    from fluxa_integrity.fluxa.faults import inject
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.fluxa.manifest import Manifest

    policy = default_policy()
    generate(db, GenerateOptions(users=40, seed=7))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "corrupt-preferences", 4, seed=2)  # user_preferences: medium
    inject(db, manifest, "duplicate-emails", 2, seed=3)     # user_accounts: critical
    url = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"FLUXA_STATE_URL": url}
    api = Incidents(open_store(url), policy)
    record_run(api.store, run_checks(mongo_uri, db.name, policy))
    findings = list_findings(api.store, db.name)
    prefs = [f.id for f in findings if f.data_class == "user_preferences"]
    accounts = [f.id for f in findings if f.data_class == "user_accounts"]
    assert prefs and accounts, [(f.rule_id, f.data_class) for f in findings]

    # item 20: severity as fine as the policy's classes
    a = api.report("support", "Theme settings reset", collections=["users.preferences"])
    assert (a["severity"], a["data_classes"], a["collections"]) == ("P2", ["user_preferences"], ["users"])
    b = api.report("support", "Cannot log in", collections=["users"])
    assert (b["severity"], b["data_classes"]) == ("P1", ["user_accounts"])

    # item 18: attach by hand, then intake joins the reports (which named no database)
    r = cli("incident", "attach", str(a["id"]), "--finding", str(prefs[0]), "--json", env=env)
    assert r.code == 0 and r.json()["findings"] == [prefs[0]], r.stderr
    res = api.intake()
    assert res["opened"] == [], res
    assert sorted(res["attached"][a["id"]]) == prefs[1:] and sorted(res["attached"][b["id"]]) == accounts
    a = api.get(a["id"])
    assert a["findings"] == prefs and a["database"] == db.name
    # a preferences-only problem stays P2: the finding's class, not the class of all of users
    assert (a["severity"], a["data_classes"]) == ("P2", ["user_preferences"])
    r = cli("incident", "attach", str(b["id"]), "--finding", str(prefs[0]), "--json", env=env)
    assert r.code == 2, r.stdout + r.stderr
    assert f"already on incident {a['id']}" in r.json()["error"] and "merge" in r.json()["hint"]

    # the same ticket reported twice more: merge one, close the other in one command
    c = cli("incident", "report", "user", "--title", "my dark mode is gone", "--json", env=env).json()
    d = cli("incident", "report", "support", "--title", "ticket 4711 again", "--json", env=env).json()
    r = cli("incident", "merge", str(a["id"]), str(c["id"]), "--reason", "ticket 4711", "--json", env=env)
    assert r.code == 0, r.stderr
    r = cli("incident", "close", str(d["id"]), "--duplicate-of", str(a["id"]), "--json", env=env)
    assert r.code == 0 and (r.json()["status"], r.json()["duplicate_of"]) == ("closed", a["id"]), r.stderr
    assert api.get(c["id"])["status"] == "closed" and api.get(c["id"])["duplicate_of"] == a["id"]
    merged = [e["data"]["duplicate"] for e in api.timeline(a["id"]) if e["kind"] == "merged"]
    assert merged == [c["id"], d["id"]] and api.get(a["id"])["status"] == "open"
    r = cli("incident", "merge", str(c["id"]), str(b["id"]), "--json", env=env)
    assert r.code == 2 and "closed" in r.json()["error"]
    r = cli("incident", "merge", str(a["id"]), str(a["id"]), "--json", env=env)
    assert r.code == 2 and "duplicate of itself" in r.json()["error"]
    # merging b (critical) into a raises a's severity and moves b's findings
    api.merge(a["id"], [b["id"]])
    a = api.get(a["id"])
    assert a["severity"] == "P1" and set(accounts) <= set(a["findings"]) and "user_accounts" in a["data_classes"]
    assert all(v["ok"] for v in api.verify_timeline())

    # item 19: a finding given to `open --source report` is linked or refused, never dropped
    r = cli("incident", "open", "--source", "report", "--kind", "support", "--title", "prefs again",
            "--finding", str(prefs[0]), "--json", env=env)
    assert r.code == 2 and f"already on incident {a['id']}" in r.json()["error"]


def test_report_and_event_with_a_finding_keep_it(mongo_uri, db, tmp_path, cli):
    from fluxa_integrity.checks.history import list_findings, record_run
    from fluxa_integrity.checks.runner import run_checks
    from fluxa_integrity.fluxa.faults import inject
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.fluxa.manifest import Manifest

    policy = default_policy()
    generate(db, GenerateOptions(users=30, seed=8))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "orphan-messages", 2, seed=1)
    inject(db, manifest, "duplicate-emails", 2, seed=1)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    env = {"FLUXA_STATE_URL": url}
    api = Incidents(open_store(url), policy)
    record_run(api.store, run_checks(mongo_uri, db.name, policy))
    ids = [f.id for f in list_findings(api.store, db.name)]
    assert len(ids) >= 2
    r = cli("incident", "open", "--source", "report", "--kind", "support", "--title", "chats vanished",
            "--finding", str(ids[0]), "--json", env=env)
    assert r.code == 0 and r.json()["findings"] == [ids[0]] and r.json()["source"] == "report", r.stderr
    r = cli("incident", "event", "failed_migration", "--finding", str(ids[1]), "--json", env=env)
    assert r.code == 0 and r.json()["findings"] == [ids[1]], r.stderr


# -- item 21: clocks shown; time travel only in drills ------------------------------------------

def test_clocks_show_deadlines_time_left_and_the_next_escalation(api):
    from fluxa_integrity.incidents.timeutil import now

    t0 = now()
    iid = api.open("Orphans", collections=["messages"], at=t0 - 20 * M)["id"]  # opened 20 minutes ago
    view = api.clocks(iid, at=t0)
    ack, res = view["clocks"]
    assert (ack["clock"], ack["state"], ack["left"]) == ("acknowledge", "running", 40 * 60)
    assert (res["clock"], res["left"]) == ("resolve", 8 * 3600 - 20 * 60)
    nxt = view["next_escalation"]
    assert (nxt["clock"], nxt["roles"], nxt["in"]) == ("acknowledge", ["Engineering Manager"], 40 * 60)
    api.acknowledge(iid, at=t0 - 5 * M)
    view = api.clocks(iid, at=t0)
    assert view["clocks"][0]["state"] == "met" and view["clocks"][0]["left"] is None
    assert view["next_escalation"]["roles"] == ["CTO"] and view["next_escalation"]["clock"] == "resolve"
    assert view["phases"][0]["phase"] == "immediate_response" and view["phases"][0]["left"] == 40 * 60


def test_time_travel_is_refused_on_real_incidents_and_marked_in_drills(api, cli):
    from fluxa_integrity.errors import FluxaError
    from fluxa_integrity.incidents.timeutil import now

    t0 = now()
    real = api.open("Real one", collections=["users"], at=t0)["id"]
    rows = len(api.timeline(real))
    with pytest.raises(FluxaError, match="in the future") as e:
        api.tick(t0 + 8 * H)
    assert "--simulate" in e.value.hint
    with pytest.raises(FluxaError, match=f"into incident {real}'s record"):
        api.acknowledge(real, at=t0 + 2 * H)
    with pytest.raises(FluxaError, match="in the future"):
        api.open("later", collections=["users"], at=t0 + 3 * H)

    drill = api.open("Drill", collections=["users"], at=t0, drill=True)["id"]
    res = api.tick(t0 + 8 * H, simulate=True)
    assert res["simulated"] and res["skipped_real_incidents"] == [real]
    assert {e["incident"] for e in res["events"]} == {drill}
    assert len(api.timeline(real)) == rows  # the real incident's record is untouched
    late = [e for e in api.timeline(drill) if e["kind"] in ("clock_breached", "clock_warning")
            or (e["kind"] == "escalation" and e["data"]["trigger"] != "opened")]
    assert {e["kind"] for e in late} == {"clock_breached", "clock_warning", "escalation"}
    assert all(e["data"]["simulated"] is True for e in late)
    assert "simulated" not in api.timeline(drill)[0]["data"]  # opened at the real time
    assert api.get(drill)["drill"] is True and api.verify_timeline(drill)[0]["ok"]
    # the real one still ticks at the real time, and past times stay allowed (replaying a log)
    api.note(real, "replayed from the log", at=t0 - H)
    assert api.tick()["simulated"] is False


def test_show_and_clocks_cli_and_tick_refusal(cli):
    iid = opened(cli, "--title", "Lost chats [/x]", "--collections", "messages")
    r = cli("incident", "show", iid)
    assert r.code == 0, r.stderr  # brackets in a title are text, never Rich markup
    out = " ".join(r.stderr.split())
    assert "Lost chats [/x]" in out
    assert re.search(r"acknowledge by \S+Z: running, 0h5\dm(\d\ds)? left", out), out
    assert "next escalation: Engineering Manager" in out and "if the acknowledge target is missed" in out
    r = cli("incident", "clocks", iid, "--json")
    assert r.code == 0 and [c["clock"] for c in r.json()["clocks"]] == ["acknowledge", "resolve"]
    r = cli("incident", "tick", "--at", "+8h", "--json")
    assert r.code == 2 and "in the future" in r.json()["error"] and "--simulate" in r.json()["hint"]
    r = cli("incident", "ack", iid, "--at", "+2h", "--json")
    assert r.code == 2 and "in the future" in r.json()["error"]
    drill = opened(cli, "--title", "Game day", "--collections", "users", "--drill")
    r = cli("incident", "tick", "--at", "+8h", "--simulate", "--json")
    assert r.code == 0 and r.json()["skipped_real_incidents"] == [int(iid)]
    assert {e["incident"] for e in r.json()["events"]} == {int(drill)}


# -- review 1, item 1: drills and real incidents never share findings -----------------------------

def _accounts_run(mongo_uri, db, tmp_path, name: str) -> Incidents:
    """A state store whose last check run holds the user_accounts findings of injected duplicates."""
    from fluxa_integrity.checks.history import record_run
    from fluxa_integrity.checks.runner import run_checks

    api = Incidents(open_store(f"sqlite:///{tmp_path / name}"), default_policy())
    record_run(api.store, run_checks(mongo_uri, db.name, api.policy))
    return api


def test_a_drill_and_a_real_incident_never_take_each_others_findings(mongo_uri, db, tmp_path):
    from fluxa_integrity.checks.history import list_findings
    from fluxa_integrity.errors import FluxaError
    from fluxa_integrity.fluxa.faults import inject
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.fluxa.manifest import Manifest

    generate(db, GenerateOptions(users=30, seed=5))
    inject(db, Manifest(tmp_path / "m.json", db.name), "duplicate-emails", 2, seed=4)

    # a drill report with no database, opened first, must not take a real intake's findings
    api = _accounts_run(mongo_uri, db, tmp_path, "a.db")
    accounts = {f.id for f in list_findings(api.store, db.name) if f.data_class == "user_accounts"}
    assert accounts
    drill = api.report("support", "Game day: logins", collections=["users"], drill=True)
    real = api.report("support", "Cannot log in", collections=["users"])
    res = api.intake()
    assert drill["id"] not in res["attached"] and set(res["attached"][real["id"]]) >= accounts, res
    assert api.get(drill["id"])["findings"] == []

    # the reverse: a drill intake opens its own drill incident instead of joining a real report
    api = _accounts_run(mongo_uri, db, tmp_path, "b.db")
    real = api.report("support", "Cannot log in", collections=["users"])
    res = api.intake(drill=True)
    assert res["attached"] == {} and res["opened"], res
    assert all(api.get(i)["drill"] for i in res["opened"]) and api.get(real["id"])["findings"] == []

    # merge refuses to mix them, either way, and writes nothing
    drill = api.report("support", "Game day: logins", collections=["users"], drill=True)
    for into, dup in ((real["id"], drill["id"]), (drill["id"], real["id"])):
        with pytest.raises(FluxaError, match="drill") as e:
            api.merge(into, [dup])
        assert "drill" in e.value.hint
    assert api.get(drill["id"])["status"] == "open" and api.get(real["id"])["status"] == "open"


# -- review 1, item 2: a merge keeps the duplicate's containment, severity and times --------------

def test_merging_keeps_the_duplicates_read_only_paused_features_manual_severity_and_earliest_times(api):
    from fluxa_integrity.incidents.timeutil import now

    t0 = now()
    into = api.open("Theme settings reset", collections=["users.preferences"], at=t0 - H)["id"]
    dup = api.open("Logins fail", collections=["messages"], at=t0 - 3 * H,
                   issue_started_at=t0 - 5 * H, detected_at=t0 - 4 * H)["id"]
    api.acknowledge(dup, at=t0 - 2 * H)
    api.complete_item(dup, "read_only_mode", run=True, at=t0 - 2 * H)
    api.complete_item(dup, "pause_affected_features", run=True, params={"features": "chat,export"}, at=t0 - 2 * H)
    api.escalate(dup, "a person judged it critical", severity="P1", at=t0 - 2 * H)
    api.complete_item(into, "pause_affected_features", run=True, params={"features": "themes"}, at=t0 - H)
    before = api.read_only_collections()
    assert before["read_only"] and before["paused_features"] == ["chat", "export", "themes"]

    api.merge(into, [dup], at=t0)
    after = api.read_only_collections()
    # closing the duplicate must not silently lift what it had put in place
    assert after["read_only"] and after["incidents"] == [into], after
    assert after["paused_features"] == ["chat", "export", "themes"]
    inc = api.get(into)
    assert inc["read_only"] and inc["paused_features"] == ["chat", "export", "themes"]
    assert inc["severity"] == "P1"  # the duplicate's hand-set severity, which is more severe
    assert inc["issue_started_at"] == (t0 - 5 * H).isoformat()
    assert inc["detected_at"] == (t0 - 4 * H).isoformat()
    merged = [e["data"] for e in api.timeline(into) if e["kind"] == "merged"][0]
    assert merged["read_only"] is True and merged["paused_features"] == ["chat", "export"]
    assert merged["severity"] == {"from": "P2", "to": "P1", "manual": True}
    assert merged["issue_started_at"] and merged["detected_at"]
    assert all(v["ok"] for v in api.verify_timeline())
