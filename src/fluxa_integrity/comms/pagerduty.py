"""PagerDuty Events API v2: the dedup key of a page, the event's JSON and the channel's config.

Shape of an event (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):
``{"routing_key", "event_action": trigger|acknowledge|resolve, "dedup_key", "payload": {"summary"
(<= 1024 chars), "source", "severity": critical|error|warning|info, "timestamp", "component",
"group", "class", "custom_details"}}``; ``payload`` only on ``trigger`` (acknowledge and resolve
name the alert by its dedup key alone).

One alert per incident AND clock: ``fluxa-<database>-<incident>-<clock>`` (``acknowledge`` or
``resolve``), so the page that asks for an acknowledgement and the page that says the resolve
target was missed are two alerts, each acknowledged and resolved on its own key. Which clock a
page belongs to, and which keys an acknowledge or resolve goes to, is the incident engine's
(incidents/notifications.py); this module only names and builds. Keys of pages queued before
this scheme (``fluxa-incident-<id>``) are still acknowledged and resolved under their own name.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_SEVERITY = {"P1": "critical", "P2": "error"}
SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
FIELDS = {"name", "type", "routing_key", "events_url", "severity_map", "source", "timeout"}


def dedup_key(database: str | None, incident_id: int, clock: str) -> str:
    db = re.sub(r"[^A-Za-z0-9_-]", "_", database or "nodb")
    return f"fluxa-{db}-{incident_id}-{clock}"[:DEDUP_KEY_MAX]


def legacy_key(incident_id: int) -> str:
    """The one key per incident used before pages were per clock."""
    return f"fluxa-incident-{incident_id}"


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def event(routing_key: str, action: str, key: str, payload: dict | None = None) -> dict:
    ev = {"routing_key": routing_key, "event_action": action, "dedup_key": key}
    if action == "trigger":
        ev["payload"] = payload
    return ev


def trigger_payload(msg, source: str, severity_map: dict) -> dict:
    """The ``payload`` of a trigger from a Message (``msg.extra["incident"]``: the incident as it
    was when the page was queued; ``msg.extra["pagerduty"]``: its key and clock)."""
    inc = msg.extra.get("incident") or {}
    page = msg.extra.get("pagerduty") or {}
    title = inc.get("title")
    summary = msg.subject if not title or title in msg.subject else f"{msg.subject} - {title}"
    clock = next((c for c in inc.get("clocks") or [] if c.get("clock") == page.get("clock")), None)
    details = {"incident": msg.incident_id, "title": title, "event": msg.kind, "clock": page.get("clock"),
               "status": inc.get("status"), "severity": msg.severity, "phase": (inc.get("phase") or {}).get("name"),
               "data_classes": inc.get("data_classes"), "escalated_to": inc.get("escalated_to"),
               "deadline": clock.get("deadline") if clock else None, "drill": inc.get("drill"),
               "detail": clip(msg.body, 2000)}
    payload = {"summary": clip(summary, SUMMARY_MAX), "source": source,
               "severity": severity_map.get(msg.severity, "warning"),
               "component": ",".join(inc.get("collections") or []) or "data",
               "group": inc.get("database") or "unknown database", "class": msg.kind,
               "custom_details": {k: v for k, v in details.items() if v not in (None, [], "")}}
    if inc.get("at"):
        payload["timestamp"] = inc["at"]
    return payload


def config_problems(c: dict) -> list[str]:
    """What is wrong with a ``type: pagerduty`` entry (empty: nothing)."""
    out = [f"unknown field {k!r} (fields: {', '.join(sorted(FIELDS - {'name', 'type'}))})" for k in c
           if k not in FIELDS]
    key = c.get("routing_key")
    if not isinstance(key, str) or not key.strip():
        out.append("needs 'routing_key' (the integration key of an Events API v2 integration)")
    elif re.search(r"\s", key):
        out.append("'routing_key' has whitespace in it")
    url = c.get("events_url", PAGERDUTY_EVENTS_URL)
    u = urlsplit(url) if isinstance(url, str) else None
    if u is None or u.scheme not in ("http", "https") or not u.hostname:
        out.append(f"'events_url' must be an http(s) URL, got {url!r}")
    sm = c.get("severity_map", {})
    if not isinstance(sm, dict):
        out.append("'severity_map' must map a severity level to a PagerDuty severity, e.g. {P1: critical}")
    else:
        out += [f"severity_map {lvl}: {v!r} is not a PagerDuty severity ({', '.join(SEVERITIES)})"
                for lvl, v in sm.items() if v not in SEVERITIES]
    if "source" in c and (not isinstance(c["source"], str) or not c["source"].strip()):
        out.append("'source' must be a non-empty string")
    if "timeout" in c and (not isinstance(c["timeout"], (int, float)) or c["timeout"] <= 0):
        out.append("'timeout' must be a number of seconds > 0")
    return out
