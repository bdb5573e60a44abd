"""A stop of writes is a drop even where the load is too bursty for the band to call zero one
(monitors/baseline.py; issue 11 item 3: 'inserts drop to 0' was found 0% of the time)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from fluxa_integrity.monitors.baseline import judge, learn
from fluxa_integrity.policy import default_policy

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _bursty(n: int, low: int, seed: int = 3) -> list[tuple[datetime, float]]:
    # heavy-tailed hourly counts, never under ``low``: a robust sigma as large as the median
    rng = random.Random(seed)
    return [(T0 + timedelta(hours=i), float(low + int(rng.paretovariate(1.2) * 40))) for i in range(n)]


def _verdict(points, value, silence_min):
    m = default_policy().monitors
    at = points[-1][0] + timedelta(hours=1)
    base = learn(points, at, min_history=m.min_history, seasonal_min_days=10 ** 6, recent=m.recent_history)
    return judge(value, base, m.z, m.min_volume_change, silence_min), base


def test_zero_after_a_window_that_never_went_below_the_floor_is_a_drop():
    points = _bursty(200, low=12)
    v, base = _verdict(points, 0.0, silence_min=5)
    assert base.median - v.threshold < 0  # the band alone tolerates zero: without the rule, no verdict
    assert v.direction == "drop"
    assert _verdict(points, 0.0, silence_min=0)[0].direction is None  # 0 turns the rule off
    assert _verdict(points, 1.0, silence_min=5)[0].direction is None  # one write is not a stop


def test_zero_is_not_news_where_the_window_has_seen_near_zero():
    points = _bursty(200, low=12)
    points[5] = (points[5][0], 2.0)  # one quiet hour long before the recent baseline, inside the window
    assert _verdict(points, 0.0, silence_min=5)[0].direction is None
    assert default_policy().monitors.silence_min == 5  # the documented default
