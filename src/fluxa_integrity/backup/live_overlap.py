"""Whether the live oplog still reaches back to the archive: a gap seen without the archiver.

Shape: ``live_gap(client, windows, breaks)`` -> a gap dict like ``archive_catalog.coverage``'s
(``after``, ``before``, ``reason``, ``after_wall``, ``file``, plus ``live: True``) or None. The
archive's newest entry must still be in the live oplog, or older ones with it (the archiver
proves the same when it reopens its cursor, and the dev server's oplog guard keeps that entry):
if the oldest live entry is newer, the entries written after the archive's end and before that
oldest entry are in neither, and the point-in-time window is broken from the archive's end -
said at once by ``backup oplog-status``, not when the archiver next runs.

One read: the first entry in natural order (on FerretDB a LIMIT the server pushes down, on
MongoDB the oldest entry). An empty live oplog proves nothing either way (None). Failure
behaviour: server errors propagate; the caller reports the live check as not done.
"""

from __future__ import annotations

from bson.timestamp import Timestamp

from .archive_catalog import Window, ts_text


def oldest_live(client) -> Timestamp | None:
    entry = next(iter(client.local["oplog.rs"].find({}, {"ts": 1}).limit(1)), None)
    return entry["ts"] if entry is not None else None


def live_gap(client, windows: list[Window], breaks: list[dict]) -> dict | None:
    if not windows:
        return None
    end = windows[-1]
    oldest = oldest_live(client)
    if oldest is None or oldest <= end.last:
        return None
    if any(b["after"] == ts_text(end.last) for b in breaks):
        return None  # the archiver found it already
    return {"after": ts_text(end.last), "before": ts_text(oldest),
            "reason": (f"the live oplog no longer reaches back to the archive: the archive ends at {ts_text(end.last)}, "
                       f"the oldest entry the live oplog still has is {ts_text(oldest)}; entries in between are in "
                       "neither (no archiver ran while the oplog was trimmed, or it fell behind)"),
            "after_wall": end.last_wall, "file": None, "live": True}
