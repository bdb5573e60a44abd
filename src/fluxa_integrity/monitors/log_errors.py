"""Validation errors in the application's logs (S12): read the interval's entries from the logs
collection and JSON-lines files, and classify them by the policy's patterns.

Shape: ``read_logs`` returns ``LogCounts`` - ``counts[(class, scope)]`` the number of entries of a
class in ``[start, end)``, where ``scope`` is the data collection the entry names (the policy's
``fields.collection``, when the application logs one) or else the source (the log collection's
name, or ``file:<name>``); ``samples`` keeps the first few entries of each, as evidence. An entry
belongs to the first class whose every given regex is found in its field (``re.search``), so a
class list reads top to bottom like a firewall's.

JSON-lines: one JSON object per line (Extended JSON accepted: ``{"$date": ...}``); the time field
may be a date, an ISO-8601 string or epoch seconds. Lines that are not an object with a readable
time are counted in ``bad_lines`` and skipped, never fatal; a missing file is a FluxaError (the
policy names a file that is not there). Files are read whole on every interval: fine for the
rotated, bounded files applications write; a byte offset per file is left for when one is not.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from bson import json_util

from ..errors import FluxaError
from ..policy.monitors import LogValidation

UTC = timezone.utc
SAMPLES = 5


@dataclass
class LogCounts:
    counts: Counter = field(default_factory=Counter)  # (class, scope) -> entries
    samples: dict = field(default_factory=dict)  # (class, scope) -> [entry summaries]
    entries: int = 0  # entries of the interval read, validation errors or not
    bad_lines: int = 0
    sources: list[str] = field(default_factory=list)


class Classifier:
    def __init__(self, lv: LogValidation):
        self.lv = lv
        self.rules = [(c.name, [(getattr(lv.fields, attr), re.compile(pat)) for attr in ("message", "operation", "level")
                                if (pat := getattr(c, attr)) is not None]) for c in lv.classes]

    def classify(self, entry: Mapping) -> str | None:
        for name, checks in self.rules:
            if all(isinstance(v := entry.get(fld), str) and rx.search(v) for fld, rx in checks):
                return name
        return None


def as_time(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def tally(entries: Iterable[Mapping], source: str, clf: Classifier, out: LogCounts) -> None:
    lv = clf.lv
    for e in entries:
        out.entries += 1
        cls = clf.classify(e)
        if cls is None:
            continue
        named = e.get(lv.fields.collection) if lv.fields.collection else None
        key = (cls, named if isinstance(named, str) and named else source)
        out.counts[key] += 1
        kept = out.samples.setdefault(key, [])
        if len(kept) < SAMPLES:
            kept.append({"_id": e.get("_id"), "time": e.get(lv.fields.time),
                         "message": str(e.get(lv.fields.message, ""))[:300],
                         "operation": e.get(lv.fields.operation), "level": e.get(lv.fields.level)})


def read_file_entries(path: Path, time_field: str, start: datetime, end: datetime, out: LogCounts) -> Iterable[dict]:
    if not path.is_file():
        raise FluxaError(f"log file {path} does not exist", "fix log_validation.files in the policy or --log-file")
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                e = json_util.loads(line)
            except (ValueError, json.JSONDecodeError):
                out.bad_lines += 1
                continue
            t = as_time(e.get(time_field)) if isinstance(e, dict) else None
            if t is None:
                out.bad_lines += 1
                continue
            if start <= t < end:
                yield e


def read_logs(db, lv: LogValidation, start: datetime, end: datetime, extra_files: list[Path] | None = None
              ) -> LogCounts:
    """The classified validation errors of ``[start, end)`` from the log collection of ``db``
    (when the policy names one and it exists) and from the files."""
    clf = Classifier(lv)
    out = LogCounts()
    if lv.collection and db is not None and lv.collection in db.list_collection_names():
        proj = {f: 1 for f in {lv.fields.message, lv.fields.operation, lv.fields.level, lv.fields.time,
                               lv.fields.collection} if f}
        cursor = db[lv.collection].find({lv.fields.time: {"$gte": start, "$lt": end}}, proj, batch_size=5000)
        tally(cursor, lv.collection, clf, out)
        out.sources.append(f"collection:{lv.collection}")
    for f in [Path(p) for p in lv.files] + list(extra_files or []):
        tally(read_file_entries(f, lv.fields.time, start, end, out), f"file:{f.name}", clf, out)
        out.sources.append(f"file:{f}")
    return out
