"""Real local receivers for notification tests: an HTTP server and an SMTP server in threads."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from fluxa_integrity.mongo.devserver import free_port


class HttpReceiver:
    """Records every POST (path, JSON body); answers 503 on paths listed in ``down``."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.down: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path.split("?")[0] in receiver.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.requests.append((self.path.split("?")[0], json.loads(body or b"{}")))
                self.send_response(202 if "pagerduty" in self.path else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        return [body for p, body in self.requests if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    def __init__(self):
        self.messages = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                receiver.messages.append(envelope)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def subjects(self) -> list[str]:
        import email
        from email.header import decode_header, make_header

        return [str(make_header(decode_header(email.message_from_bytes(m.content)["Subject"])))
                for m in self.messages]

    def close(self):
        self.controller.stop()


# -- tests of comms/ on their own -------------------------------------------------------------

import pytest  # noqa: E402

from fluxa_integrity.comms.notify import Message, PagerDutyChannel, load_channels  # noqa: E402
from fluxa_integrity.comms.templates import placeholders, render  # noqa: E402
from fluxa_integrity.errors import FluxaError  # noqa: E402
from fluxa_integrity.policy import default_policy  # noqa: E402


def test_templates_are_the_playbooks_and_headings_are_not_placeholders():
    t = default_policy().templates
    assert placeholders(t.initial.text) == ["SPECIFIC_ISSUES", "CURRENT_TIME"]
    assert placeholders(t.progress.text) == ["ESTIMATED_TIME", "CURRENT_TIME"]
    assert placeholders(t.resolution.text) == ["BRIEF_CAUSE", "BRIEF_RESOLUTION", "CURRENT_TIME"]
    text = render(t.progress, {"ESTIMATED_TIME": "2 hours", "CURRENT_TIME": "09:00 UTC"})
    assert text.startswith("[UPDATE] Chatbot Fluxa Data Consistency Issue")
    assert "within 2 hours." in text and text.endswith("Time: 09:00 UTC")


def test_a_missing_or_empty_value_is_refused_by_name():
    t = default_policy().templates.resolution
    with pytest.raises(FluxaError, match=r"needs a value for \[BRIEF_RESOLUTION\]") as exc:
        render(t, {"BRIEF_CAUSE": "a bad deploy", "BRIEF_RESOLUTION": "  ", "CURRENT_TIME": "now"}, "resolution")
    assert "--set BRIEF_RESOLUTION=" in exc.value.hint


def test_pagerduty_events_and_severity_mapping():
    http = HttpReceiver()
    try:
        ch = PagerDutyChannel("pd", "KEY", f"{http.url}/pagerduty", {"P2": "warning"})
        for action, sev in [("trigger", "P2"), ("acknowledge", "P2"), ("resolve", "P2")]:
            ch.send(Message(7, "status", "subject", "body", sev, action))
        got = http.at("/pagerduty")
        assert [g["event_action"] for g in got] == ["trigger", "acknowledge", "resolve"]
        assert {g["dedup_key"] for g in got} == {"fluxa-incident-7"}
        assert got[0]["payload"]["severity"] == "warning" and "payload" not in got[1]
        assert not ch.wants(Message(7, "note", "s", "b", "P2", None))
    finally:
        http.close()


def test_email_and_slack_reach_real_receivers():
    http, smtp = HttpReceiver(), SmtpReceiver()
    try:
        channels = load_channels({"notifications": [
            {"type": "slack", "webhook_url": f"{http.url}/slack"},
            {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "mode": "insecure",
             "from": "fluxa@example.com", "to": "dba@example.com"}]})
        for ch in channels:
            ch.send(Message(3, "opened", "[P1] Incident 3: opened", "Users missing", "P1"))
        assert http.at("/slack") == [{"text": "*[P1] Incident 3: opened*\nUsers missing"}]
        assert smtp.subjects() == ["[P1] Incident 3: opened"]
        assert smtp.messages[0].rcpt_tos == ["dba@example.com"]
    finally:
        http.close()
        smtp.close()


def test_bad_channel_config_is_a_clear_error():
    with pytest.raises(FluxaError, match="unknown type 'pigeon'"):
        load_channels({"notifications": [{"type": "pigeon"}]})
    with pytest.raises(FluxaError, match="needs 'routing_key'"):
        load_channels({"notifications": [{"type": "pagerduty", "name": "pd"}]})


def test_a_failed_send_names_the_channel_where_and_why():
    from fluxa_integrity.comms.notify import ChannelError
    from fluxa_integrity.mongo.devserver import free_port

    up = HttpReceiver()
    up.down.add("/hook")
    closed = free_port()  # nothing listens: a real refusal
    try:
        cfg = {"notifications": [
            {"name": "hook", "type": "webhook", "url": f"{up.url}/hook"},
            {"name": "chat", "type": "slack", "webhook_url": f"http://127.0.0.1:{closed}/s"},
            {"name": "mail", "type": "email", "smtp_host": "127.0.0.1", "smtp_port": closed, "mode": "insecure",
             "from": "fluxa@example.com", "to": ["oncall@example.com"]},
            {"name": "pd", "type": "pagerduty", "routing_key": "R", "events_url": f"http://127.0.0.1:{closed}/e"},
        ]}
        errors = {}
        for ch in load_channels(cfg):
            with pytest.raises(ChannelError) as e:
                ch.send(Message(1, "opened", "schema error in users", "body with an error word", "P1", "trigger"))
            errors[ch.name] = str(e.value)
        port = up.url.rsplit(":", 1)[1]
        assert errors["hook"].startswith(f"hook (webhook to 127.0.0.1:{port}): ") and "error=503" in errors["hook"]
        assert "Payload" not in errors["hook"]  # only apprise's warnings, never the message it tried to send
        for name, kind in (("chat", "slack"), ("mail", "email"), ("pd", "pagerduty")):
            assert errors[name] == f"{name} ({kind} to 127.0.0.1:{closed}): [Errno 111] Connection refused"
    finally:
        up.close()
