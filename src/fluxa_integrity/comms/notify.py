"""Notification channels from config.yaml's ``notifications:`` list.

Everything goes through apprise except the channels that need a JSON body of their own, sent
with urllib (json_post.py): PagerDuty, because apprise's PagerDuty plugin posts only to
PagerDuty's own hosts (US/EU region), so a test or a proxy cannot receive its events, and the
Events API v2 is one JSON POST to a configurable ``events_url`` (pagerduty.py builds it); and
``slack-channel``, the incident's channel in Slack Block Kit (slack_blocks.py builds it), because
apprise sends a title and a body, never a ``blocks`` list. Plain Slack incoming webhooks
(``slack``) go through apprise's JSON plugin with its payload remapped to Slack's
``{"text": ...}`` (apprise's Slack plugin is bound to hooks.slack.com, so the same reason).

A channel's ``send`` raises ChannelError on failure; retries and bookkeeping are the caller's
(incidents/notifications.py), so a failing channel never stops an incident. A channel with
``needs_incident`` gets the incident's state (severity, phase, clocks ...) in
``msg.extra["incident"]``, taken when the message was queued.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

from ..home import load_config_file
from ..errors import FluxaError
from . import pagerduty, slack_blocks
from .json_post import ChannelError, post_json
from .pagerduty import PAGERDUTY_EVENTS_URL, DEFAULT_SEVERITY as DEFAULT_PD_SEVERITY  # noqa: F401


_DEFAULT_PORTS = {"http": 80, "https": 443, "json": 80, "jsons": 443, "mailto": 25, "mailtos": 587}
_LOG_LINE = re.compile(r"^\S+ \S+ - ([A-Z]+) - (.*)$")  # apprise.LogCapture: "date time - LEVEL - text"
_ERRNO = re.compile(r"\[Errno -?\d+\][^\"')\]]*")


def endpoint(url: str) -> str:
    """``host:port`` of a channel URL (the scheme's default port when none is given)."""
    u = urlsplit(url)
    try:
        port = u.port or _DEFAULT_PORTS.get(u.scheme, "?")
    except ValueError:
        port = "?"
    return f"{u.hostname or '?'}:{port}"


def _why(log_text: str) -> str:
    """The reason out of apprise's log: the socket error when there is one (``[Errno 111]
    Connection refused``, logged at debug level), else its warnings (``... error=503``)."""
    records = [m.groups() for ln in log_text.splitlines() if (m := _LOG_LINE.match(ln.strip()))]
    for level, text in records:
        if text.startswith("Socket Exception"):
            m = _ERRNO.search(text)
            return m.group(0).strip().rstrip(".") if m else text[len("Socket Exception: "):][:200]
    warnings = [text for level, text in records if level in ("WARNING", "ERROR", "CRITICAL")]
    return " ".join(warnings)[:300] or "delivery failed (apprise gave no reason)"


@dataclass
class Message:
    incident_id: int
    kind: str  # opened, status, severity, escalation, clock, communication, ...
    subject: str
    body: str
    severity: str
    pagerduty_action: str | None = None  # trigger | acknowledge | resolve: only these reach PagerDuty
    extra: dict = field(default_factory=dict)


class Channel:
    type = "?"
    needs_incident = False  # True: enqueue puts the incident's state in msg.extra["incident"]

    def __init__(self, name: str, events: list[str] | None = None):
        self.name = name
        self.events = events  # None: every kind

    def wants(self, msg: Message) -> bool:
        return self.events is None or msg.kind in self.events

    def send(self, msg: Message) -> None:
        raise NotImplementedError


class AppriseChannel(Channel):
    type = "apprise"

    def __init__(self, name: str, url: str, events=None):
        super().__init__(name, events)
        self.url = url

    def build_url(self, msg: Message) -> str:
        return self.url

    def send(self, msg: Message) -> None:
        import apprise

        ap = apprise.Apprise()
        url = self.build_url(msg)
        where = f"{self.name} ({self.type} to {endpoint(url)})"
        # DEBUG: apprise logs the socket error (errno) only at debug level
        with apprise.LogCapture(level=logging.DEBUG) as log:
            if not ap.add(url):
                raise ChannelError(f"{where}: apprise does not understand the channel URL")
            ok = ap.notify(title=msg.subject, body=msg.body)
            text = log.getvalue()
        if not ok:
            raise ChannelError(f"{where}: {_why(text)}")


def _apprise_json_url(http_url: str, extras: dict[str, str]) -> str:
    """``https://host/path`` -> apprise ``jsons://host/path?:key=value`` (``:key=`` drops a field,
    ``:message=text`` renames one)."""
    u = urlsplit(http_url)
    scheme = {"http": "json", "https": "jsons", "json": "json", "jsons": "jsons"}.get(u.scheme)
    if scheme is None:
        raise FluxaError(f"not an http(s) URL: {http_url!r}")
    query = "&".join(filter(None, [u.query, urlencode({f":{k}": v for k, v in extras.items()})]))
    return f"{scheme}://{u.netloc}{u.path or '/'}" + (f"?{query}" if query else "")


class WebhookChannel(AppriseChannel):
    """Generic JSON webhook: apprise's payload (title, message, type) plus incident fields."""

    type = "webhook"

    def build_url(self, msg: Message) -> str:
        return _apprise_json_url(self.url, {"incident_id": str(msg.incident_id), "event": msg.kind,
                                            "severity": msg.severity})


class SlackChannel(AppriseChannel):
    """Slack incoming webhook: a JSON POST of ``{"text": ...}``."""

    type = "slack"

    def build_url(self, msg: Message) -> str:
        return _apprise_json_url(self.url, {"message": "text", "version": "", "title": "", "attachments": "",
                                            "type": ""})

    def send(self, msg: Message) -> None:
        super().send(Message(msg.incident_id, msg.kind, msg.subject, f"*{msg.subject}*\n{msg.body}", msg.severity))


class EmailChannel(AppriseChannel):
    type = "email"

    @classmethod
    def from_config(cls, name: str, c: dict, events=None) -> "EmailChannel":
        if c.get("url"):
            return cls(name, c["url"], events)
        for key in ("smtp_host", "from", "to"):
            if not c.get(key):
                raise FluxaError(f"notification channel {name!r} (email) needs {key!r} (or an apprise mailto:// url)")
        to = c["to"] if isinstance(c["to"], list) else [c["to"]]
        auth = ""
        if c.get("user"):
            auth = quote(str(c["user"]), safe="") + (":" + quote(str(c.get("password", "")), safe="")) + "@"
        params = {"from": c["from"], "to": ",".join(to), "mode": c.get("mode", "starttls")}
        if not auth:
            params.update({"user": "", "pass": ""})
        port = c.get("smtp_port", 587)
        return cls(name, f"mailto://{auth}{c['smtp_host']}:{port}?{urlencode(params)}", events)


class PagerDutyChannel(Channel):
    """PagerDuty Events API v2: one alert per incident and clock (pagerduty.py). Pages on opening
    and on escalations (trigger), acknowledges and resolves every alert the incident paged; the
    key of each message is chosen when it is queued (``msg.extra["pagerduty"]``)."""

    type = "pagerduty"
    needs_incident = True

    def __init__(self, name: str, routing_key: str, events_url: str = PAGERDUTY_EVENTS_URL,
                 severity_map: dict | None = None, source: str = "fluxa-integrity", timeout: float = 10.0):
        super().__init__(name, None)
        self.routing_key, self.events_url, self.source, self.timeout = routing_key, events_url, source, timeout
        self.severity_map = {**DEFAULT_PD_SEVERITY, **(severity_map or {})}

    def wants(self, msg: Message) -> bool:
        return msg.pagerduty_action is not None

    def event(self, msg: Message) -> dict:
        key = (msg.extra.get("pagerduty") or {}).get("dedup_key") or pagerduty.legacy_key(msg.incident_id)
        payload = (pagerduty.trigger_payload(msg, self.source, self.severity_map)
                   if msg.pagerduty_action == "trigger" else None)
        return pagerduty.event(self.routing_key, msg.pagerduty_action, key, payload)

    def send(self, msg: Message) -> None:
        post_json(self.events_url, self.event(msg), self._where(), self.timeout, "PagerDuty")

    def _where(self) -> str:
        return f"{self.name} ({self.type} to {endpoint(self.events_url)})"


class SlackBlocksChannel(Channel):
    """The incident's channel: Block Kit messages POSTed as JSON to a Slack incoming webhook (or
    any receiver), each naming the incident's channel (slack_blocks.py)."""

    type = "slack-channel"
    needs_incident = True

    def __init__(self, name: str, webhook_url: str, channel: str = slack_blocks.DEFAULT_CHANNEL,
                 events: list[str] | None = None, timeout: float = 10.0):
        super().__init__(name, list(events) if events is not None else list(slack_blocks.KINDS))
        self.webhook_url, self.channel_template, self.timeout = webhook_url, channel, timeout

    def payload(self, msg: Message) -> dict:
        inc = msg.extra.get("incident") or {"id": msg.incident_id, "title": ""}
        return slack_blocks.message(msg, slack_blocks.channel_name(self.channel_template, inc))

    def send(self, msg: Message) -> None:
        post_json(self.webhook_url, self.payload(msg), f"{self.name} ({self.type} to {endpoint(self.webhook_url)})",
                  self.timeout, "Slack")


_CHECKED = {"pagerduty": pagerduty.config_problems, "slack-channel": slack_blocks.config_problems}


def channel_from_config(c: dict, index: int) -> Channel:
    if not isinstance(c, dict):
        raise FluxaError(f"notifications[{index}]: expected a mapping with a type")
    kind = c.get("type")
    name = c.get("name") or f"{kind}-{index}"
    events = c.get("events")
    if kind in _CHECKED:
        problems = _CHECKED[kind](c)
        if problems:
            raise FluxaError(f"notification channel {name!r} ({kind}): " + "; ".join(problems),
                             "see docs/incidents.md, The incident channel: Slack and PagerDuty")
    try:
        if kind == "slack":
            return SlackChannel(name, c["webhook_url"], events)
        if kind == "webhook":
            return WebhookChannel(name, c["url"], events)
        if kind == "email":
            return EmailChannel.from_config(name, c, events)
        if kind == "pagerduty":
            return PagerDutyChannel(name, c["routing_key"], c.get("events_url", PAGERDUTY_EVENTS_URL),
                                    c.get("severity_map"), c.get("source", "fluxa-integrity"),
                                    float(c.get("timeout", 10)))
        if kind == "slack-channel":
            return SlackBlocksChannel(name, c["webhook_url"], c.get("channel", slack_blocks.DEFAULT_CHANNEL),
                                      events, float(c.get("timeout", 10)))
        if kind == "apprise":
            return AppriseChannel(name, c["url"], events)
    except KeyError as exc:
        raise FluxaError(f"notification channel {name!r} ({kind}) needs {exc.args[0]!r}",
                         "see docs/incidents.md, Notifications") from exc
    raise FluxaError(f"notifications[{index}]: unknown type {kind!r}",
                     "slack, slack-channel, email, pagerduty, webhook or apprise")


def load_channels(config: dict | None = None) -> list[Channel]:
    cfg = load_config_file() if config is None else config
    return [channel_from_config(c, i) for i, c in enumerate(cfg.get("notifications") or [])]


def retry_settings(config: dict | None = None) -> dict:
    """In-process attempts with exponential backoff, then later rounds (tick / notify-retry)."""
    cfg = load_config_file() if config is None else config
    r = cfg.get("notify_retry") or {}
    return {"attempts": int(r.get("attempts", 3)), "backoff_seconds": float(r.get("backoff_seconds", 0.5)),
            "max_rounds": int(r.get("max_rounds", 10)), "later_minutes": float(r.get("later_minutes", 5))}
