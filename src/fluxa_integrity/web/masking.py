"""Masking what a response must not show: emails (to viewers) and secrets (to everyone).

Shape: ``mask(data, emails=...)`` walks a JSON-ready value (dicts, lists, strings, numbers) and
returns a copy: a value under a key that names a secret (password, secret, token, api_key, ...) is
``"***"``; a URI with credentials inside any string keeps its user and loses its password (the
same ``redact`` the CLI prints URIs with); with ``emails=True`` every address becomes its first
character, ``***`` and its domain (``j***@example.com``), so a viewer still sees that users of one
domain are affected but not who. Keys are never masked, only values. Nothing here raises: a value
of another type is returned as it is.
"""

from __future__ import annotations

import re
from typing import Any

from ..mongo.connection import redact

MASK = "***"
EMAIL = re.compile(r"(?<![\w.%+-])([A-Za-z0-9_%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
URI_WITH_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]+:[^\s@]+@[^\s/?#]+")
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|routing[_-]?key|authorization|credential)",
                        re.IGNORECASE)


def mask_text(text: str, emails: bool) -> str:
    text = URI_WITH_CREDENTIALS.sub(lambda m: redact(m.group(0)), text)
    return EMAIL.sub(lambda m: f"{m.group(1)}{MASK}@{m.group(2)}", text) if emails else text


def mask(data: Any, emails: bool) -> Any:
    if isinstance(data, str):
        return mask_text(data, emails)
    if isinstance(data, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_KEY.search(k) and v not in (None, "") else mask(v, emails))
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask(v, emails) for v in data]
    return data
