"""Oplog guards: a reader of ``local.oplog.rs`` telling the dev server which entries it still needs.

Shape: documents ``{_id: <reader>, ts: Timestamp, at: <UTC datetime>}`` in ``local.fluxa_oplog_guards``
("keep every entry with ``ts`` >= this"), plus one ``{_id: "__settings__", ttl_s}`` the server writes.
The dev server (tools/ferretdb) creates the collection at start; while at least one guard is
fresh (``at`` within ``ttl_s``), it trims the oplog to the oldest guard instead of to its capped
limits: entries the archive (or continuous validation) has not read are never trimmed, and those
every reader has passed are trimmed at once, so the live oplog stays short - which is what makes a
tail cheap on FerretDB, where every poll re-reads the whole oplog (docs/local-server.md). With no
fresh guard (no archiver running for ``ttl_s``), the capped limits apply as before.

A real MongoDB has no such collection: ``OplogGuard.enabled`` is False and nothing is written
(its oplog is sized in bytes by the operator, and the archiver reports any gap).

Writes to the guard collection are themselves oplog entries (``ns`` = GUARD_NS). Readers skip
them (``is_guard_entry``), so a guard never makes its owner write another one; an idle reader
refreshes its guard every ``ttl_s / 4``. Failure behaviour: a guard write that fails is logged by
the caller and retried at the next call; it never stops the reader (the cap then applies).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from bson.timestamp import Timestamp
from pymongo.errors import PyMongoError

GUARDS = "fluxa_oplog_guards"
GUARD_NS = "local." + GUARDS
SETTINGS_ID = "__settings__"
DEFAULT_TTL_S = 300.0


def is_guard_entry(entry) -> bool:
    return entry.get("ns") == GUARD_NS


class OplogGuard:
    def __init__(self, client, reader: str, min_interval_s: float = 1.0):
        self.reader = reader
        self.coll = client.local[GUARDS]
        self.min_interval_s = min_interval_s
        self.ttl_s = DEFAULT_TTL_S
        self.enabled = False
        self.held: Timestamp | None = None
        self._written = float("-inf")
        try:
            if GUARDS in client.local.list_collection_names(filter={"name": GUARDS}):
                self.enabled = True
                settings = self.coll.find_one({"_id": SETTINGS_ID}) or {}
                self.ttl_s = float(settings.get("ttl_s") or DEFAULT_TTL_S)
        except PyMongoError:
            self.enabled = False  # no access to `local`: nothing to guard with

    def hold(self, ts: Timestamp | None, force: bool = False) -> bool:
        """Ask the server to keep every entry from ``ts`` on. Written when ``ts`` moved (at most
        every ``min_interval_s``), when the guard is due for a refresh, or with ``force``. True if written."""
        if not self.enabled or ts is None:
            return False
        now = time.monotonic()
        moved = self.held is None or ts != self.held
        due = now - self._written >= self.ttl_s / 4
        if not (force or due or (moved and now - self._written >= self.min_interval_s)):
            return False
        self.coll.update_one({"_id": self.reader}, {"$set": {"ts": ts, "at": datetime.now(timezone.utc)}},
                             upsert=True)
        self.held, self._written = ts, now
        return True

    def release(self) -> None:
        if self.enabled:
            self.coll.delete_one({"_id": self.reader})
            self.held = None


def guards(client) -> list[dict]:
    """The guards on the server (for status output and tests); [] where there are none."""
    try:
        return [g for g in client.local[GUARDS].find({"_id": {"$ne": SETTINGS_ID}})]
    except PyMongoError:
        return []
