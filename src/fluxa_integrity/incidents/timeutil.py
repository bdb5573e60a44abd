"""UTC everywhere: SQLite hands back naive datetimes, PostgreSQL aware ones; both mean UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..errors import FluxaError
from ..policy.durations import parse_duration

UTC = timezone.utc


def utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """One spelling for hashing and JSON: microseconds, +00:00."""
    return utc(dt).isoformat(timespec="microseconds") if dt is not None else None


def parse_when(text: str | None, base: datetime | None = None) -> datetime:
    """``None`` -> now; ``+90m`` / ``+1h30m`` -> base (default now) plus the duration; else ISO 8601
    (naive means UTC)."""
    if not text:
        return now()
    text = text.strip()
    if text.startswith("+"):
        try:
            return (base or now()) + parse_duration(text[1:])
        except ValueError as exc:
            raise FluxaError(f"invalid time {text!r}: {exc}") from exc
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError as exc:
        raise FluxaError(f"invalid time {text!r}", "use ISO 8601 (2026-03-02T09:00:00Z) or +DURATION (+1h)") from exc


def fmt_delta(delta: timedelta | None) -> str:
    if delta is None:
        return "n/a"
    seconds = int(delta.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{sign}{h}h{m:02d}m" + (f"{s:02d}s" if s else "")
