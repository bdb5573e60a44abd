"""Filling the playbook's status-page templates.

A placeholder is an upper-case name with at least one underscore in square brackets
(``[CURRENT_TIME]``); the templates' own headings ``[SERVICE ISSUE]``, ``[UPDATE]`` and
``[RESOLVED]`` are text, not placeholders. A rendered text with a placeholder left is refused,
naming every missing one: a status page must never show ``[ESTIMATED_TIME]``.
"""

from __future__ import annotations

import re

from ..errors import FluxaError
from ..policy.models import Template

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\]")


def placeholders(text: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def render(template: Template, values: dict[str, str], name: str = "template") -> str:
    """Fill every placeholder from ``values`` (empty values count as missing)."""
    wanted = placeholders(template.text)
    missing = [p for p in wanted if not str(values.get(p) or "").strip()]
    if missing:
        raise FluxaError(f"the {name} template needs a value for {', '.join('[' + m + ']' for m in missing)}",
                         "pass " + " ".join(f"--set {m}=..." for m in missing))
    return template.fill(**{p: str(values[p]).strip() for p in wanted})
