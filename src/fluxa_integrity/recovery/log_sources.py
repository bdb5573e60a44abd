"""Where reconstruct-from-logs (S26) reads log entries: the policy's log collection and JSON-lines
application log files with the same fields.

In memory each entry is a ``LogEntry``: the entry as a dict, where it came from (``source``:
``logs/<_id>`` or ``<file>:<line>``) and its ``_id`` when it has one. A file line is Extended
JSON (``{"$date": ...}``, ``{"$oid": ...}`` are honoured) or plain JSON: then an ISO string in
the time field becomes a UTC date (to the millisecond, as BSON keeps it) and a 24-hex string in
an id field (the entry's ``_id``, the log id field, the group and user fields) an ObjectId, so
file entries compare equal to the collection's.

Failure behaviour: a file that cannot be read or a line that is not JSON is a FluxaError naming
the file and line; nothing is half-read. Filters (user, group, window) apply to both sources the
same way; ``until`` is inclusive, ``since`` too (the playbook's ``$gte``/``$lte``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from bson import ObjectId, json_util
from bson.json_util import JSONOptions

from ..errors import FluxaError
from ..policy.data_loss import Reconstruct

UTC = timezone.utc
JSON_OPTS = JSONOptions(tz_aware=True, tzinfo=UTC)
CHUNK = 1000


@dataclass
class LogEntry:
    doc: dict
    source: str  # "logs/<_id>" or "<file>:<line>"
    log_id: Any = None


def aware(value: Any) -> Any:
    """A naive datetime as UTC (clients may hand dates back naive); anything else unchanged."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def parse_time(value: Any, what: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return aware(value)
    try:
        t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise FluxaError(f"{what} {value!r} is not an ISO date and time",
                         "e.g. 2026-11-25T21:40:00Z") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_id(value: Any) -> Any:
    """An id typed on the command line: a 24-hex string is an ObjectId, digits an int."""
    if isinstance(value, str):
        v = value.strip()
        if ObjectId.is_valid(v):
            return ObjectId(v)
        if v.lstrip("-").isdigit():
            return int(v)
        return v
    return value


class LogReader:
    """Reads and filters the entries one reconstruct mapping rebuilds documents from."""

    def __init__(self, db, spec: Reconstruct, user_doc_field: str | None):
        self.db = db
        self.spec = spec
        self.time_field = spec.log_field(spec.time)
        self.group_field = spec.log_field(spec.group) if spec.group else None
        self.user_field = spec.log_field(user_doc_field) if user_doc_field else None
        self.id_fields = {f for f in ("_id", spec.id_field, self.group_field, self.user_field) if f}

    def _query(self, user, group, since, until) -> dict:
        q: dict = {self.spec.operation_field: {"$in": list(self.spec.operations)}}
        if user is not None:
            q[self._need(self.user_field, "--user")] = user
        if group is not None:
            q[self._need(self.group_field, "--conversation")] = group
        window = {k: v for k, v in (("$gte", since), ("$lte", until)) if v is not None}
        if window:
            q[self.time_field] = window
        return q

    def _need(self, field: str | None, option: str) -> str:
        if field is None:
            raise FluxaError(f"{option} needs the policy's reconstruct mapping to name the log field it matches",
                             "map the collection's user field / group field in `reconstruct.fields`")
        return field

    def from_collection(self, user=None, group=None, since=None, until=None, groups: Iterable | None = None
                        ) -> Iterator[LogEntry]:
        q = self._query(user, group, since, until)
        if groups is not None:
            q[self._need(self.group_field, "group")] = {"$in": list(groups)}
        coll = self.spec.log_collection
        for d in self.db[coll].find(q).sort("_id", 1):
            yield LogEntry(d, f"{coll}/{d.get('_id')}", d.get("_id"))

    def from_files(self, paths: Iterable[str | Path]) -> list[LogEntry]:
        """Every message entry of the files (unfiltered), in file order."""
        out: list[LogEntry] = []
        for path in paths:
            p = Path(path)
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise FluxaError(f"cannot read log file {p}: {exc}", "pass a readable JSON-lines file") from exc
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    doc = json_util.loads(line, json_options=JSON_OPTS)
                except (ValueError, json.JSONDecodeError) as exc:
                    raise FluxaError(f"{p}:{n}: not a JSON object ({exc})",
                                     "each line of a log file is one JSON (or Extended JSON) object") from exc
                if not isinstance(doc, dict):
                    raise FluxaError(f"{p}:{n}: not a JSON object", "each line is one object with the log's fields")
                if doc.get(self.spec.operation_field) not in self.spec.operations:
                    continue
                out.append(LogEntry(self._normalise(doc, f"{p}:{n}"), f"{p.name}:{n}", doc.get("_id")))
        return out

    def _normalise(self, doc: dict, where: str) -> dict:
        for f in self.id_fields:
            v = doc.get(f)
            if isinstance(v, str) and ObjectId.is_valid(v):
                doc[f] = ObjectId(v)
        t = doc.get(self.time_field)
        if isinstance(t, str):
            t = parse_time(t, f"{where}: {self.time_field}")
        if isinstance(t, datetime):  # BSON keeps milliseconds
            t = aware(t)
            doc[self.time_field] = t.replace(microsecond=t.microsecond // 1000 * 1000)
        return doc

    def keep(self, e: LogEntry, user=None, group=None, since=None, until=None, groups: Iterable | None = None) -> bool:
        """The collection query's filter, for file entries."""
        d = e.doc
        if user is not None and d.get(self.user_field) != user:
            return False
        if group is not None and d.get(self.group_field) != group:
            return False
        if groups is not None and d.get(self.group_field) not in list(groups):
            return False
        t = aware(d.get(self.time_field))
        if since is not None and not (isinstance(t, datetime) and t >= since):
            return False
        if until is not None and not (isinstance(t, datetime) and t <= until):
            return False
        return True
