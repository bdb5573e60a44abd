"""The schedule's grid: when each occurrence of a job is due, optionally on a compressed clock.

Shape: every periodic job has an ``interval``; its occurrences are the instants
``ANCHOR + k * interval`` (k an integer), so every process computes the same occurrences for the
same job without talking to the others - the occurrence is what a run claims in the history.
ANCHOR is Monday 2024-01-01 00:00 UTC: daily jobs fall at 00:00 UTC, weekly ones on Mondays.

``time_scale`` compresses the schedule (``--time-scale 3600``: an hour of schedule per second):
intervals are divided by it and floored at MIN_INTERVAL_S so a scaled job cannot spin. Only the
schedule is compressed; RPO targets, incident clocks and lease expiry stay in real time.
Pure functions, no failure modes beyond ValueError on a non-positive interval or scale.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

UTC = timezone.utc
ANCHOR = datetime(2024, 1, 1, tzinfo=UTC)
MIN_INTERVAL_S = 1.0


def scaled(interval: timedelta, time_scale: float = 1.0) -> timedelta:
    """The real interval of a job whose policy cadence is ``interval``."""
    if time_scale <= 0:
        raise ValueError(f"time scale must be positive, got {time_scale}")
    if interval.total_seconds() <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    # whole milliseconds: the scheduler's trigger and this grid then agree to the microsecond
    return timedelta(milliseconds=round(max(interval.total_seconds() / time_scale, MIN_INTERVAL_S) * 1000))


def floor(at: datetime, interval: timedelta) -> datetime:
    """The latest occurrence at or before ``at``."""
    return ANCHOR + ((at - ANCHOR) // interval) * interval  # exact: timedeltas are whole microseconds


def next_after(at: datetime, interval: timedelta) -> datetime:
    """The first occurrence strictly after ``at``."""
    return floor(at, interval) + interval


def between(after: datetime | None, upto: datetime, interval: timedelta) -> int:
    """How many occurrences fall in ``(after, upto]`` (both on the grid); 1 when ``after`` is None."""
    if after is None:
        return 1
    return max(0, round((upto - after).total_seconds() / interval.total_seconds()))
