"""The incident channel (issue 12, item 5): an incident's life on its own Slack Block Kit stream
and PagerDuty Events v2 pages per incident and clock, received by real local HTTP receivers whose
payloads are checked strictly against Slack's and PagerDuty's shapes and limits. The expected
stream is derived from the incident's own timeline (the ground truth of what happened), not
from the messages themselves."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
import yaml

from fluxa_integrity.comms.notify import load_channels, retry_settings
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.incidents.timeutil import now
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store

from test_comms import HttpReceiver

H, M = timedelta(hours=1), timedelta(minutes=1)
TITLE = "Duplicate e-mails <!channel> & friends"  # mrkdwn control characters and a mention in it


@pytest.fixture()
def http():
    r = HttpReceiver()
    yield r
    r.close()


def config(http) -> dict:
    return {"notifications": [
        {"name": "incident-channel", "type": "slack-channel", "webhook_url": f"{http.url}/slack"},
        {"name": "pager", "type": "pagerduty", "routing_key": "R0UTING", "events_url": f"{http.url}/pagerduty",
         "source": "fluxa-test"},
    ], "notify_retry": {"attempts": 1, "backoff_seconds": 0.01}}


# -- the shapes, strictly ---------------------------------------------------------------------

def check_text(obj: dict, types: tuple[str, ...], limit: int) -> str:
    assert set(obj) <= {"type", "text", "emoji", "verbatim"}, obj
    assert obj["type"] in types, obj
    assert isinstance(obj["text"], str) and 1 <= len(obj["text"]) <= limit, (len(obj["text"]), obj)
    if obj["type"] == "mrkdwn":  # &, <, > escaped: no link, mention or broken entity from a title
        assert "<" not in obj["text"] and ">" not in obj["text"], obj["text"]
        assert not re.search(r"&(?!amp;|lt;|gt;)", obj["text"]), obj["text"]
    return obj["text"]


def check_block_kit(p: dict) -> dict:
    """Slack's message shape and limits: header text <= 150 (plain_text), section text <= 3000,
    at most 10 fields of <= 2000, context elements <= 10."""
    assert set(p) == {"channel", "text", "blocks"}, p.keys()
    assert re.fullmatch(r"#[a-z0-9_-]{1,80}", p["channel"]), p["channel"]
    assert isinstance(p["text"], str) and 0 < len(p["text"]) <= 4000
    assert isinstance(p["blocks"], list) and [b["type"] for b in p["blocks"]] == ["header", "section", "context"]
    header, section, context = p["blocks"]
    assert set(header) == {"type", "text"}
    out = {"header": check_text(header["text"], ("plain_text",), 150)}
    assert set(section) <= {"type", "text", "fields"}
    out["section"] = check_text(section["text"], ("mrkdwn", "plain_text"), 3000)
    assert 1 <= len(section["fields"]) <= 10
    out["fields"] = {}
    for f in section["fields"]:
        label, _, value = check_text(f, ("mrkdwn", "plain_text"), 2000).partition("\n")
        out["fields"][label.strip("*")] = value
    assert set(context) == {"type", "elements"} and 1 <= len(context["elements"]) <= 10
    out["context"] = " ".join(check_text(e, ("mrkdwn", "plain_text"), 2000) for e in context["elements"])
    return out


def check_pagerduty(e: dict) -> dict:
    """Events API v2: routing_key, event_action, dedup_key; a trigger's payload with summary
    <= 1024, source, severity in critical/error/warning/info."""
    assert e["routing_key"] == "R0UTING" and e["event_action"] in ("trigger", "acknowledge", "resolve")
    assert isinstance(e["dedup_key"], str) and 0 < len(e["dedup_key"]) <= 255
    if e["event_action"] != "trigger":
        assert set(e) == {"routing_key", "event_action", "dedup_key"}, e
        return e
    assert set(e) == {"routing_key", "event_action", "dedup_key", "payload"}
    pl = e["payload"]
    assert set(pl) <= {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
    assert isinstance(pl["summary"], str) and 0 < len(pl["summary"]) <= 1024
    assert pl["source"] == "fluxa-test" and pl["severity"] in ("critical", "error", "warning", "info")
    datetime.fromisoformat(pl["timestamp"])
    assert all(isinstance(pl[k], str) and pl[k] for k in ("component", "group", "class"))
    assert isinstance(pl["custom_details"], dict)
    return e


# -- what the timeline says the channel must show ------------------------------------------------

TIMELINE_TO_MESSAGE = {"opened": "opened", "status": "status", "escalation": "escalation", "assigned": "assigned",
                       "clock_warning": "clock", "clock_breached": "clock", "phase_overdue": "phase",
                       "communication": "communication", "recovery_action": "recovery", "contained": "containment",
                       "lifted": "containment", "merged": "merged", "severity_changed": "severity"}


def expected_stream(api: Incidents, iid: int) -> list[str]:
    """Every timeline row worth a human's attention, as the message kind it must produce, in
    order; a checklist tick that completes its phase is a phase change."""
    phase_items = {p.id: {i.id for i in p.items} for p in api.policy.phases}
    done: set[str] = set()
    out = []
    for e in api.timeline(iid):
        if e["kind"] == "checklist":
            done.add(e["data"]["item"])
            if phase_items[e["data"]["phase"]] <= done and e["data"]["item"] in phase_items[e["data"]["phase"]]:
                out.append("phase")
        elif e["kind"] in TIMELINE_TO_MESSAGE:
            out.append(TIMELINE_TO_MESSAGE[e["kind"]])
    return out


def event_of(msg: dict) -> str:
    return re.search(r"event `(\w+)`", msg["context"]).group(1)


# -- an incident's life ---------------------------------------------------------------------------

def test_an_incidents_life_on_its_channel_and_its_pages(tmp_path, http):
    cfg = config(http)
    policy = default_policy()
    api = Incidents(open_store(f"sqlite:///{tmp_path / 'state.db'}"), policy, load_channels(cfg), retry_settings(cfg))
    t0 = now()
    # a drill: its clock can be driven ahead to the resolve target (tick --simulate)
    a = api.open(TITLE, collections=["users"], database="fluxa", at=t0, drill=True)["id"]
    other = api.open("Counters off", collections=["conversations"], database="fluxa", at=t0, drill=True)["id"]
    api.escalate(other, "a VIP is affected", notify="CTO", at=t0 + 5 * M)  # by hand: pages its running clock
    api.acknowledge(a, by="alice", at=t0 + 10 * M)
    phase1 = next(p for p in api.checklist(a, t0) if p["id"] == policy.phases[0].id)
    for item in phase1["items"]:
        api.complete_item(a, item["id"], note="done", at=t0 + 15 * M)
    api.publish(a, "initial", at=t0 + 20 * M)
    api.set_status(a, "investigating", at=t0 + 30 * M)
    api.record_recovery_action(a, "recipe", "plan-7", "x" * 5000, {"users": {"updated": 3}}, at=t0 + 2 * H)
    api.record_recovery_action(a, "verify", "plan-7", "the plan's rules found nothing", {}, status="closed",
                               at=t0 + 2 * H + 5 * M)
    ticked = api.tick(t0 + 8 * H + M, simulate=True)  # the resolve target is missed: escalation by clock
    assert {(e["incident"], e["event"], e["clock"]) for e in ticked["events"]} >= {
        (a, "clock_breached", "resolve"), (other, "clock_breached", "acknowledge"),
        (other, "clock_breached", "resolve")}
    api.resolve(a, "the duplicates were merged", at=t0 + 8 * H + 10 * M)
    api.review(a, root_cause="a retry path skipped the e-mail check", at=t0 + 8 * H + 15 * M)
    api.close(a, at=t0 + 8 * H + 20 * M)
    assert api.delivery_failures == []

    msgs = [check_block_kit(p) for p in http.at("/slack")]
    pages = [check_pagerduty(e) for e in http.at("/pagerduty")]

    # one stream per incident, named from the template (#inc-{id}-{slug})
    streams = {p["channel"] for p in http.at("/slack")}
    assert streams == {f"#inc-{a}-duplicate-e-mails-channel-friends", f"#inc-{other}-counters-off"}
    mine = [m for p, m in zip(http.at("/slack"), msgs) if p["channel"].startswith(f"#inc-{a}-")]
    assert all(f"Incident *{a}*" in m["context"] for m in mine)

    # the channel shows every attention-worthy timeline event, in order
    kinds = [event_of(m) for m in mine]
    assert kinds == expected_stream(api, a)
    assert [event_of(m) for p, m in zip(http.at("/slack"), msgs) if p["channel"].startswith(f"#inc-{other}-")] \
        == expected_stream(api, other)
    for wanted in ("opened", "escalation", "status", "phase", "communication", "recovery", "clock"):
        assert wanted in kinds

    # what the messages say, as the incident was when each was queued
    opened = mine[0]
    assert opened["header"].startswith(f"[DRILL] [P1] Incident {a}: opened: Duplicate e-mails")
    assert "&lt;!channel&gt; &amp; friends" in opened["section"]
    assert opened["fields"]["Severity"] == "P1 (Critical)" and opened["fields"]["Status"] == "open"
    assert opened["fields"]["Data classes"] == "User Accounts"
    assert opened["fields"]["Phase"] == f"{policy.phases[0].name} (in window)"
    assert opened["fields"]["Acknowledge clock"].startswith("due ") and "DRILL" in opened["context"]
    acked = next(m for m in mine if event_of(m) == "status" and m["fields"]["Status"] == "acknowledged")
    assert acked["fields"]["Acknowledge clock"].startswith("met at ")
    assert any(m["header"].endswith(f"phase {policy.phases[0].name} done") for m in mine)
    missed = next(m for m in mine if event_of(m) == "escalation" and "CTO" in m["header"])
    assert "overdue since" in missed["fields"]["Resolve clock"] and "CTO" in missed["fields"]["Escalated to"]
    assert missed["fields"]["Phase"] == f"{policy.phases[1].name} (overdue)"  # phase 1 done, phase 2 not
    long = next(m for m in mine if event_of(m) == "recovery" and "recipe" in m["header"])
    assert len(long["section"]) == 3000 and long["section"].endswith("…")  # cut to Slack's limit
    assert any(event_of(m) == "recovery" and "verify plan-7 closed" in m["header"] for m in mine)
    assert [m["fields"]["Status"] for m in mine if event_of(m) == "status"][-2:] == ["resolved", "closed"]

    # PagerDuty: one alert per incident and clock; resolving resolves each of them
    ka, kr = f"fluxa-fluxa-{a}-acknowledge", f"fluxa-fluxa-{a}-resolve"
    assert [(e["event_action"], e["dedup_key"]) for e in pages if e["dedup_key"] in (ka, kr)] == [
        ("trigger", ka), ("acknowledge", ka), ("trigger", kr), ("resolve", ka), ("resolve", kr)]
    # the pages that escalate by clock are the timeline's escalations other than the opening's
    esc = [e for e in api.timeline(a) if e["kind"] == "escalation" and e["data"]["trigger"] != "opened"]
    assert [e["data"]["trigger"] for e in esc] == ["resolve_missed"]
    page = next(e for e in pages if e["dedup_key"] == kr)["payload"]
    assert page["severity"] == "critical" and page["group"] == "fluxa" and page["component"] == "users"
    assert page["custom_details"]["clock"] == "resolve" and page["custom_details"]["escalated_to"][-1] == "CTO"
    assert page["summary"].startswith(f"[DRILL] [P1] Incident {a}: escalated to CTO")
    # the other incident, never acknowledged: the escalation by hand and the missed acknowledgement
    # page on the same acknowledge alert as its opening (PagerDuty folds them into the open alert),
    # its missed resolve target is a second alert
    ko, kor = f"fluxa-fluxa-{other}-acknowledge", f"fluxa-fluxa-{other}-resolve"
    assert [(e["event_action"], e["dedup_key"]) for e in pages if e["dedup_key"] in (ko, kor)] == [
        ("trigger", ko), ("trigger", ko), ("trigger", ko), ("trigger", kor)]
    assert next(e for e in pages if e["dedup_key"] == ko)["payload"]["severity"] == "error"  # P2
    for key in {e["dedup_key"] for e in pages}:  # no alert is acknowledged or resolved before it was triggered
        assert [e["event_action"] for e in pages if e["dedup_key"] == key][0] == "trigger"


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, says", [
    ({"type": "slack-channel"}, "needs 'webhook_url'"),
    ({"type": "slack-channel", "webhook_url": "ftp://x/y"}, r"'webhook_url' must be an http\(s\) URL"),
    ({"type": "slack-channel", "webhook_url": "https://h/x", "channel": "#incidents"}, "has no {id}"),
    ({"type": "slack-channel", "webhook_url": "https://h/x", "channel": "#inc-{id}-{owner}"},
     r"unknown placeholder\(s\) \{owner\}"),
    ({"type": "slack-channel", "webhook_url": "https://h/x", "channel": "#Inc {id}"}, "lower case letters"),
    ({"type": "slack-channel", "webhook_url": "https://h/x", "events": ["opened", "notes"]}, "unknown event 'notes'"),
    ({"type": "slack-channel", "webhook_url": "https://h/x", "hook": "x"}, "unknown field 'hook'"),
    ({"type": "pagerduty"}, "needs 'routing_key'"),
    ({"type": "pagerduty", "routing_key": "ab cd"}, "whitespace"),
    ({"type": "pagerduty", "routing_key": "K", "severity_map": {"P1": "sev1"}},
     "severity_map P1: 'sev1' is not a PagerDuty severity"),
    ({"type": "pagerduty", "routing_key": "K", "events_url": "events.pagerduty.com"}, "'events_url' must be"),
    ({"type": "pagerduty", "routing_key": "K", "events": ["opened"]}, "unknown field 'events'"),
])
def test_bad_channel_config_is_refused_naming_the_field(entry, says):
    with pytest.raises(FluxaError, match=says) as exc:
        load_channels({"notifications": [{"name": "x", **entry}]})
    assert f"notification channel 'x' ({entry['type']})" in exc.value.args[0]


def test_a_channel_that_is_down_is_named_on_stderr_and_notify_retry_delivers_it(cli, fluxa_home, http):
    fluxa_home.mkdir(parents=True, exist_ok=True)
    (fluxa_home / "config.yaml").write_text(yaml.safe_dump(config(http)))
    http.down.add("/slack")
    r = cli("incident", "open", "--title", "Sync drift", "--collections", "messages", "--json")
    assert r.code == 0, r.stderr
    iid = r.json()["id"]
    port = http.url.rsplit(":", 1)[1]
    assert f"via incident-channel (slack-channel to 127.0.0.1:{port}): Slack answered 503" in r.stderr
    assert http.at("/slack") == [] and [e["event_action"] for e in http.at("/pagerduty")] == ["trigger"]
    http.down.clear()
    r = cli("incident", "notify-retry", "--json")
    assert r.code == 0 and r.json()["sent"] >= 1 and r.json()["failed"] == 0
    got = [check_block_kit(p) for p in http.at("/slack")]
    assert {p["channel"] for p in http.at("/slack")} == {f"#inc-{iid}-sync-drift"}
    assert event_of(got[0]) == "opened" and got[0]["fields"]["Status"] == "open"
