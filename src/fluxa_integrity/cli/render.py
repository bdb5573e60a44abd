"""What a person reads: values rendered readably, and tables that never cut an id.

Two halves, both pure functions of their input (no I/O but the console they are handed):

- ``value(v)`` turns anything a command shows - a BSON value, a relaxed Extended-JSON dict read
  back from the state store (``{'$oid': ...}``, ``{'$date': ...}``), an evidence sample's
  ``{'value': x}`` wrapper - into one line of text: datetimes as ISO-8601 UTC (``...Z``),
  ObjectIds as their hex, ``None`` as ``null``, control characters escaped (a NUL in an email is
  visible), nested dicts and lists compact and bounded. Long strings and bytes are shortened with
  an ellipsis, except ids (a key named ``_id``/``id``/``*_id``/``*Id``): an id is never shortened,
  because people copy it into the next command. ``when(v)`` is the same for a date column, with
  ``-`` for "no date" instead of an empty cell, to the second.
- ``print_table(console, title, cols, rows)`` prints a Rich table whose id columns (``Col(...,
  id=True)``) are exactly as wide as their longest value and never wrap; the other columns wrap.
  When the console is too narrow for the ids plus a minimum for every other column, it prints one
  record per block instead: the ids on a line of their own that we never break (the terminal may
  soft-wrap it, a pipe gets it whole), the other ``key: value`` pairs wrapped and indented below.

Nothing here raises on odd input: an unknown type falls back to its ``repr``, shortened.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable, Optional, Sequence

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

UTC = timezone.utc
LIMIT = 60  # characters of one shortened value
MAX_ITEMS = 8  # entries of a dict or list shown before "+N more"
ELLIPSIS = "…"
MIN_OTHER = 12  # columns a non-id column needs (at most: its longest word) before a table becomes blocks

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER_KEYS = ("$numberLong", "$numberInt", "$numberDouble", "$numberDecimal")


def is_id_key(key: Optional[str]) -> bool:
    return bool(key) and (key in ("_id", "id") or key.endswith(("_id", "Id", "_ids", "Ids")))


def iso(dt: datetime) -> str:
    """ISO-8601 in UTC with a Z; naive datetimes are UTC (pymongo's and the store's convention)."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    ms = f".{dt.microsecond // 1000:03d}" if dt.microsecond else ""
    return f"{dt:%Y-%m-%dT%H:%M:%S}{ms}Z"


def when(v: Any, *, day: bool = False) -> str:
    """A date cell: ``-`` when there is none, the date alone with ``day=True``."""
    if v is None or v == "":
        return "-"
    if isinstance(v, str):  # an ISO string from a JSON-shaped record: same form as a datetime
        try:
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
    if isinstance(v, datetime):  # a person reads seconds; milliseconds are in --json
        v = v.replace(microsecond=0)
    text = value(v)
    return text[:10] if day and re.match(r"\d{4}-\d\d-\d\dT", text) else text


def shorten(text: str, limit: int = LIMIT) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + ELLIPSIS


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _date_from_ejson(x: Any) -> Optional[str]:
    if isinstance(x, str):
        try:
            return iso(datetime.fromisoformat(x.replace("Z", "+00:00")))
        except ValueError:
            return x
    if isinstance(x, dict) and "$numberLong" in x:
        x = int(x["$numberLong"])
    if isinstance(x, (int, float)):
        try:
            return iso(datetime.fromtimestamp(x / 1000, UTC))
        except (OverflowError, OSError, ValueError):
            return f"{x} ms since 1970"
    return None


def _ejson(d: dict, limit: int) -> Optional[str]:
    """One relaxed/canonical Extended-JSON wrapper as text, or None when ``d`` is a plain dict."""
    if len(d) != 1 and not ("$binary" in d or "$regex" in d):
        return None
    (k, x), = list(d.items())[:1]
    if k == "$oid":
        return str(x)
    if k == "$date":
        return _date_from_ejson(x)
    if k in _NUMBER_KEYS:
        return str(x)
    if k == "$missing":
        return "(missing)"
    if k == "$uuid":
        return str(x)
    if k == "$binary":
        sub = x.get("subType", "00") if isinstance(x, dict) else d.get("$type", "00")
        b64 = x.get("base64", "") if isinstance(x, dict) else str(x)
        if sub in ("04", "03"):
            import base64

            try:
                return str(uuid.UUID(bytes=base64.b64decode(b64)))
            except ValueError:
                pass
        return f"<binary subtype {sub}, {len(b64) * 3 // 4} bytes>"
    if k == "$timestamp" and isinstance(x, dict):
        return f"Timestamp({x.get('t')}, {x.get('i')})"
    if k == "$regularExpression" and isinstance(x, dict):
        return f"/{x.get('pattern', '')}/{x.get('options', '')}"
    if k in ("$minKey", "$maxKey"):
        return k[1:].capitalize().replace("key", "Key")
    if k in ("$code", "$symbol"):
        return shorten(_escape(str(x)), limit)
    if k == "value":  # an evidence sample's wrapper: the value is what matters
        return value(x, limit)
    return None


def value(v: Any, limit: int = LIMIT, key: Optional[str] = None) -> str:
    """One readable line for any value (see the module docstring)."""
    keep = is_id_key(key)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        text = _escape(v)
        return text if keep else shorten(text, limit)
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        return f"<{len(raw)} bytes: {raw[:12].hex()}{ELLIPSIS if len(raw) > 12 else ''}>"
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        wrapped = _ejson(v, limit)
        if wrapped is not None:
            return wrapped
        items = list(v.items())
        parts = [f"{k}: {value(x, max(limit // 2, 12), str(k))}" for k, x in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            parts.append(f"{ELLIPSIS} +{len(items) - MAX_ITEMS} more")
        return "{" + ", ".join(parts) + "}"
    if isinstance(v, (list, tuple, set, frozenset)):
        items = list(v)
        parts = [value(x, max(limit // 2, 12), key) for x in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            parts.append(f"{ELLIPSIS} +{len(items) - MAX_ITEMS} more")
        return "[" + ", ".join(parts) + "]"
    return _bson_scalar(v, limit, keep)


def _bson_scalar(v: Any, limit: int, keep: bool) -> str:
    name = type(v).__name__
    if name == "ObjectId" or name == "Decimal128" or name == "Int64" or name == "Decimal":
        return str(v)
    if name == "Timestamp":
        return f"Timestamp({v.time}, {v.inc})"
    if name == "Regex":
        flags = v.flags if isinstance(v.flags, str) else "".join(
            c for c, f in (("i", re.I), ("l", re.L), ("m", re.M), ("s", re.S), ("u", re.U), ("x", re.X)) if v.flags & f)
        pattern = v.pattern.decode(errors="replace") if isinstance(v.pattern, bytes) else v.pattern
        return f"/{pattern}/{flags}"
    if name in ("MinKey", "MaxKey"):
        return name
    text = _escape(str(v) if name == "Code" else repr(v))
    return text if keep else shorten(text, limit)


def _literal(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (bytes, bytearray)) or type(v).__name__ == "Binary":
        return f"<{len(v)} bytes>"
    if type(v).__name__ == "ObjectId":
        return f"ObjectId({v})"
    if isinstance(v, dict) or hasattr(v, "items"):
        return "{" + ", ".join(f"{k}: {_literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return _bson_scalar(v, LIMIT, True)


def literal(v: Any, limit: int = 160) -> str:
    """A value as a literal, for diffs where the string "null" and null must differ: strings
    quoted (control characters JSON-escaped), ObjectIds as ``ObjectId(hex)``, dates ISO-8601 UTC,
    nested values inline and whole up to ``limit`` characters."""
    return shorten(_literal(v), limit)


def field_changes(fields: dict) -> list[str]:
    """``{field: [live, restored]}`` as lines ``field: live -> restored``."""
    return [f"{k}: {literal(old)} -> {literal(new)}" for k, (old, new) in fields.items()]


# -- tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    id: bool = False  # typed back by people: printed whole, never wrapped or shortened
    whole: bool = False  # not an id, but unreadable when folded (a timestamp): never wrapped either
    justify: str = "left"


def _cell(x: Any) -> str:
    return x if isinstance(x, str) else value(x)


def _new_table(title: Optional[str]) -> Table:
    # no side edges and collapsed padding: two spaces between columns, the least a table costs
    return Table(title=Text(title) if title else None,  # a title is text: "[DRILL]" stays
                 box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, title_justify="left")


def _overhead(ncols: int) -> int:
    """Characters a table of ``ncols`` columns spends between them (measured, not assumed)."""
    probe = _new_table(None)
    for _ in range(ncols):
        probe.add_column("x")
    console = Console(width=10_000, color_system=None)
    with console.capture() as cap:
        console.print(probe)
    return len(cap.get().splitlines()[0].rstrip()) - ncols


def fits(width: int, cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> bool:
    """Whether a table can show every id whole and leave each other column its minimum."""
    need = _overhead(len(cols))
    for i, c in enumerate(cols):
        if c.id or c.whole:
            need += max([len(c.name)] + [len(r[i]) for r in rows])
        else:  # a column narrower than its longest word folds words mid-way ("critica|lity")
            need += min(max(len(w) for x in [c.name, *(r[i] for r in rows)] for w in x.split() or [""]), MIN_OTHER)
    return need <= width


def print_table(console: Console, title: Optional[str], cols: Sequence[Col], rows: Iterable[Sequence[Any]]) -> None:
    """A table, or one block per record when the console is too narrow for the ids (see above)."""
    cells = [[_cell(x) for x in r] for r in rows]
    if cells and not fits(console.width, cols, cells):
        print_blocks(console, title, cols, cells)
        return
    table = _new_table(title)
    for i, c in enumerate(cols):
        if c.id or c.whole:
            width = max([len(c.name)] + [len(r[i]) for r in cells])
            table.add_column(c.name, width=width, no_wrap=True, justify=c.justify)
        else:
            table.add_column(c.name, overflow="fold", justify=c.justify)
    for r in cells:  # Text, not markup: a value like "[a, b]" would be eaten as a style tag
        table.add_row(*(Text(c) for c in r))
    console.print(table, highlight=False)


def print_blocks(console: Console, title: Optional[str], cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> None:
    """One record per block: its first column and ids (``name: value``) on a line we never break, then the other
    columns as ``name: value; ...`` wrapped and indented under it."""
    if title:
        console.print(title, style="italic", highlight=False, markup=False, soft_wrap=True)
    in_head = [c.id or i == 0 for i, c in enumerate(cols)]  # the ids, and what names the record
    for r in rows:
        head = [f"{c.name}: {x or '-'}" for c, x, h in zip(cols, r, in_head) if h]
        rest = [f"{c.name}: {x or '-'}" for c, x, h in zip(cols, r, in_head) if not h]
        console.print("  ".join(head), highlight=False, markup=False, soft_wrap=True)
        if rest:
            console.print(Padding(Text("; ".join(rest)), (0, 0, 0, 4), expand=False), highlight=False)
