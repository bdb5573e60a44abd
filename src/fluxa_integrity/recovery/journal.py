"""The undo journal of a plan: the live documents exactly as they were before apply wrote them.

On disk: ``$FLUXA_HOME/plans/<plan-id>/journal/<kind>-<NNNNNN>.bson``, one file per batch, each
a sequence of BSON records ``{i, collection, id, live}`` - ``i`` the change's position in the
plan, ``live`` the live document's raw BSON as read right before the batch was written (null when
it was absent). ``kind`` is ``apply`` (before-images for undo) or ``superseded`` (documents an
undo --force replaced: newer writes, kept so nothing is lost).

Failure behaviour: a batch file is written to a temporary name, fsynced, renamed and its
directory fsynced BEFORE any document of the batch is written, so every written document has its
journal record on disk, and a journal file is whole or absent (a kill mid-write leaves only a
``.tmp`` file, ignored and overwritten). A rerun of an interrupted apply adds new batch files;
the FIRST record of a change is its original (what undo puts back), later ones are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import bson
from bson.raw_bson import RawBSONDocument

from .live import RAW
from .plans_store import JOURNAL, fsync_dir


class Journal:
    def __init__(self, plan_dir: Path, kind: str = "apply"):
        self.dir, self.kind = Path(plan_dir) / JOURNAL, kind
        self._count: int | None = None  # batch files on disk; counted once, not per batch

    def files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob(f"{self.kind}-*.bson"))

    def records(self):
        for path in self.files():
            with open(path, "rb") as f:
                yield from bson.decode_file_iter(f, codec_options=RAW)

    def originals(self) -> dict[int, RawBSONDocument | None]:
        """Change position -> the live document before apply first wrote it (None: absent)."""
        out: dict[int, RawBSONDocument | None] = {}
        for rec in self.records():
            out.setdefault(rec["i"], rec["live"])
        return out

    def append(self, records: list[tuple[int, str, object, RawBSONDocument | None]]) -> Path | None:
        """Write one batch file (whole, fsynced) of ``(i, collection, _id, live raw or None)``."""
        if not records:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._count is None:
            self._count = len(self.files())
        n = self._count + 1
        path = self.dir / f"{self.kind}-{n:06d}.bson"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for i, coll, _id, live in records:
                f.write(bson.encode({"i": i, "collection": coll, "id": _id, "live": live}))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(self.dir)
        self._count = n
        return path
