"""Where a snapshot sits in the oplog (``ts`` at start and end), for point-in-time restore.

``exact`` (default): a replica-set member reports the newest entry in ``hello.lastWrite.opTime``
(free). Otherwise the newest entry of ``local.oplog.rs`` is read with a reverse natural-order
``limit(1)``: on MongoDB that reads one entry, but FerretDB 1.24 pushes neither the sort nor a
``ts``/``_id`` range filter down and scans the whole capped collection (measured: ~75 us per
entry, 4.6 s for 59k entries; ``skip(n-1)`` and ``hint`` are no better), so the probe's time
is recorded in the manifest.

``clock``: the server's clock (``hello.localTime``) rounded down at start and up at end, as
``Timestamp(seconds, 0)``. Oplog ``ts`` seconds come from the same clock, so these are safe
bounds for replay (replay of FerretDB's full-document entries is idempotent), at no cost; they
are not entries, so they cannot show whether the oplog still reaches back that far.
"""

from __future__ import annotations

import time

import pymongo
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure

from ..mongo.unsupported import is_ferretdb

MODES = ("exact", "clock")


def oldest_oplog_entry(client: pymongo.MongoClient) -> dict | None:
    """The oldest entry of ``local.oplog.rs`` (``{_id, ts}``), None when it is empty.

    On MongoDB a natural-order ``limit(1)``. FerretDB 1.24 pushes the limit down only without a
    sort, and a find with no sort on a capped collection is already ordered by record id there
    (its handler adds ``$natural: 1`` itself): so no sort is asked for. With one, it read and
    ordered the whole oplog for one entry (measured: 25 s against 0.05 s for a 20k-entry oplog
    on a loaded 2-core machine)."""
    cursor = client.local["oplog.rs"].find({}, {"ts": 1})
    if not is_ferretdb(client):
        cursor = cursor.sort("$natural", 1)
    return next(iter(cursor.limit(1)), None)


def newest_oplog_ts(client: pymongo.MongoClient, mode: str = "exact", end: bool = False
                    ) -> tuple[Timestamp | None, str, float]:
    """(ts or None, how it was found, seconds it took)."""
    t0 = time.perf_counter()
    hello = client.admin.command("hello")
    ts = ((hello.get("lastWrite") or {}).get("opTime") or {}).get("ts")
    if isinstance(ts, Timestamp):
        return ts, "hello.lastWrite", time.perf_counter() - t0
    if mode == "clock":
        local = hello.get("localTime")
        if local is None:
            return None, "no server clock", time.perf_counter() - t0
        secs = int(local.timestamp()) + (1 if end else 0)
        return Timestamp(secs, 0), "server clock bound", time.perf_counter() - t0
    try:
        if "oplog.rs" not in client.local.list_collection_names(filter={"name": "oplog.rs"}):
            return None, "no local.oplog.rs", time.perf_counter() - t0
        entry = next(iter(client.local["oplog.rs"].find({}, {"ts": 1}).sort("$natural", -1).limit(1)), None)
    except OperationFailure:  # no access to `local` (e.g. a restricted user)
        return None, "local.oplog.rs not readable", time.perf_counter() - t0
    ts = entry.get("ts") if entry else None
    return (ts if isinstance(ts, Timestamp) else None), "local.oplog.rs $natural -1", time.perf_counter() - t0
