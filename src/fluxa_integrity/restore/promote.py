"""`restore promote` and `restore undo`: bring restored collections or documents back to the
live database, reversibly.

Before any write, every live document that will be overwritten is saved (raw BSON, exactly as
it was) and every _id that will be inserted is noted, in ``$FLUXA_HOME/undo/<promotion-id>/``
(``<coll>.overwritten.bson``, ``<coll>.inserted.bson``, ``manifest.json`` with sha256s), and a
``promotions`` row is written. Undo replaces the saved documents and deletes the inserted ones,
so the live collections come back byte for byte. Promotion upserts and never deletes: a live
document absent from the restored copy (created after the backup) is left alone.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from ..backup.files import file_sha256, iter_raw_documents
from ..config import fluxa_home
from ..errors import FluxaError
from ..store import Store
from ..store.backup_models import Promotion
from .compare import RAW, fingerprints, field_diff

UTC = timezone.utc


def undo_root() -> Path:
    return fluxa_home() / "undo"


def plan_promotion(live: Database, source: Database, collections: list[str], ids: list | None,
                   samples: int = 3) -> dict:
    plan = {}
    query = {"_id": {"$in": ids}} if ids is not None else None
    for name in collections:
        theirs = fingerprints(live, name, query=query)
        ours = fingerprints(source, name, query=query)
        over = [k for k in ours if k in theirs and theirs[k][1] != ours[k][1]]
        ins = [k for k in ours if k not in theirs]
        sample_diffs = []
        for k in over[:samples]:
            _id = ours[k][0]
            sample_diffs.append({"_id": _id, "fields": field_diff(live[name].find_one({"_id": _id}),
                                                                  source[name].find_one({"_id": _id}))})
        plan[name] = {"overwrite": over, "insert": ins, "unchanged": len(ours) - len(over) - len(ins),
                      "ids": {k: ours[k][0] for k in over + ins}, "sample_diffs": sample_diffs,
                      "missing_ids": (len(ids) - len(ours)) if ids is not None else 0}
    return plan


def summarize(plan: dict) -> dict:
    return {n: {"overwrite": len(p["overwrite"]), "insert": len(p["insert"]), "unchanged": p["unchanged"],
                "missing_ids": p["missing_ids"], "sample_diffs": p["sample_diffs"]} for n, p in plan.items()}


def _write_raw(path: Path, docs) -> dict:
    with open(path, "wb") as f:
        for raw in docs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    return {"path": path.name, "sha256": file_sha256(path)}


def apply_promotion(store: Store, live: Database, source: Database, plan: dict, authorized_by: str) -> dict:
    now = datetime.now(UTC)
    pid = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    undo = undo_root() / pid
    undo.mkdir(parents=True)
    manifest = {"id": pid, "live_db": live.name, "from_db": source.name, "created_at": now.isoformat(),
                "authorized_by": authorized_by, "collections": {}}
    live_raw = {n: live.get_collection(n, codec_options=RAW) for n in plan}
    for name, p in plan.items():  # save first: nothing is written before the undo store is on disk
        saved = (live_raw[name].find_one({"_id": p["ids"][k]}).raw for k in p["overwrite"])
        entry = {"overwritten": _write_raw(undo / f"{name}.overwritten.bson", saved),
                 "inserted": _write_raw(undo / f"{name}.inserted.bson",
                                        (bson.encode({"_id": p["ids"][k]}) for k in p["insert"])),
                 "counts": {"overwritten": len(p["overwrite"]), "inserted": len(p["insert"])}}
        manifest["collections"][name] = entry
    (undo / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with store.session() as s:
        s.add(Promotion(id=pid, from_db=source.name, live_db=live.name, collections=list(plan), authorized_by=authorized_by,
                        status="applying", undo_dir=str(undo), created_at=now,
                        counts={n: e["counts"] for n, e in manifest["collections"].items()}))
    src_raw = {n: source.get_collection(n, codec_options=RAW) for n in plan}
    for name, p in plan.items():
        for k in p["overwrite"] + p["insert"]:
            doc = src_raw[name].find_one({"_id": p["ids"][k]})
            live_raw[name].replace_one({"_id": doc["_id"]}, doc, upsert=True)
    with store.session() as s:
        s.get(Promotion, pid).status = "applied"
    return {"promotion_id": pid, "undo_dir": str(undo), "counts": {n: e["counts"] for n, e in manifest["collections"].items()}}


def undo_promotion(store: Store, client, promotion_id: str) -> dict:
    with store.session() as s:
        row = s.get(Promotion, promotion_id)
        if row is None:
            raise FluxaError(f"no promotion {promotion_id!r}", "the id is printed by `restore promote --apply`")
        if row.status == "undone":
            raise FluxaError(f"promotion {promotion_id} was already undone", "nothing to do")
        undo, live_name = Path(row.undo_dir), row.live_db
    try:
        manifest = json.loads((undo / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise FluxaError(f"undo store {undo} is unreadable: {exc}", "it must not be edited or moved") from exc
    for name, entry in manifest["collections"].items():
        for part in ("overwritten", "inserted"):
            path = undo / entry[part]["path"]
            if not path.is_file() or file_sha256(path) != entry[part]["sha256"]:
                raise FluxaError(f"undo file {path} is missing or fails its sha256", "the undo store was altered")
    live = client[live_name]
    counts = {}
    for name, entry in manifest["collections"].items():
        coll = live.get_collection(name, codec_options=RAW)
        deleted = 0
        for raw in iter_raw_documents(undo / entry["inserted"]["path"], "none"):
            deleted += coll.delete_one({"_id": bson.decode(raw)["_id"]}).deleted_count
        restored = 0
        for raw in iter_raw_documents(undo / entry["overwritten"]["path"], "none"):
            doc = RawBSONDocument(raw)
            coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
            restored += 1
        counts[name] = {"restored": restored, "deleted": deleted}
    with store.session() as s:
        got = s.get(Promotion, promotion_id)
        got.status, got.undone_at = "undone", datetime.now(UTC)
    return {"promotion_id": promotion_id, "counts": counts}
