"""Incidents end to end: from a check finding through the five phases to closed with time driven
by tick, real local HTTP and SMTP receivers, refusals, the hash-chained timeline, a channel that
is down, and the store on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from fluxa_integrity.checks.history import list_findings, record_run
from fluxa_integrity.checks.runner import run_checks
from fluxa_integrity.comms.notify import load_channels, retry_settings
from fluxa_integrity.comms.templates import placeholders
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.backup.catalog import get_backup
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.incidents.timeutil import now, utc
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store

from test_comms import HttpReceiver, SmtpReceiver

H, M = timedelta(hours=1), timedelta(minutes=1)


@pytest.fixture(scope="module")
def policy():
    return default_policy()


@pytest.fixture()
def http():
    r = HttpReceiver()
    yield r
    r.close()


@pytest.fixture()
def smtp():
    r = SmtpReceiver()
    yield r
    r.close()


def notification_config(http, smtp) -> dict:
    return {"notifications": [
        {"name": "slack", "type": "slack", "webhook_url": f"{http.url}/slack"},
        {"name": "email", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "mode": "insecure",
         "from": "fluxa@example.com", "to": ["oncall@example.com"]},
        {"name": "pagerduty", "type": "pagerduty", "routing_key": "R0UTING", "events_url": f"{http.url}/pagerduty"},
        {"name": "webhook", "type": "webhook", "url": f"{http.url}/hook"},
    ], "notify_retry": {"attempts": 2, "backoff_seconds": 0.01}}


def make_api(url, policy, http, smtp) -> Incidents:
    cfg = notification_config(http, smtp)
    return Incidents(open_store(url), policy, load_channels(cfg), retry_settings(cfg))


def kinds(api, incident_id) -> list[str]:
    return [e["kind"] for e in api.timeline(incident_id)]


# -- the acceptance script ---------------------------------------------------------------------

def test_incident_from_finding_through_five_phases_to_closed(mongo_uri, db, policy, tmp_path, http, smtp):
    generate(db, GenerateOptions(users=60, seed=3))
    inject(db, Manifest(tmp_path / "m.json", db.name), "duplicate-emails", 3)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    api = make_api(url, policy, http, smtp)
    record_run(api.store, run_checks(mongo_uri, db.name, policy))
    dup = [f for f in list_findings(api.store, db.name) if f.rule_id == "users.email.unique"]
    assert dup, "the check must find the injected duplicates"

    # the script's clock
    detected = utc(dup[0].opened_at)
    started = detected - 3 * H  # when the bad writes began (set by the investigation below)
    t0 = detected + 5 * M       # intake

    res = api.intake(at=t0, drill=True)  # a scripted drill: its clock runs ahead of the real one
    assert len(res["opened"]) == 1
    iid = res["opened"][0]
    inc = api.get(iid)
    assert inc["severity"] == "P1" and "user_accounts" in inc["data_classes"]  # a finding on users: P1
    assert set(f.id for f in dup) <= set(inc["findings"])
    assert inc["scope"]["documents"] >= 3 and inc["scope"]["collections"] == ["users"]
    assert api.intake(at=t0, drill=True)["skipped"] == inc["findings"]  # dedup: nothing new opens

    # the clocks, driven by tick
    assert api.tick(t0 + 30 * M, simulate=True)["events"] == []
    assert [e["event"] for e in api.tick(t0 + 46 * M, simulate=True)["events"]] == ["clock_warning"]
    breach = api.tick(t0 + 60 * M, simulate=True)["events"]
    assert [e["event"] for e in breach][:1] == ["clock_breached"]
    esc = [e for e in api.timeline(iid) if e["kind"] == "escalation" and e["data"]["trigger"] == "acknowledge_missed"]
    assert [e["data"]["role"] for e in esc] == ["Engineering Manager"]
    assert api.tick(t0 + 61 * M, simulate=True)["events"] == []  # each event recorded once

    with pytest.raises(FluxaError, match="before it is acknowledged"):
        api.resolve(iid, "too early", at=t0 + 62 * M)

    # Phase 1: immediate response
    acked = t0 + 65 * M
    api.acknowledge(iid, by="alice", at=acked)
    for role, person in [("Incident Commander", "alice"), ("Technical Lead", "bob"),
                         ("Database Administrator", "dana"), ("On-call Engineer", "omar")]:
        api.assign(iid, role, person, at=acked)
    r = api.complete_item(iid, "read_only_mode", run=True, note="writes to users stopped", at=acked + 2 * M)
    assert r["read_only"] is True and r["action_result"]["status"] == "done"
    assert api.read_only_collections()["collections"] == ["users"]
    # preserving evidence is an action: a snapshot of the affected collections, pinned
    r = api.complete_item(iid, "preserve_evidence", run=True, params={"uri": mongo_uri}, at=acked + 3 * M)
    assert r["action_result"]["status"] == "done" and r["action_result"]["collections"] == ["users"]
    evidence = get_backup(api.store, r["action_result"]["evidence_snapshot"])
    assert evidence.pinned_by == f"incident {iid}: evidence" and evidence.status == "complete"
    assert evidence.collections == ["users"]
    initial = api.publish(iid, "initial", at=acked + 5 * M)
    api.complete_item(iid, "initial_status_page_update", note=f"publication {initial['publication']}",
                      at=acked + 5 * M)
    done_items(api, iid, policy, "immediate_response", acked + 10 * M)

    # Phase 2: investigation
    api.set_status(iid, "investigating", at=t0 + 90 * M)
    api.link(iid, issue_started_at=started, at=t0 + 2 * H)
    api.review(iid, root_cause="a signup retry path skipped the case-insensitive email check",
               factors=["no unique index on lower(email)"], at=t0 + 2 * H)
    done_items(api, iid, policy, "investigation", t0 + 170 * M)

    # Phase 3 and 4: recovery planning and execution
    recovery_point = started - 10 * M
    api.set_status(iid, "recovering", at=t0 + 3 * H + 10 * M)
    api.link(iid, backups=[evidence.id], recovery_point=recovery_point, at=t0 + 3 * H + 20 * M)
    with pytest.raises(FluxaError, match="no backup 'backup-2026-full'"):  # only real ids link
        api.link(iid, backups=["backup-2026-full"], at=t0 + 3 * H + 21 * M)
    done_items(api, iid, policy, "recovery_planning", t0 + 3 * H + 50 * M)
    progress = api.publish(iid, "progress", at=t0 + 4 * H)
    assert "within 4 hours" in progress["text"]  # 8h target - 4h elapsed
    done_items(api, iid, policy, "recovery_execution", t0 + 6 * H + 30 * M)

    # Phase 5: service restoration
    api.complete_item(iid, "remove_restrictions", run=True, at=t0 + 7 * H)
    assert api.get(iid)["read_only"] is False
    resolved = t0 + 7 * H + 10 * M
    api.resolve(iid, "restoring the accounts from the last good backup", at=resolved)
    resolution = api.publish(iid, "resolution", at=resolved + 5 * M)
    done_items(api, iid, policy, "service_restoration", resolved + 10 * M)
    assert all(p["state"] == "done" for p in api.checklist(iid, resolved + 10 * M))
    api.review(iid, lessons=["check uniqueness case-insensitively"], action_items=["add the unique index"],
               at=resolved + 20 * M)
    api.close(iid, at=resolved + 30 * M)
    assert api.get(iid)["status"] == "closed"

    # the three communications, no placeholder left
    for pub in (initial, progress, resolution):
        assert placeholders(pub["text"]) == [] and "Time: " in pub["text"]
    assert "missing or incorrect user accounts data" in initial["text"]
    assert "caused by a signup retry path" in resolution["text"]
    assert [p["template"] for p in api.publications(iid)] == ["initial", "progress", "resolution"]

    # what the receivers got
    pd = http.at("/pagerduty")
    # one alert per incident and clock (test_incident_channel.py): opened, escalated when the
    # acknowledgement was missed (folded into the same alert), acknowledged, resolved
    key = f"fluxa-{db.name}-{iid}-acknowledge"
    assert [(e["event_action"], e["dedup_key"]) for e in pd] == [
        ("trigger", key), ("trigger", key), ("acknowledge", key), ("resolve", key)]
    assert pd[0]["payload"]["severity"] == "critical" and pd[0]["routing_key"] == "R0UTING"
    slack = [b["text"] for b in http.at("/slack")]
    assert any("opened" in t for t in slack) and any("escalated to Engineering Manager" in t for t in slack)
    assert any("[RESOLVED] Chatbot Fluxa Data Consistency Issue" in t for t in slack)
    hooks = http.at("/hook")
    assert all(h["incident_id"] == str(iid) for h in hooks)
    assert {"opened", "status", "escalation", "communication", "clock"} <= {h["event"] for h in hooks}
    subjects = smtp.subjects()
    assert any("escalated to Engineering Manager" in s for s in subjects)
    assert any("status page: Resolution Update" in s for s in subjects)
    assert len(subjects) == len(slack) == len(hooks)

    # the postmortem's numbers are the script's times
    pm = api.postmortem(iid)
    n = pm["numbers"]
    assert n["time_to_detect"] == (detected - started).total_seconds() == 3 * 3600
    assert n["time_to_acknowledge"] == (acked - t0).total_seconds() == 65 * 60
    assert n["time_to_resolve"] == (resolved - t0).total_seconds()
    assert n["rto_achieved"] == (resolved - detected).total_seconds()
    assert n["rpo_achieved"] == 10 * 60 and n["rpo_met"] is True  # users: RPO 15m
    assert n["rto_met"] is False  # users: RTO 1h
    md = pm["markdown"]
    for heading in ("## Summary", "## Impact", "## Timeline", "## Root cause", "## Contributing factors",
                    "## Lessons learned", "## Action items", "## Response times"):
        assert heading in md
    assert "| time to acknowledge | 1h05m | 1h |" in md and "| time to detect | 3h00m |" in md
    assert "RPO achieved (data window lost) | 0h10m | 0h15m (met)" in md
    assert api.verify_timeline(iid)[0]["ok"]


def done_items(api, iid, policy, phase_id, at):
    phase = next(p for p in api.checklist(iid, at) if p["id"] == phase_id)
    for item in phase["items"]:
        if not item["done_at"]:
            api.complete_item(iid, item["id"], note="done", at=at, actor=item["owner"])


# -- intake: dedup, attach, growth --------------------------------------------------------------

def test_intake_dedups_attaches_by_data_class_and_sees_growth(mongo_uri, db, policy, tmp_path):
    generate(db, GenerateOptions(users=60, seed=5))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "duplicate-emails", 2, seed=1)
    api = Incidents(open_store(f"sqlite:///{tmp_path / 's.db'}"), policy)
    record_run(api.store, run_checks(mongo_uri, db.name, policy))
    first = api.intake()
    assert len(first["opened"]) == 1
    iid = first["opened"][0]
    assert api.get(iid)["scope"]["trend"] == "unknown (one sighting)"
    inject(db, manifest, "duplicate-emails", 2, seed=9)
    inject(db, manifest, "wrong-type-createdat", 2, seed=9)
    record_run(api.store, run_checks(mongo_uri, db.name, policy))
    second = api.intake()
    assert second["opened"] == []
    attached = second["attached"][iid]
    rules = {f.id: f.rule_id for f in list_findings(api.store, db.name)}
    assert "users.createdAt.type" in {rules[i] for i in attached}  # same data class: joins the incident
    inc = api.get(iid)
    assert "user_accounts" in inc["data_classes"] and inc["scope"]["trend"] == "growing"


def test_reports_and_system_events_open_incidents(policy, tmp_path):
    api = Incidents(open_store(f"sqlite:///{tmp_path / 's.db'}"), policy)
    r = api.report("support", "Users say their chats vanished", collections=["messages"])
    assert (r["source"], r["source_kind"], r["severity"]) == ("report", "support", "P2")
    e = api.system_event("failed_migration", collections=["conversations"])
    assert e["title"] == "Failed database migration" and e["data_classes"] == ["chat_history"]
    with pytest.raises(FluxaError, match="unknown system event"):
        api.system_event("meteor")
    d = api.escalate(r["id"], "the VIP customer is affected", severity="P1")
    assert d["severity"] == "P1"
    d = api.escalate(r["id"], "only one user after all", severity="P2")
    sev = [e["data"] for e in api.timeline(r["id"]) if e["kind"] == "severity_changed"]
    assert [(x["from"], x["to"], x["reason"]) for x in sev] == [("P2", "P1", "the VIP customer is affected"),
                                                               ("P1", "P2", "only one user after all")]


# -- refusals -----------------------------------------------------------------------------------

def test_refused_actions_have_clear_errors(cli):
    opened = cli("incident", "open", "--title", "Broken prefs", "--collections", "users", "--json")
    assert opened.code == 0, opened.stderr
    iid = str(opened.json()["id"])
    r = cli("incident", "resolve", iid, "--json")
    assert r.code == 2 and "cannot be resolved before it is acknowledged" in r.json()["error"]
    r = cli("incident", "show", "999")
    assert r.code == 2 and "no incident 999" in r.stderr
    r = cli("incident", "comms", iid, "progress", "--set", "ESTIMATED_TIME=")
    assert r.code == 2 and "[ESTIMATED_TIME]" in r.stderr
    r = cli("incident", "comms", iid, "resolution", "--json")
    assert r.code == 2 and "[BRIEF_CAUSE], [BRIEF_RESOLUTION]" in r.json()["error"]
    assert cli("incident", "ack", iid).code == 0
    assert cli("incident", "resolve", iid, "--resolution", "fixed the writer").code == 0
    r = cli("incident", "close", iid)
    assert r.code == 2 and "cannot be closed without a root cause" in r.stderr and "--root-cause" in r.stderr
    r = cli("incident", "postmortem", iid, "--root-cause", "a bad deploy", "--json")
    assert r.code == 0 and "a bad deploy" in r.json()["markdown"]
    r = cli("incident", "comms", iid, "resolution", "--publish", "--json")
    assert r.code == 0 and "caused by a bad deploy and was resolved by fixed the writer" in r.json()["text"]
    assert cli("incident", "close", iid, "--json").json()["status"] == "closed"
    r = cli("incident", "note", iid, "late", "--json")
    assert r.code == 0  # notes stay possible on a closed incident: the record can grow, not change
    r = cli("incident", "status", iid, "investigating")
    assert r.code == 2 and "closed" in r.stderr


# -- the timeline ------------------------------------------------------------------------------

def test_timeline_chain_verifies_and_tampering_is_detected(policy, tmp_path, cli, fluxa_home):
    url = f"sqlite:///{tmp_path / 's.db'}"
    api = Incidents(open_store(url), policy)
    iid = api.open("Orphaned messages", collections=["messages"])["id"]
    api.acknowledge(iid, by="alice")
    api.note(iid, "looking at the audit log")
    api.note(iid, "found the job")
    assert api.verify_timeline(iid)[0]["ok"]
    with api.store.engine.begin() as c:
        c.execute(text("UPDATE incident_events SET data = :d WHERE incident_id = :i AND seq = 3"),
                  {"d": '{"text": "nothing to see"}', "i": iid})
    v = api.verify_timeline(iid)[0]
    assert not v["ok"] and any("row 3" in p and "edited" in p for p in v["problems"])

    other = api.open("Second", collections=["analytics"])["id"]
    api.note(other, "a")
    api.note(other, "b")
    with api.store.engine.begin() as c:
        c.execute(text("DELETE FROM incident_events WHERE incident_id = :i AND seq = 2"), {"i": other})
    assert any("missing" in p for p in api.verify_timeline(other)[0]["problems"])
    with api.store.engine.begin() as c:  # the last row: only the incident's head can tell
        c.execute(text("DELETE FROM incident_events WHERE incident_id = :i AND seq = 3"), {"i": other})
    assert not api.verify_timeline(other)[0]["ok"]

    r = cli("incident", "verify-timeline", "--json", env={"FLUXA_STATE_URL": url})
    assert r.code == 1 and [x["ok"] for x in r.json()] == [False, False]


# -- a channel that is down ----------------------------------------------------------------------

def test_a_channel_that_is_down_never_stops_the_incident_and_is_retried(policy, tmp_path, http, smtp):
    api = make_api(f"sqlite:///{tmp_path / 's.db'}", policy, http, smtp)
    http.down.add("/hook")
    t0 = now()
    iid = api.open("Counters off", collections=["conversations"], at=t0, drill=True)["id"]
    api.acknowledge(iid, by="alice", at=t0 + 5 * M)
    assert api.get(iid)["status"] == "acknowledged"  # the incident went on
    failed = [e for e in api.timeline(iid) if e["kind"] == "notification_failed"]
    assert failed and all(e["data"]["channel"] == "webhook" and e["data"]["will_retry"] for e in failed)
    assert http.at("/hook") == [] and len(http.at("/slack")) >= 2
    pending = [n for n in api.notifications(iid) if n["status"] == "pending"]
    assert pending and {n["channel"] for n in pending} == {"webhook"}

    assert api.tick(t0 + 6 * M, simulate=True)["notifications_retried"]["sent"] == 0  # not due yet, still down
    http.down.clear()
    retried = api.tick(t0 + 30 * M, simulate=True)["notifications_retried"]  # due now: delivered
    assert retried["sent"] == len(pending) and retried["failed"] == 0
    assert [h["event"] for h in http.at("/hook")][:1] == ["opened"]
    assert all(n["status"] == "sent" for n in api.notifications(iid))
    assert "notification_sent" in kinds(api, iid) and api.verify_timeline(iid)[0]["ok"]


def test_notify_retry_cli_delivers_pending(cli, fluxa_home, http, smtp):
    import yaml

    cfg = notification_config(http, smtp)
    fluxa_home.mkdir(parents=True, exist_ok=True)
    (fluxa_home / "config.yaml").write_text(yaml.safe_dump(cfg))
    http.down.add("/slack")
    iid = str(cli("incident", "open", "--title", "Sync drift", "--collections", "users", "--json").json()["id"])
    assert http.at("/slack") == [] and len(http.at("/pagerduty")) == 1
    http.down.clear()
    r = cli("incident", "notify-retry", "--json")
    assert r.code == 0 and r.json()["sent"] >= 1
    assert any("Sync drift" in b["text"] for b in http.at("/slack"))
    tl = cli("incident", "show", iid, "--json").json()["timeline"]
    assert [e["kind"] for e in tl].count("notification_failed") >= 1


# -- PostgreSQL --------------------------------------------------------------------------------

def test_incident_store_on_postgresql(postgres_url, policy, tmp_path):
    from sqlalchemy import create_engine

    name = f"t_inc_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    api = Incidents(open_store(postgres_url.rsplit("/", 1)[0] + "/" + name), policy)
    t0 = now()
    iid = api.open("Users missing", collections=["users"], at=t0, drill=True)["id"]
    api.tick(t0 + 61 * M, simulate=True)
    api.acknowledge(iid, at=t0 + 70 * M)
    api.review(iid, root_cause="a purge job ran against production")
    api.resolve(iid, "restored", at=t0 + 3 * H)
    api.close(iid, at=t0 + 4 * H)
    assert api.postmortem(iid)["numbers"]["time_to_acknowledge"] == 70 * 60
    assert "clock_breached" in kinds(api, iid)
    assert api.verify_timeline(iid)[0]["ok"]
    with api.store.engine.begin() as c:
        c.execute(text("UPDATE incident_events SET actor = 'mallory' WHERE incident_id = :i AND seq = 1"), {"i": iid})
    assert not api.verify_timeline(iid)[0]["ok"]
