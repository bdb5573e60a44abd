"""Saving and loading recovery plans: files under ``$FLUXA_HOME/plans/<plan-id>/`` plus a
``recovery_plans`` row in the state store.

On disk, one directory per plan:

- ``changes.bson``: one BSON document per change (``Change.as_doc()`` plus ``i``, its position,
  and ``before_hash``/``after_hash``, the sha256 of the images' BSON), so every type survives
  (Int64 stays Int64, dates stay dates, ObjectIds stay ObjectIds) and the hashes apply compares
  with are the ones taken when the plan was made;
- ``plan.json``: recipe, params (canonical Extended JSON), database, source point, verify rules,
  unresolved notes, summary, counts, the conflict mode (``on_conflict``) and the sha256 of
  ``changes.bson``;
- ``journal/``: written by apply and undo (apply.py, journal.py), never by this module.

Images are normalised when saved: ``_id`` first and equal to the change's id (a server puts
``_id`` first, so an ``after`` written back reads back with the same bytes).

Failure behaviour: a plan is written into a temporary directory and renamed into place, so a
plan directory is whole or absent; the row is added after the rename and the directory removed
if that fails. ``load`` refuses a plan whose ``changes.bson`` fails its sha256 or whose files are
missing, naming the plan and saying to make a new one. Any error while saving (a value BSON cannot
encode, e.g. an integer beyond 64 bits: OverflowError) removes the temporary directory and is a
FluxaError naming the change (collection/_id) that could not be encoded. Status changes are conditional on the
status expected (``set_status``): a change made underneath by another command is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import bson
from bson import json_util
from bson.codec_options import CodecOptions, DatetimeConversion
from sqlalchemy import select, update

from ..errors import FluxaError
from ..home import fluxa_home
from ..store import Store
from ..store.recovery_models import RecoveryPlan
from .model import Change, Plan, content_hash

UTC = timezone.utc
# decoding keeps every type that re-encodes to the same bytes (Int64, out-of-range dates)
CODEC = CodecOptions(tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_AUTO)
CHANGES, PLAN_JSON, JOURNAL = "changes.bson", "plan.json", "journal"
_EJSON = json_util.CANONICAL_JSON_OPTIONS


def plans_root() -> Path:
    return fluxa_home() / "plans"


def plan_dir(plan_id: str) -> Path:
    return plans_root() / plan_id


@dataclass
class Stored:
    """A loaded plan with what apply needs besides the plan: the images' hashes and the row."""

    plan: Plan
    before_hashes: list[str | None]
    after_hashes: list[str | None]
    row: dict
    dir: Path


def _normalised(image: dict | None, _id, what: str, ch: Change) -> dict | None:
    if image is None:
        return None
    if "_id" in image and image["_id"] != _id:
        raise FluxaError(f"the {what}-image of {ch.collection}/{_id!r} has _id {image['_id']!r}",
                         "a recipe bug: a change's images must be of the document it names")
    return {"_id": _id, **{k: v for k, v in image.items() if k != "_id"}}


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_id(recipe: str, now: datetime) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", recipe.lower())[:30].strip("-") or "plan"
    return f"{now:%Y%m%dT%H%M%SZ}-{slug}-{secrets.token_hex(3)}"


def ejson(value) -> str:
    return json_util.dumps(value, json_options=_EJSON)


def relaxed(value):
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def save(store: Store, plan: Plan, actor: str | None = None, now: datetime | None = None) -> str:
    """Write the plan's files and row; sets and returns ``plan.id``."""
    now = now or datetime.now(UTC)
    pid = _new_id(plan.recipe, now)
    root = plans_root()
    root.mkdir(parents=True, exist_ok=True)
    seen: set[tuple] = set()
    for ch in plan.changes:
        try:
            key = (ch.collection, bson.encode({"_id": ch.id}))
        except Exception as exc:  # noqa: BLE001 - an _id BSON cannot hold: name the change
            raise FluxaError(f"the {plan.recipe} plan cannot be saved: the _id of a {ch.op} of {ch.collection} "
                             f"({ch.id!r}) cannot be encoded as BSON: {type(exc).__name__}: {exc}",
                             "a recipe bug or a value BSON cannot hold: fix it, then plan again") from exc
        if key in seen:  # apply and undo decide per document: one change per document
            raise FluxaError(f"the {plan.recipe} plan changes {ch.collection}/{ch.id!r} twice",
                             "a recipe bug: merge the changes of one document into one")
        seen.add(key)
    tmp = root / f".tmp-{pid}"
    tmp.mkdir()
    current = None  # the change being encoded: named when it cannot be
    try:
        h = hashlib.sha256()
        with open(tmp / CHANGES, "wb") as f:
            for i, ch in enumerate(plan.changes):
                current = ch
                ch.before = _normalised(ch.before, ch.id, "before", ch)
                ch.after = _normalised(ch.after, ch.id, "after", ch)
                raw = bson.encode({"i": i, **ch.as_doc(), "before_hash": content_hash(ch.before),
                                   "after_hash": content_hash(ch.after)}, codec_options=CODEC)
                current = None
                f.write(raw)
                h.update(raw)
            f.flush()
            os.fsync(f.fileno())
        meta = {"id": pid, "recipe": plan.recipe, "database": plan.database, "params": ejson(plan.params),
                "source_point": plan.source_point.isoformat(), "verify": list(plan.verify),
                "unresolved": list(plan.unresolved), "summary": plan.summary, "counts": plan.counts(),
                "changes": len(plan.changes), "changes_sha256": h.hexdigest(), "created_at": now.isoformat(),
                "actor": actor, "on_conflict": plan.on_conflict}
        _fsync_write(tmp / PLAN_JSON, json.dumps(meta, indent=2).encode())
        fsync_dir(tmp)
        os.rename(tmp, root / pid)  # the plan directory is whole or absent
        fsync_dir(root)
    except BaseException as exc:  # whatever went wrong (an int BSON cannot hold, a kill): no half plan left
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, FluxaError) or not isinstance(exc, Exception):
            raise
        if current is not None:
            raise FluxaError(f"the {plan.recipe} plan cannot be saved: the change of {current.collection}/"
                             f"{current.id!r} ({current.op}) cannot be encoded as BSON: {type(exc).__name__}: {exc}",
                             "a recipe bug or a value BSON cannot hold (an integer beyond 64 bits, a non-string "
                             "key): fix the document or leave it out of the plan, then plan again") from exc
        raise FluxaError(f"saving the {plan.recipe} plan failed: {type(exc).__name__}: {exc}",
                         "check that FLUXA_HOME is writable, then plan again") from exc
    try:
        with store.session() as s:
            s.add(RecoveryPlan(id=pid, recipe=plan.recipe, database=plan.database, status="planned",
                               params=relaxed(plan.params), counts=plan.counts(), result={},
                               summary=plan.summary or "", plan_dir=str(root / pid), changes_sha256=h.hexdigest(),
                               actor=actor, created_at=now))
    except Exception:
        shutil.rmtree(root / pid, ignore_errors=True)
        raise
    plan.id = pid
    return pid


def row_dict(r: RecoveryPlan) -> dict:
    return {"id": r.id, "recipe": r.recipe, "database": r.database, "status": r.status, "params": r.params,
            "counts": r.counts, "result": r.result or {}, "summary": r.summary, "plan_dir": r.plan_dir,
            "changes_sha256": r.changes_sha256, "incident_id": r.incident_id, "actor": r.actor,
            "created_at": r.created_at, "applied_at": r.applied_at, "verified_at": r.verified_at,
            "undone_at": r.undone_at, "error": r.error}


def on_conflict(row: dict) -> str:
    """A saved plan's conflict mode (plan.json; plans saved before it existed refuse)."""
    try:
        return json.loads((Path(row["plan_dir"]) / PLAN_JSON).read_text()).get("on_conflict") or "refuse"
    except (OSError, ValueError):
        return "refuse"


def get_row(store: Store, plan_id: str) -> dict:
    with store.session() as s:
        r = s.get(RecoveryPlan, plan_id)
        if r is None:
            raise FluxaError(f"no recovery plan {plan_id!r}",
                             "plan ids are printed by `fluxa-integrity recover plan`; list them with `recover list`")
        return row_dict(r)


def list_rows(store: Store, database: str | None = None, limit: int = 100, *, recipe: str | None = None,
              statuses: tuple[str, ...] | None = None) -> list[dict]:
    with store.session() as s:
        q = select(RecoveryPlan).order_by(RecoveryPlan.created_at.desc()).limit(limit)
        if database:
            q = q.where(RecoveryPlan.database == database)
        if recipe:
            q = q.where(RecoveryPlan.recipe == recipe)
        if statuses:
            q = q.where(RecoveryPlan.status.in_(statuses))
        return [row_dict(r) for r in s.scalars(q)]


def iter_change_docs(path: Path) -> Iterator[dict]:
    with open(path, "rb") as f:
        yield from bson.decode_file_iter(f, codec_options=CODEC)


def load(store: Store, plan_id: str) -> Stored:
    row = get_row(store, plan_id)
    d = Path(row["plan_dir"])
    bad = f"recovery plan {plan_id} at {d}"
    try:
        meta = json.loads((d / PLAN_JSON).read_text())
        digest = hashlib.sha256((d / CHANGES).read_bytes()).hexdigest()
    except (OSError, ValueError) as exc:
        raise FluxaError(f"{bad} is unreadable: {exc}", "make a new plan with `fluxa-integrity recover plan`") from exc
    if digest != meta.get("changes_sha256") or digest != row["changes_sha256"]:
        raise FluxaError(f"{bad}: {CHANGES} fails its sha256 (the file was altered or damaged)",
                         "it is refused: make a new plan with `fluxa-integrity recover plan`")
    changes, before_h, after_h = [], [], []
    for doc in iter_change_docs(d / CHANGES):
        ch = Change.from_doc(doc)
        if (content_hash(ch.before), content_hash(ch.after)) != (doc.get("before_hash"), doc.get("after_hash")):
            # the dry run hashes the loaded images, apply the saved hashes: they must agree
            raise FluxaError(f"{bad}: the images of {ch.collection}/{ch.id!r} do not read back as saved",
                             "it is refused: make a new plan with `fluxa-integrity recover plan`")
        changes.append(ch)
        before_h.append(doc.get("before_hash"))
        after_h.append(doc.get("after_hash"))
    plan = Plan(recipe=meta["recipe"], database=meta["database"], params=json_util.loads(meta["params"]),
                source_point=datetime.fromisoformat(meta["source_point"]), changes=changes,
                verify=list(meta.get("verify") or []), unresolved=list(meta.get("unresolved") or []),
                summary=meta.get("summary") or "", id=plan_id, on_conflict=meta.get("on_conflict") or "refuse")
    return Stored(plan, before_h, after_h, row, d)


def set_status(store: Store, plan_id: str, status: str, expected: tuple[str, ...], *, results: dict | None = None,
               **values) -> None:
    """Move the plan to ``status`` only from one of ``expected``; ``results`` ({step: outcome})
    are merged into the row's results in the same statement."""
    with store.session() as s:
        if results:
            current = s.scalar(select(RecoveryPlan.result).where(RecoveryPlan.id == plan_id)) or {}
            values["result"] = {**current, **{k: relaxed(v) for k, v in results.items()}}
        res = s.execute(update(RecoveryPlan).where(RecoveryPlan.id == plan_id, RecoveryPlan.status.in_(expected))
                        .values(status=status, **values))
        if res.rowcount != 1:
            now = s.scalar(select(RecoveryPlan.status).where(RecoveryPlan.id == plan_id))
            raise FluxaError(f"recovery plan {plan_id} is {now}, not {' or '.join(expected)}: another command changed it",
                             "check `fluxa-integrity recover list`, then rerun")


def update_row(store: Store, plan_id: str, **values) -> None:
    with store.session() as s:
        s.execute(update(RecoveryPlan).where(RecoveryPlan.id == plan_id).values(**values))


def drop_result(store: Store, plan_id: str, step: str) -> None:
    """Remove ``step`` from the plan's results (a pending timeline record, once recorded)."""
    with store.session() as s:
        r = s.get(RecoveryPlan, plan_id)
        if r is not None and step in (r.result or {}):
            r.result = {k: v for k, v in r.result.items() if k != step}


def merge_result(store: Store, plan_id: str, step: str, outcome: dict, **values) -> None:
    """Keep ``outcome`` (JSON-ready) as the plan's latest ``step`` (apply, undo, verify) result."""
    with store.session() as s:
        r = s.get(RecoveryPlan, plan_id)
        r.result = {**(r.result or {}), step: relaxed(outcome)}
        for k, v in values.items():
            setattr(r, k, v)
