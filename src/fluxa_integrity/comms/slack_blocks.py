"""The incident channel's messages as Slack Block Kit JSON, and the ``slack-channel`` config.

Shape of one message (https://api.slack.com/block-kit):

    {"channel": "#inc-12-duplicate-emails",          # the incident's channel, from a template
     "text": "[P1] Incident 12: escalated to ...",   # the notification's fallback text
     "blocks": [
       {"type": "header", "text": {"type": "plain_text", "text": <subject, <= 150>}},
       {"type": "section", "text": {"type": "mrkdwn", "text": <what happened, <= 3000>},
        "fields": [<= 10 mrkdwn fields, each <= 2000: Severity, Phase, Status, Data classes,
                   Acknowledge, Resolve, Escalated to>]},
       {"type": "context", "elements": [{"type": "mrkdwn", "text": "Incident 12 · db ... · time · event"}]}]}

The incident's channel is the stream key: every message of one incident carries the same
``channel`` (``#inc-{id}-{slug}`` by default; placeholders ``{id}``, ``{slug}`` - the title, lower
case, dashes, at most 40 characters - ``{db}`` and ``{severity}``), so a receiver files them in one
place, and a Slack app that routes by ``channel`` gives each incident its own channel. Texts are
cut (with "…") to Slack's limits and ``&``, ``<``, ``>`` are escaped in mrkdwn, so an incident
title can never break the message or mention ``<!channel>``. Pure functions; the channel that
sends them is ``SlackBlocksChannel`` in notify.py.
"""

from __future__ import annotations

import re
import string
from datetime import datetime
from urllib.parse import urlsplit

HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FIELDS_MAX = 10
CONTEXT_ELEMENTS_MAX = 10
CHANNEL_NAME_MAX = 80
DEFAULT_CHANNEL = "#inc-{id}-{slug}"
PLACEHOLDERS = ("id", "slug", "db", "severity")
# the notification kinds worth a human's attention in the incident's channel (all of them today)
KINDS = ("opened", "status", "severity", "escalation", "clock", "phase", "assigned", "communication",
         "recovery", "containment", "merged")
FIELDS = {"name", "type", "webhook_url", "channel", "events", "timeout"}


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def escape(text: str) -> str:
    """mrkdwn's three control characters (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slug(title: str, max_len: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", (title or "").lower()).strip("-")
    return s[:max_len].rstrip("-") or "incident"


def channel_name(template: str, inc: dict) -> str:
    """The incident's channel: the template filled, lower case, characters Slack refuses in a
    channel name turned into dashes, at most 80 characters after the ``#``."""
    raw = template.format(id=inc.get("id", "?"), slug=slug(inc.get("title", "")), db=inc.get("database") or "nodb",
                          severity=inc.get("severity") or "")
    hash_ = "#" if raw.startswith("#") else ""
    name = re.sub(r"[^a-z0-9_-]+", "-", raw.lstrip("#").lower()).strip("-")
    return hash_ + name[:CHANNEL_NAME_MAX]


def _hm(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")


def _left(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m = int(abs(seconds)) // 60
    return f"{m // 60}h{m % 60:02d}m"


def clock_text(c: dict) -> str:
    state = c.get("state")
    if state == "running":
        return f"due {_hm(c.get('deadline'))} (in {_left(c.get('left'))})"
    if state == "overdue":
        return f":warning: overdue since {_hm(c.get('deadline'))} ({_left(c.get('left'))} ago)"
    if state == "met":
        return f"met at {_hm(c.get('stopped_at'))}"
    if state == "missed":
        return f"missed: due {_hm(c.get('deadline'))}, stopped {_hm(c.get('stopped_at'))}"
    return str(state or "-")


def _field(label: str, value: str) -> dict:
    return {"type": "mrkdwn", "text": clip(f"*{label}*\n{escape(value)}", FIELD_TEXT_MAX)}


def fields(inc: dict, severity: str) -> list[dict]:
    label = inc.get("severity_label")
    out = [_field("Severity", f"{severity} ({label})" if label else severity)]
    if inc:
        ph = inc.get("phase")
        out.append(_field("Phase", f"{ph['name']} ({ph['state']})" if ph else "all phases done"))
        out.append(_field("Status", inc.get("status") or "-"))
        out.append(_field("Data classes", ", ".join(inc.get("data_classes") or []) or "not yet known"))
        for c in inc.get("clocks") or []:
            out.append({"type": "mrkdwn", "text": clip(f"*{c['clock'].capitalize()} clock*\n{clock_text(c)}",
                                                      FIELD_TEXT_MAX)})
        if inc.get("escalated_to"):
            out.append(_field("Escalated to", ", ".join(inc["escalated_to"])))
    return out[:FIELDS_MAX]


def message(msg, channel: str) -> dict:
    """The Block Kit message of one notification (``msg``: comms.notify.Message, whose
    ``extra["incident"]`` is the incident as it was when the message was queued)."""
    inc = msg.extra.get("incident") or {}
    context = [f"Incident *{msg.incident_id}*"]
    if inc.get("drill"):
        context.insert(0, "*DRILL*")
    if inc.get("database"):
        context.append(f"db `{escape(inc['database'])}`")
    context += [escape(channel), _hm(inc.get("at")), f"event `{escape(msg.kind)}`"]
    return {
        "channel": channel,
        "text": clip(msg.subject, 4000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(msg.subject, HEADER_MAX), "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(escape(msg.body or msg.subject),
                                                                        SECTION_TEXT_MAX)},
             "fields": fields(inc, msg.severity)},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(" · ".join(context), FIELD_TEXT_MAX)}]},
        ],
    }


def config_problems(c: dict) -> list[str]:
    """What is wrong with a ``type: slack-channel`` entry (empty: nothing)."""
    out = [f"unknown field {k!r} (fields: {', '.join(sorted(FIELDS - {'name', 'type'}))})" for k in c
           if k not in FIELDS]
    url = c.get("webhook_url")
    u = urlsplit(url) if isinstance(url, str) else None
    if url is None:
        out.append("needs 'webhook_url' (a Slack incoming webhook, or any receiver of Block Kit JSON)")
    elif u is None or u.scheme not in ("http", "https") or not u.hostname:
        out.append(f"'webhook_url' must be an http(s) URL, got {url!r}")
    tpl = c.get("channel", DEFAULT_CHANNEL)
    if not isinstance(tpl, str):
        out.append(f"'channel' must be a template string such as {DEFAULT_CHANNEL!r}")
    else:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(tpl) if f is not None}
        except ValueError as exc:
            names = None
            out.append(f"'channel' {tpl!r} is not a template: {exc}")
        if names is not None:
            unknown = sorted(names - set(PLACEHOLDERS))
            if unknown:
                out.append(f"'channel' {tpl!r}: unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}"
                           f" (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
            elif "id" not in names:
                out.append(f"'channel' {tpl!r} has no {{id}}: every incident would share one channel")
            elif not re.fullmatch(r"#?[a-z0-9_{}-]+", tpl):
                out.append(f"'channel' {tpl!r}: a Slack channel name is lower case letters, digits, '-' and '_'")
    ev = c.get("events")
    if ev is not None:
        if not isinstance(ev, list) or not ev:
            out.append(f"'events' must be a non-empty list of: {', '.join(KINDS)}")
        else:
            out += [f"'events': unknown event {e!r} (known: {', '.join(KINDS)})" for e in ev if e not in KINDS]
    if "timeout" in c and (not isinstance(c["timeout"], (int, float)) or c["timeout"] <= 0):
        out.append("'timeout' must be a number of seconds > 0")
    return out
