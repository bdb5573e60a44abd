"""What an application reads to honour incident containment (S18): the flags document that
`fluxa-integrity incident contain` writes and `incident lift` clears.

Standalone on purpose: it imports only the standard library and pymongo, never the rest of
Fluxa Integrity, so an application copies this one file into its code base (or imports it from
the installed package) and keeps no other dependency on the tool.

    from fluxa_containment import ContainmentReader      # or fluxa_integrity.containment_reader
    flags = ContainmentReader(client, "fluxa")           # the app's MongoClient and database name
    if not flags.is_writable("messages"):
        raise ServiceUnavailable("messages are read-only during an incident")
    if flags.is_paused("export"):
        ...

The contract (docs/incidents.md, "Containment contract"): database ``fluxa_integrity``,
collection ``containment``, one document per application database, written whole on every
contain and lift:

    {_id: "<app database>", read_only_collections: ["messages", ...] (or ["*"]: every collection),
     paused_features: ["chat", ...], incidents: [12, ...], updated_at: <date>, version: 1}

No document means nothing was ever contained (the normal state). Empty lists mean lifted.

Cache and failure behaviour: the document is read at most once per ``ttl`` seconds (default 5),
so an application checking before every write costs one query per ``ttl``. When a refresh fails
(server unreachable, no read permission on ``fluxa_integrity``), the last flags read are kept for
``max_stale`` seconds (default 60); after that - or when nothing was ever read - the reader is
fail-closed by default: ``is_writable`` answers False and ``is_paused`` True, because a data
incident that cannot be confirmed lifted must not be written through. ``fail_closed=False``
chooses availability instead (everything writable, nothing paused). ``error`` holds the last
failure (None once a read succeeds again); the reader never raises from these two calls.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from pymongo.errors import PyMongoError

FLAGS_DB = "fluxa_integrity"
FLAGS_COLLECTION = "containment"
EVERY_COLLECTION = "*"
VERSION = 1


class ContainmentReader:
    def __init__(self, client, database: str, ttl: float = 5.0, max_stale: float = 60.0,
                 fail_closed: bool = True, clock: Callable[[], float] = time.monotonic):
        self._coll = client[FLAGS_DB][FLAGS_COLLECTION]
        self.database = database
        self.ttl, self.max_stale, self.fail_closed = ttl, max_stale, fail_closed
        self._clock = clock
        self._lock = threading.Lock()
        self._flags: dict | None = None  # the last document read ({} when there is none)
        self._read_at: float | None = None  # when it was read (clock)
        self._tried_at: float | None = None  # when a read was last attempted
        self.error: Exception | None = None

    def refresh(self) -> dict | None:
        """Read the flags now (ignoring the cache). Returns them, or None when the read failed."""
        with self._lock:
            return self._read(self._clock())

    def _read(self, now: float) -> dict | None:
        self._tried_at = now
        try:
            doc = self._coll.find_one({"_id": self.database})
        except PyMongoError as exc:
            self.error = exc
            return None
        self._flags, self._read_at, self.error = dict(doc or {}), now, None
        return self._flags

    def flags(self) -> dict | None:
        """The current flags (cached for ``ttl``), or None when they cannot be known: not read
        yet or last read longer than ``max_stale`` ago, and the server does not answer."""
        with self._lock:
            now = self._clock()
            if self._tried_at is None or now - self._tried_at >= self.ttl:
                self._read(now)
            if self._read_at is not None and (self.error is None or now - self._read_at <= self.max_stale):
                return self._flags
            return None

    def is_writable(self, collection: str) -> bool:
        """False while ``collection`` is read-only (or the flags are unknown and fail-closed)."""
        flags = self.flags()
        if flags is None:
            return not self.fail_closed
        contained = flags.get("read_only_collections") or []
        return EVERY_COLLECTION not in contained and collection not in contained

    def is_paused(self, feature: str) -> bool:
        """True while ``feature`` is paused (or the flags are unknown and fail-closed)."""
        flags = self.flags()
        if flags is None:
            return self.fail_closed
        return feature in (flags.get("paused_features") or [])

    def incidents(self) -> list:
        """The incident ids behind the current containment (for the app's error message)."""
        flags = self.flags()
        return list((flags or {}).get("incidents") or [])
