"""Time travel is for drills: a time later than the real clock is refused on a real incident.

Every write takes ``at`` (replaying a log, scripted drills, tests), but a future ``at`` would put
events that have not happened into a real incident's record (``tick --at +8h`` once recorded
breaches and escalations hours early). So: a time more than ``SKEW`` after now is *simulated*;
it is allowed only on a drill incident (``incident open --drill``), and every timeline row
written at a simulated time carries ``simulated: true``. Past times stay allowed everywhere.
Failure: FluxaError naming the time and what to do instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..errors import FluxaError
from .timeutil import iso, now

SKEW = timedelta(minutes=1)  # clocks of two machines may disagree this much without it being time travel


def simulated(at: datetime) -> bool:
    return at > now() + SKEW


def check(at: datetime, drill: bool, what: str, incident_id: int | None = None) -> None:
    if simulated(at) and not drill:
        whose = f"incident {incident_id}" if incident_id is not None else "a real incident"
        raise FluxaError(f"cannot {what} at {iso(at)[:19]}Z, in the future: it would write events that have not "
                         f"happened into {whose}'s record",
                         "time travel is for drills: open one with `incident open --drill` (or `incident intake "
                         "--drill`), or drive `incident tick --at ... --simulate`, which only moves drills")
