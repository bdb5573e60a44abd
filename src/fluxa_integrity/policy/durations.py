"""Durations as the policy writes them: ``15m``, ``1h``, ``72h``, ``30d``, ``90d``, ``1h30m``.

Kept as strings in the policy (so a dump reads like the file) and parsed where needed.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")


def parse_duration(text: str) -> timedelta:
    """``"15m"`` -> ``timedelta(minutes=15)``. Raises ValueError saying what is expected."""
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string like 15m, 1h or 30d, got {text!r}")
    value = text.strip().lower()
    if not _WHOLE.fullmatch(value):
        raise ValueError(f"invalid duration {text!r}: expected a whole number followed by a unit "
                         "(s, m, h, d, w), e.g. 15m, 1h, 72h, 30d, or combined like 1h30m")
    delta = timedelta()
    for number, unit in _PART.findall(value):
        delta += timedelta(**{_UNITS[unit]: int(number)})
    return delta


def format_duration(delta: timedelta) -> str:
    """The shortest policy spelling of ``delta`` (``timedelta(hours=72)`` -> ``"3d"``)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)
