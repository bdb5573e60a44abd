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

from test_comms import HttpReceiver

H, M = timedelta(hours=1), timedelta(minutes=1)


@pytest.fixture()
def http():
    r = HttpReceiver()
    yield r
    r.close()


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
