"""Leases: which process runs a job right now, in the state store so every ``serve`` sees it.

Shape: one ``service_leases`` row per job, ``(job, holder, expires_at)``. ``take`` is a
conditional UPDATE (the row is ours already, or expired) and, when no row exists yet, an INSERT
whose primary key refuses a second taker - so of two processes exactly one gets the job, on
SQLite and PostgreSQL alike. The holder renews every lease it holds (``renew``) while it lives;
a holder that dies (kill -9) stops renewing and its leases expire after ``ttl`` seconds, when
the next taker gets them and learns whose they were (``Taken.took_over``), so it can mark that
holder's unfinished run interrupted. Expiry compares the takers' clocks: processes sharing a
store must have clocks within a small fraction of the ttl of each other.

Failure: a store error propagates (SQLAlchemyError); the caller records nothing and tries later.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from ..store import Store
from ..store.service_models import Lease

UTC = timezone.utc


def new_holder() -> str:
    """``host:pid:random`` - unique per process start, readable in `jobs list`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; the store only ever holds UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass
class Taken:
    ok: bool
    took_over: str | None = None  # the expired holder this take replaced
    holder: str | None = None  # who holds it when not ok


def take(store: Store, job: str, holder: str, ttl: float) -> Taken:
    now = datetime.now(UTC)
    with store.session() as s:
        before = s.get(Lease, job)
        prev_holder, prev_expiry = (before.holder, aware(before.expires_at)) if before is not None else (None, None)
    with store.session() as s:  # the conditional UPDATE is the decision; the read above only labels it
        res = s.execute(update(Lease).where(Lease.job == job, or_(Lease.holder == holder, Lease.expires_at < now))
                        .values(holder=holder, expires_at=now + timedelta(seconds=ttl), acquired_at=now))
        if res.rowcount == 1:
            stale = prev_holder if prev_holder not in (None, holder) and prev_expiry < now else None
            return Taken(True, took_over=stale)
    if prev_holder is not None:
        return Taken(False, holder=prev_holder)
    try:
        with store.session() as s:
            s.add(Lease(job=job, holder=holder, expires_at=now + timedelta(seconds=ttl), acquired_at=now))
    except IntegrityError:
        return Taken(False, holder=holder_of(store, job))
    return Taken(True)


def renew(store: Store, holder: str, ttl: float) -> int:
    """Push out the expiry of every lease ``holder`` holds; how many it holds."""
    now = datetime.now(UTC)
    with store.session() as s:
        return s.execute(update(Lease).where(Lease.holder == holder)
                         .values(expires_at=now + timedelta(seconds=ttl))).rowcount


def release(store: Store, job: str, holder: str) -> None:
    """Expire the lease now (only if ``holder`` still holds it)."""
    with store.session() as s:
        s.execute(update(Lease).where(Lease.job == job, Lease.holder == holder)
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))


def release_all(store: Store, holder: str) -> None:
    with store.session() as s:
        s.execute(update(Lease).where(Lease.holder == holder).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))


def holder_of(store: Store, job: str) -> str | None:
    with store.session() as s:
        row = s.get(Lease, job)
        return row.holder if row is not None and aware(row.expires_at) >= datetime.now(UTC) else None


def live(store: Store) -> dict[str, Lease]:
    """job -> its unexpired lease."""
    now = datetime.now(UTC)
    with store.session() as s:
        return {r.job: r for r in s.scalars(select(Lease)) if aware(r.expires_at) >= now}
