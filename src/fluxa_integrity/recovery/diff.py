"""Field-level differences between two versions of a document, for reading a change.

``field_diff(old, new)`` -> ``{dotted.path: [old, new]}`` in the order fields appear (old's,
then new's additions). Sub-documents are walked so a change deep inside shows its own path;
arrays and scalars are compared whole. A missing field shows as None (the renderer shows
``null``); a field whose type changed (``"5"`` -> ``5``) differs even when Python says equal.
Pure: no I/O, never raises on odd values.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def field_diff(old: dict | None, new: dict | None, prefix: str = "") -> dict[str, list]:
    old, new = old or {}, new or {}
    out: dict[str, list] = {}
    for k in [*old.keys(), *(k for k in new.keys() if k not in old)]:
        a, b = old.get(k, _MISSING), new.get(k, _MISSING)
        path = f"{prefix}{k}"
        if hasattr(a, "items") and hasattr(b, "items"):
            out.update(field_diff(dict(a.items()), dict(b.items()), path + "."))
        elif not _same(a, b):
            out[path] = [None if a is _MISSING else a, None if b is _MISSING else b]
    return out
