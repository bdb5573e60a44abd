"""Rendering HTML for the console and the status page: one Jinja2 environment over the templates
shipped in web/templates (autoescaped), and the filters the pages share (durations, times).

No JavaScript framework and no CDN: the pages are plain HTML forms styled by web/static/console.css,
served by the app itself at /static.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).parent
STATIC = HERE / "static"


def duration(seconds) -> str:
    """``3725`` -> ``1h 02m``; negative values as their magnitude (the caller says "overdue")."""
    if seconds is None:
        return "-"
    s = abs(int(seconds))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d}d {h:02d}h"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {sec:02d}s" if m < 10 else f"{m}m"


def when(value) -> str:
    """An ISO 8601 time (or datetime) as ``2026-11-26 19:38 UTC``."""
    if not value:
        return "-"
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return f"{t:%Y-%m-%d %H:%M} UTC"


env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html", "xml"]),
                  trim_blocks=True, lstrip_blocks=True)
env.filters["duration"] = duration
env.filters["when"] = when
env.filters["extract"] = lambda key, names: names.get(key, key)  # a data class's title from its name


def page(name: str, status: int = 200, headers: dict | None = None, **context) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(**context), status_code=status, headers=headers)
