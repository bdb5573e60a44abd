"""Robust baselines and verdicts: is this interval's value out of line with its own history?

Shape: pure functions over ``(start, value)`` history points. ``learn`` takes the points of one
metric inside the training window and returns a ``Baseline`` - the median and a robust scale
(1.4826 x MAD, the standard deviation's robust twin) - learned from the same hour of day when
that hour has history on ``seasonal_min_days`` distinct days and at least ``min_history`` points,
else from the newest ``recent`` points. ``judge``
compares a value with it: a spike or a drop when the value is further from the median than
``max(z * scale, min_change)``.

A stop is judged apart: a bursty load has a band too wide to ever call a count of zero a drop
(median 132 writes an hour with a robust sigma of 100 tolerates 0). So a count of 0 is a ``drop``
when every interval of the training window had at least ``silence_min`` writes (the baseline's
``lowest``): zero is then below anything the history has seen, by a margin.

The scale has a floor, because a quiet metric has a MAD of zero and would call any change an
anomaly: for counts the Poisson noise of the median (``sqrt(median)``, at least 1), for shares
the binomial noise of the interval's sample (``sqrt(p(1-p)/n)``). Medians and MADs ignore the
outliers they are meant to catch, so an anomaly in the history does not widen the band much.
Fewer than ``min_history`` points: no baseline (``learn`` returns None), never a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import numpy as np

MAD_TO_SIGMA = 1.4826


@dataclass
class Baseline:
    n: int  # history points used
    median: float
    scale: float  # robust sigma, floored
    seasonal: bool  # learned from the same hour of day only
    source: str = "history"  # history | profile
    lowest: float | None = None  # counts: the smallest value of the history used (the stop rule)

    def as_dict(self) -> dict:
        return {"n": self.n, "median": round(self.median, 4), "scale": round(self.scale, 4),
                "seasonal": self.seasonal, "source": self.source}


@dataclass
class Verdict:
    value: float
    baseline: Baseline
    threshold: float  # the distance from the median that is tolerated
    direction: str | None  # spike | drop | None (within the band)

    @property
    def z(self) -> float:
        return (self.value - self.baseline.median) / self.baseline.scale if self.baseline.scale else 0.0

    def as_dict(self) -> dict:
        return {"value": round(self.value, 4), "expected": round(self.baseline.median, 4),
                "band": [round(self.baseline.median - self.threshold, 4), round(self.baseline.median + self.threshold, 4)],
                "z": round(self.z, 2), "direction": self.direction, **{f"baseline_{k}": v for k, v in
                                                                        self.baseline.as_dict().items()}}


def count_floor(median: float) -> float:
    return math.sqrt(max(abs(median), 1.0))  # abs: a count's change may be negative


def share_floor(p: float, n: int) -> float:
    # p clamped away from 0 and 1: a share that was always 0 can still move by one document in n
    p = min(max(p, 1.0 / max(n, 1)), 1 - 1.0 / max(n, 1)) if n > 1 else 0.5
    return math.sqrt(p * (1 - p) / max(n, 1))


def robust(values: Iterable[float]) -> tuple[float, float]:
    """(median, 1.4826 x MAD)."""
    arr = np.asarray(list(values), dtype=float)
    med = float(np.median(arr))
    return med, MAD_TO_SIGMA * float(np.median(np.abs(arr - med)))


def learn(points: list[tuple[datetime, float]], at: datetime, *, min_history: int, seasonal_min_days: int,
          kind: str = "count", sample: int = 0, recent: int = 0) -> Baseline | None:
    """The baseline of a metric for the interval starting ``at``; ``kind`` count or share (then
    ``sample`` is the size of the interval's sample, for the noise floor)."""
    if len(points) < min_history:
        return None
    same_hour = [(t, v) for t, v in points if t.hour == at.hour]
    seasonal = len({t.date() for t, _ in same_hour}) >= seasonal_min_days and len(same_hour) >= min_history
    # without seasonality the newest points: a growing load (sign-ups) must not be judged against last week
    use = same_hour if seasonal else sorted(points)[-recent:] if recent else points
    med, sigma = robust(v for _, v in use)
    floor = count_floor(med) if kind == "count" else share_floor(med, sample)
    # the whole training window, not only the baseline's points: zero must be below anything the
    # window has seen (a quiet start, a weekend) for a stop to be news
    lowest = min(v for _, v in points) if kind == "count" else None
    return Baseline(len(use), med, max(sigma, floor), seasonal, lowest=lowest)


def judge(value: float, base: Baseline, z: float, min_change: float, silence_min: float | None = None) -> Verdict:
    threshold = max(z * base.scale, min_change)
    delta = value - base.median
    direction = "spike" if delta > threshold else "drop" if -delta > threshold else None
    if direction is None and silence_min and value == 0 and base.lowest is not None and base.lowest >= silence_min:
        direction = "drop"  # a stop: zero where every interval of the history had at least silence_min
    return Verdict(value, base, threshold, direction)
