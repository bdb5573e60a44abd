"""The undo journal of a plan: the live documents exactly as they were before apply wrote them,
and which changes apply actually wrote.

On disk, under ``$FLUXA_HOME/plans/<plan-id>/journal/``, one file per batch and kind:

- ``apply-NNNNNN.bson``: records ``{i, collection, id, live}`` - ``i`` the change's position in
  the plan, ``live`` the live document's raw BSON read right before the batch was written (null
  when absent). A change is journaled again, in a later file, whenever the live bytes about to
  be overwritten differ from its newest record (a rerun after the app wrote the document, a
  forced conflict), so no write apply overwrites is ever missing from the journal;
- ``superseded-NNNNNN.bson``: the same records for newer writes set aside before being
  overwritten (a conflict written by ``--force-id`` or in supersede mode, a document whose live
  bytes differ from its journaled original, a document an ``undo --force`` replaced, a delete
  that removed bytes other than the journaled ones);
- ``done-NNNNNN.bson``: records ``{i, over}`` written (fsynced) after each batch's writes: change
  ``i`` was written, over the live document whose sha256 is ``over`` (null: absent).

``undo_entries`` reads the three: for each journaled change, the document undo puts back and
whether the apply wrote it. A change with a done record is undone to the journaled document
whose hash is the FIRST record's ``over`` (what live was right before the apply first wrote it;
a newer write it overwrote later is in ``superseded``); one with none (killed before its write, an insert that hit a duplicate
key, a conflict on a rerun - or killed between its write and its done record) is ``unsure``: the
undo acts on it only when the live document is the plan's after-image, putting back its newest
journal record (the bytes read right before that write).

Failure behaviour: a batch file is written to a temporary name, fsynced, renamed and its
directory fsynced, so it is whole or absent (a kill mid-write leaves only a ``.tmp`` file,
ignored and overwritten). apply/superseded files are on disk BEFORE any document of the batch is
written; a done file after the writes, so a kill in between leaves a written change ``unsure``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import bson
from bson.raw_bson import RawBSONDocument

from .live import RAW
from .plans_store import JOURNAL, fsync_dir


def _hash(doc) -> str | None:
    return None if doc is None else hashlib.sha256(doc.raw).hexdigest()


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
        """Change position -> the live document before apply first journaled it (None: absent)."""
        out: dict[int, RawBSONDocument | None] = {}
        for rec in self.records():
            out.setdefault(rec["i"], rec["live"])
        return out

    def latest(self) -> dict[int, RawBSONDocument | None]:
        """Change position -> its newest journal record (what apply compares live bytes with)."""
        return {rec["i"]: rec["live"] for rec in self.records()}

    def append(self, records: list[tuple[int, str, object, RawBSONDocument | None]]) -> Path | None:
        """Write one batch file (whole, fsynced) of ``(i, collection, _id, live raw or None)``."""
        return self.append_docs([{"i": i, "collection": coll, "id": _id, "live": live}
                                 for i, coll, _id, live in records])

    def append_done(self, done: list[tuple[int, RawBSONDocument | None]]) -> Path | None:
        """A done file: ``(i, the live document the write replaced or None)``, hashed."""
        return self.append_docs([{"i": i, "over": _hash(live)} for i, live in done])

    def append_docs(self, docs: list[dict]) -> Path | None:
        if not docs:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._count is None:
            self._count = len(self.files())
        n = self._count + 1
        path = self.dir / f"{self.kind}-{n:06d}.bson"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for doc in docs:
                f.write(bson.encode(doc))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(self.dir)
        self._count = n
        return path


@dataclass
class UndoEntry:
    original: RawBSONDocument | None  # what undo puts back (None: delete the document)
    written: bool  # a done record says apply wrote it; False: unsure (see the module doc)


def undo_entries(plan_dir: Path) -> dict[int, UndoEntry]:
    """For every change apply journaled: what undo puts back and whether it was surely written."""
    seen: dict[int, list] = {}
    for rec in Journal(plan_dir).records():
        seen.setdefault(rec["i"], []).append(rec["live"])
    kept: dict[int, list] = {}
    for rec in Journal(plan_dir, "superseded").records():
        kept.setdefault(rec["i"], []).append(rec["live"])
    over: dict[int, str | None] = {}
    for rec in Journal(plan_dir, "done").records():
        over.setdefault(rec["i"], rec["over"])  # the first write: undo goes back to just before the apply wrote it
    out: dict[int, UndoEntry] = {}
    for i, lives in seen.items():
        if i not in over:
            out[i] = UndoEntry(lives[-1], False)
            continue
        want = over[i]
        match = next((d for d in reversed(lives + kept.get(i, [])) if _hash(d) == want), lives[-1])
        out[i] = UndoEntry(match, True)
    return out
