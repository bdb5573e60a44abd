"""The notification outbox: queue in the incident's transaction, deliver after it committed.

Queuing with the change means a message is never lost when a process dies between the two;
delivering after the commit means a slow or dead channel never holds or rolls back the incident.
A delivery tries ``attempts`` times with exponential backoff; if it still fails the row stays
pending with a ``next_attempt_at`` (later rounds double, capped at an hour) and the failure goes
into the timeline. ``tick`` retries the due ones (not one queued moments ago and never tried: its
own change is delivering it); ``incident notify-retry`` retries all now.
``deliver`` returns counts and one ``failures`` entry per message that did not go out (channel,
where and why: the CLI prints them, so a failed channel is never silent while the command
itself still succeeds).

Queuing also decides what needs the incident: a channel with ``needs_incident`` (the Slack
incident channel, PagerDuty) gets its state (channel_context.py) in ``extra["incident"]``; a
PagerDuty message becomes one row per alert key - a trigger pages the clock it names
(``extra["clock"]``, else the running one: acknowledge until acknowledged, then resolve), an
acknowledge or resolve goes to every key this incident paged on that channel so far.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..comms import pagerduty
from ..comms.notify import Channel, ChannelError, Message, PagerDutyChannel
from ..policy.models import Policy
from ..store import Store
from ..store.incident_models import Incident, Notification
from . import channel_context, timeline
from .timeutil import iso, utc


FRESH_GRACE = timedelta(minutes=2)


def enqueue(s: Session, channels: list[Channel], msg: Message, at: datetime, policy: Policy | None = None) -> list[int]:
    wanted = [ch for ch in channels if ch.wants(msg)]
    inc = s.get(Incident, msg.incident_id) if wanted else None
    if inc is not None and policy is not None and any(ch.needs_incident for ch in wanted):
        msg = replace(msg, extra={**msg.extra, "incident": channel_context.snapshot(s, policy, inc, at)})
    rows = []
    for ch in wanted:
        for m in (_pages(s, ch, inc, msg) if isinstance(ch, PagerDutyChannel) and inc is not None else [msg]):
            row = Notification(incident_id=m.incident_id, channel=ch.name, kind=m.kind, subject=m.subject,
                               body=m.body, data={"severity": m.severity, "pagerduty_action": m.pagerduty_action,
                                                  "extra": m.extra},
                               status="pending", attempts=0, created_at=at, next_attempt_at=at)
            s.add(row)
            rows.append(row)
        s.flush()  # a trigger queued just now is a key the next acknowledge or resolve must reach
    return [r.id for r in rows]


def running_clock(inc: Incident) -> str:
    return "acknowledge" if inc.acknowledged_at is None else "resolve"


def _pages(s: Session, ch: Channel, inc: Incident, msg: Message) -> list[Message]:
    if msg.pagerduty_action == "trigger":
        clock = msg.extra.get("clock") or running_clock(inc)
        return [replace(msg, extra={**msg.extra, "pagerduty": {"dedup_key": pagerduty.dedup_key(inc.database, inc.id,
                                                                                                 clock),
                                                                "clock": clock}})]
    return [replace(msg, extra={**msg.extra, "pagerduty": {"dedup_key": key, "clock": clock}})
            for key, clock in paged_keys(s, inc.id, ch.name)]


def paged_keys(s: Session, incident_id: int, channel: str) -> list[tuple[str, str | None]]:
    """(dedup key, clock) of every alert this incident triggered on ``channel``, in order."""
    rows = s.scalars(select(Notification).where(Notification.incident_id == incident_id,
                                                Notification.channel == channel).order_by(Notification.id))
    out: dict[str, str | None] = {}
    for r in rows:
        d = r.data or {}
        if d.get("pagerduty_action") == "trigger":
            page = (d.get("extra") or {}).get("pagerduty") or {}
            out.setdefault(page.get("dedup_key") or pagerduty.legacy_key(incident_id), page.get("clock"))
    return list(out.items())


def _message(row: Notification) -> Message:
    d = row.data or {}
    return Message(row.incident_id, row.kind, row.subject, row.body, d.get("severity", ""),
                   d.get("pagerduty_action"), d.get("extra") or {})


def deliver(store: Store, channels: list[Channel], ids: list[int], at: datetime, settings: dict) -> dict:
    """Try each pending notification in ``ids``; record the outcome in its incident's timeline."""
    by_name = {c.name: c for c in channels}
    summary: dict = {"sent": 0, "failed": 0, "failures": []}
    for nid in ids:
        with store.session() as s:
            row = s.get(Notification, nid)
            if row is None or row.status != "pending":
                continue
            msg, channel_name = _message(row), row.channel
        channel = by_name.get(channel_name)
        error = None
        tries = 0
        if channel is None:
            error, tries = f"channel {channel_name!r} is no longer configured", 1
        else:
            for attempt in range(max(1, settings["attempts"])):
                tries += 1
                try:
                    channel.send(msg)
                    error = None
                    break
                except ChannelError as exc:
                    error = str(exc)
                    if attempt + 1 < settings["attempts"]:
                        time.sleep(settings["backoff_seconds"] * 2 ** attempt)
        with store.session() as s:
            row = s.get(Notification, nid)
            inc = s.get(Incident, row.incident_id, with_for_update=True)
            row.attempts += tries
            if error is None:
                row.status, row.sent_at, row.next_attempt_at, row.last_error = "sent", at, None, None
                timeline.append(s, inc, "notification_sent", at, channel=row.channel, notification=row.id,
                                about=row.kind, subject=row.subject)
                summary["sent"] += 1
            else:
                rounds = row.attempts // max(1, settings["attempts"])
                row.last_error = error
                if rounds >= settings["max_rounds"]:
                    row.status, row.next_attempt_at = "failed", None
                else:
                    wait = min(settings["later_minutes"] * 2 ** (rounds - 1), 60)
                    row.next_attempt_at = at + timedelta(minutes=wait)
                timeline.append(s, inc, "notification_failed", at, channel=row.channel, notification=row.id,
                                about=row.kind, error=error, attempts=row.attempts,
                                will_retry=row.status == "pending",
                                next_attempt_at=row.next_attempt_at)
                summary["failed"] += 1
                summary["failures"].append({"notification": row.id, "incident": row.incident_id,
                                            "channel": row.channel, "about": row.kind, "error": error,
                                            "attempts": row.attempts, "will_retry": row.status == "pending",
                                            "next_attempt_at": iso(row.next_attempt_at)})
    return summary


def pending_ids(store: Store, due_at: datetime | None = None, incident_id: int | None = None,
                incident_ids: list[int] | None = None) -> list[int]:
    with store.session() as s:
        q = select(Notification).where(Notification.status == "pending").order_by(Notification.id)
        if incident_id is not None:
            q = q.where(Notification.incident_id == incident_id)
        if incident_ids is not None:
            q = q.where(Notification.incident_id.in_(incident_ids))
        rows = s.scalars(q).all()
        return [r.id for r in rows if due_at is None or (_due(r, due_at) and not _being_delivered(r, due_at))]


def _due(r: Notification, due_at: datetime) -> bool:
    return r.next_attempt_at is None or utc(r.next_attempt_at) <= due_at


def _being_delivered(r: Notification, due_at: datetime) -> bool:
    """A message never tried and queued less than FRESH_GRACE ago is being delivered by the change
    that queued it (after its commit): a tick retrying it then would send it twice (seen with
    `serve`, whose incident-tick runs beside the automatic incidents). Past the grace it is a
    message whose process died before delivering, and the tick sends it."""
    return r.attempts == 0 and utc(r.created_at) > due_at - FRESH_GRACE
