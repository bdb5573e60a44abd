"""Server-rendered SVG charts for the console: a time chart (lines, an optional target line and
an optional band) and a stacked bar chart. No JavaScript, no library: a few hundred bytes of SVG
per series, drawn by the browser like any image and kept in the page.

Shape: ``time_chart(...)`` and ``bar_chart(...)`` return ``Markup`` (a ``<svg>`` element ready for
a Jinja2 template). Each chart carries a ``<title>`` and a ``<desc>`` (what it shows, in words, and
the latest value) referenced by ``aria-labelledby``, so a screen reader reads a sentence, not
coordinates; the page puts a small table beside it for the same reason. Every dot is a
``<circle>`` with ``data-t`` (ISO time) and ``data-v`` (the value) and a tooltip ``<title>``; the
target line carries ``data-v`` too, so the tests can read the values back from the SVG. A line of
more than ``DENSE`` points (a day of 1-minute slices) is drawn as its polyline only, with dots on
its marked points (over target, out of band) and its latest one: the page stays small.

Time axes: ticks at round steps (1 minute to 7 days, aligned on the UTC clock) chosen so that at
most ``MAX_TICKS`` fit, labelled ``HH:MM`` with the date under the first tick and under each
midnight. Value axes: round steps of 1, 2 or 5 x 10^k, or of durations (seconds, minutes, hours,
days) when ``y_format`` is ``"duration"``. ``None`` values break a line (nothing known there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import count
from typing import Callable, Sequence

from markupsafe import Markup, escape

from .pages import duration

UTC = timezone.utc
MAX_TICKS = 8
DENSE = 120  # a line with more points than this draws dots only where marked, and on its latest point
TIME_STEPS = [timedelta(seconds=s) for s in (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                                             172800, 604800)]
DURATION_STEPS = [1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
                  604800]
_ids = count(1)


@dataclass
class Line:
    """One series: ``points`` are ``(time, value or None)`` or ``(time, value, css class)``."""
    name: str
    points: Sequence[tuple]
    css: str = "s0"


@dataclass
class Band:
    """A band: ``(time, low, high)`` per point; a ``None`` low or high breaks it."""
    name: str
    points: Sequence[tuple]
    centre: bool = True  # also draw the middle (the baseline's median) as a dashed line
    mids: list = field(default_factory=list)  # (time, centre) per point, when centre


def fmt_value(v: float | None, kind: str = "number") -> str:
    if v is None:
        return "none"
    if kind == "duration":
        sign, a = "-" if v < 0 else "", abs(v)
        return sign + (f"{a:.1f}".rstrip("0").rstrip(".") + "s" if a < 60 else duration(a))
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:,.2f}"


def nice_step(span: float, kind: str = "number", ticks: int = 5) -> float:
    raw = max(span, 1e-9) / ticks
    if kind == "duration":
        return next((s for s in DURATION_STEPS if s >= raw), DURATION_STEPS[-1] * math.ceil(raw / DURATION_STEPS[-1]))
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def time_ticks(t0: datetime, t1: datetime) -> list[datetime]:
    span = t1 - t0
    step = next((s for s in TIME_STEPS if span / s <= MAX_TICKS), TIME_STEPS[-1])
    epoch = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday: week steps start on Mondays
    first = epoch + math.ceil((t0 - epoch) / step) * step
    out = []
    t = first
    while t <= t1:
        out.append(t)
        t += step
    return out


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def _label(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _svg(width: int, height: int, title: str, desc: str, body: list[str], css: str) -> Markup:
    n = next(_ids)
    return Markup(
        f'<svg class="chart {css}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart{n}-title chart{n}-desc" preserveAspectRatio="xMidYMid meet">'
        f'<title id="chart{n}-title">{escape(title)}</title><desc id="chart{n}-desc">{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def time_chart(*, title: str, desc: str, lines: Sequence[Line], t0: datetime, t1: datetime,
               band: Band | None = None, target: float | None = None, target_label: str | None = None,
               y_format: str = "number", width: int = 760, height: int = 230) -> Markup:
    """Lines over time from ``t0`` to ``t1`` (UTC), with an optional horizontal ``target`` and
    ``band``. Values below 0 are drawn at their place (an axis from the smallest value)."""
    left, right, top, bottom = 64, 14, 12, 40
    pw, ph = width - left - right, height - top - bottom
    values = [p[1] for ln in lines for p in ln.points if p[1] is not None]
    if band:
        values += [v for p in band.points for v in p[1:3] if v is not None]
    if target is not None:
        values.append(target)
    lo = min([0.0] + values)
    hi = max([lo + 1.0] + values)
    step = nice_step(hi - lo, y_format)
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi * 1.05 / step) * step if hi > 0 else 0.0
    hi = max(hi, lo + step)
    secs = max((t1 - t0).total_seconds(), 1.0)

    def x(t: datetime) -> float:
        return round(left + pw * min(max((t - t0).total_seconds() / secs, 0.0), 1.0), 1)

    def y(v: float) -> float:
        return round(top + ph * (1 - (v - lo) / (hi - lo)), 1)

    body = [f'<rect class="plot" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    v = lo
    while v <= hi + step / 1e6:
        body.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y(v)}" y2="{y(v)}"/>'
                    f'<text class="ytick" x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{escape(fmt_value(v, y_format))}</text>')
        v += step
    prev_day = None
    for t in time_ticks(t0, t1):
        body.append(f'<line class="grid" x1="{x(t)}" x2="{x(t)}" y1="{top}" y2="{top + ph}"/>'
                    f'<text class="xtick" x="{x(t)}" y="{top + ph + 15}" text-anchor="middle">{t:%H:%M}</text>')
        if prev_day != t.date():
            body.append(f'<text class="xdate" x="{x(t)}" y="{top + ph + 30}" text-anchor="middle">{t:%b %d}</text>')
            prev_day = t.date()
    if band is not None:
        for seg in _segments([(t, a, b) for t, a, b in band.points], lambda p: p[1] is not None and p[2] is not None):
            upper = " ".join(f"{x(t)},{y(b)}" for t, _, b in seg)
            lower = " ".join(f"{x(t)},{y(a)}" for t, a, _ in reversed(seg))
            body.append(f'<polygon class="band" points="{upper} {lower}"><title>{escape(band.name)}</title></polygon>')
        if band.centre and band.mids:
            for seg in _segments(band.mids, lambda p: p[1] is not None):
                body.append(f'<polyline class="centre" points="{" ".join(f"{x(t)},{y(m)}" for t, m in seg)}"/>')
    if target is not None:
        body.append(f'<line class="target" data-v="{target:g}" x1="{left}" x2="{left + pw}" y1="{y(target)}" '
                    f'y2="{y(target)}"><title>{escape(target_label or "target")}</title></line>'
                    f'<text class="target-label" x="{left + pw - 4}" y="{y(target) - 4}" text-anchor="end">'
                    f'{escape(target_label or "target")}</text>')
    for ln in lines:
        for seg in _segments(list(ln.points), lambda p: p[1] is not None):
            if len(seg) > 1:
                body.append(f'<polyline class="line {ln.css}" points="{" ".join(f"{x(p[0])},{y(p[1])}" for p in seg)}"/>')
        dense = len(ln.points) > DENSE
        known = [p for p in ln.points if p[1] is not None]
        for p in known:
            extra = p[2] if len(p) > 2 and p[2] else ""
            if dense and not extra and p is not known[-1]:
                continue  # a dense line is its polyline; marked points and the latest keep their dot
            r = 4 if extra else 2.6
            body.append(f'<circle class="pt {ln.css} {extra}" cx="{x(p[0])}" cy="{y(p[1])}" r="{r}" data-t="{_iso(p[0])}" '
                        f'data-v="{p[1]:g}"><title>{escape(ln.name)}: {escape(fmt_value(p[1], y_format))} at '
                        f'{_label(p[0])}</title></circle>')
    return _svg(width, height, title, desc, body, "time")


def bar_chart(*, title: str, desc: str, bars: Sequence[tuple[datetime, str, dict[str, float]]],
              categories: Sequence[str], width: int = 760, height: int = 230) -> Markup:
    """Stacked bars, one per ``(time, label, {category: value})``, in the order given; each
    category has the css class ``c<index>`` (the page's legend uses the same)."""
    left, right, top, bottom = 64, 14, 12, 40
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(v.values()) for _, _, v in bars]
    step = nice_step(max(totals + [1]))
    hi = max(math.ceil(max(totals + [1]) / step) * step, step)

    def y(v: float) -> float:
        return round(top + ph * (1 - v / hi), 1)

    body = [f'<rect class="plot" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    v = 0.0
    while v <= hi + step / 1e6:
        body.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y(v)}" y2="{y(v)}"/>'
                    f'<text class="ytick" x="{left - 6}" y="{y(v) + 4}" text-anchor="end">{escape(fmt_value(v))}</text>')
        v += step
    n = max(len(bars), 1)
    slot = pw / n
    bw = max(min(slot * 0.7, 40), 1)
    every = max(1, math.ceil(n / MAX_TICKS))
    for k, (t, label, values) in enumerate(bars):
        cx = left + slot * (k + 0.5)
        base = 0.0
        for c, cat in enumerate(categories):
            val = values.get(cat, 0)
            if not val:
                continue
            body.append(f'<rect class="bar c{c}" x="{round(cx - bw / 2, 1)}" y="{y(base + val)}" width="{round(bw, 1)}" '
                        f'height="{round(y(base) - y(base + val), 1)}" data-t="{_iso(t)}" data-category="{escape(cat)}" '
                        f'data-v="{val:g}"><title>{escape(label)}: {escape(cat)} {escape(fmt_value(val))}</title></rect>')
            base += val
        if k % every == 0:
            body.append(f'<text class="xtick" x="{round(cx, 1)}" y="{top + ph + 15}" text-anchor="middle">{t:%b %d %H:%M}</text>'
                        f'<text class="xdate" x="{round(cx, 1)}" y="{top + ph + 30}" text-anchor="middle">{escape(label)}</text>')
    return _svg(width, height, title, desc, body, "bars")


def _segments(points: list, ok: Callable[[tuple], bool]) -> list[list]:
    """Runs of consecutive points that ``ok`` accepts (a line breaks where a value is unknown)."""
    out, cur = [], []
    for p in points:
        if ok(p):
            cur.append(p)
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out
