"""The recovery plan: what every recipe produces and the one engine applies, verifies and undoes.

A plan is a list of document-level changes against one application database. Each change
carries the whole live document as it was read when the plan was made (``before``, None for an
insert) and the whole document it should become (``after``, None for a delete), so:

- apply can tell a conflict from an already-applied change by comparing the live document with
  ``before`` and ``after`` (content hash of canonical BSON), never overwriting a newer write;
- undo puts ``before`` back exactly (same bytes, same hash);
- a dry run can show every change readably, field by field.

``fields`` names the fields an ``update`` touches (dotted paths), for display and for the
data class; the engine still compares and writes whole documents, which keeps apply idempotent
without transactions. ``reason`` says where the change comes from (a finding fingerprint, a log
entry, an audit record, a backup) in words a responder can follow.

A recipe is registered once with ``register`` and declares its parameters as ``Param`` rows so
every face (CLI, API, scheduler, drill) builds the same plan from the same inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import bson
from bson.codec_options import CodecOptions

from ..errors import FluxaError

OPS = ("insert", "replace", "update", "delete")
# what apply does with a conflict (a live document changed since the plan read it): "refuse"
# skips it unless forced by id; "supersede" keeps the live document in the journal, then writes
ON_CONFLICT = ("refuse", "supersede")
_CANON = CodecOptions(tz_aware=True)


def content_hash(doc: dict | None) -> str | None:
    """sha256 of the document's BSON bytes (field order and types count), None for absence."""
    if doc is None:
        return None
    raw = doc.raw if hasattr(doc, "raw") else bson.encode(doc, codec_options=_CANON)
    return hashlib.sha256(raw).hexdigest()


@dataclass
class Change:
    collection: str  # in the plan's database; "<db>.<coll>" for another database (a sync target)
    op: str  # one of OPS
    id: Any  # the document's _id
    before: dict | None  # the live document when planned; None for an insert
    after: dict | None  # the document it becomes; None for a delete
    reason: str  # where the change comes from, readable
    data_class: str | None = None  # the policy's class for the collection (or the changed fields)
    fields: list[str] = field(default_factory=list)  # for update: dotted paths that change

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise FluxaError(f"unknown change kind {self.op!r}", f"one of: {', '.join(OPS)}")
        if (self.op == "insert") != (self.before is None) or (self.op == "delete") != (self.after is None):
            raise FluxaError(f"a {self.op} change of {self.collection}/{self.id!r} has the wrong images",
                             "insert has no before-image, delete no after-image, the others both")

    def as_doc(self) -> dict:
        return {"collection": self.collection, "op": self.op, "id": self.id, "before": self.before,
                "after": self.after, "reason": self.reason, "data_class": self.data_class,
                "fields": list(self.fields)}

    @classmethod
    def from_doc(cls, d: dict) -> "Change":
        return cls(collection=d["collection"], op=d["op"], id=d["id"], before=d.get("before"),
                   after=d.get("after"), reason=d.get("reason", ""), data_class=d.get("data_class"),
                   fields=list(d.get("fields") or []))


@dataclass
class Plan:
    """What a recipe proposes. ``source_point`` is when the before-images were read: a live
    document that differs from its before-image at apply time changed after it (a conflict).
    ``verify`` names the policy rule ids whose findings this plan should close; ``unresolved``
    lists what the recipe found but cannot fix (shown in the dry run, kept on the record)."""

    recipe: str
    database: str
    params: dict
    source_point: datetime
    changes: list[Change]
    verify: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    summary: str = ""
    id: str | None = None  # assigned when the plan is saved
    on_conflict: str = "refuse"  # one of ON_CONFLICT; "supersede" is `restore promote`'s mode

    def counts(self) -> dict[str, dict[str, int]]:
        """{collection: {op: n}}"""
        out: dict[str, dict[str, int]] = {}
        for c in self.changes:
            per = out.setdefault(c.collection, {})
            per[c.op] = per.get(c.op, 0) + 1
        return out


@dataclass
class Param:
    """One input of a recipe, as every face shows it (CLI option ``--<name>``)."""

    name: str  # kebab-case; the build function gets it snake_case
    help: str
    type: type = str  # str, int, float, bool, datetime; list[...] via multiple=True
    multiple: bool = False
    required: bool = False
    default: Any = None


@dataclass
class RecipeSpec:
    name: str  # e.g. "reconstruct-from-logs"
    feature: str  # the playbook feature, e.g. "S26"
    summary: str  # one line for `recover plan --help`
    params: list[Param]
    build: Callable[..., Plan]  # build(ctx: RecipeContext, **params) -> Plan
    # what is not a document (indexes, recipes/indexes.py): the engine calls these after the
    # documents, inside its error handling; (db, plan, plan_dir) -> {collection: {kind: n}};
    # idempotent, so a rerun of apply or undo completes
    apply_extra: Callable[..., dict] | None = None
    undo_extra: Callable[..., dict] | None = None


@dataclass
class RecipeContext:
    """What a recipe reads from: the live database handle (resolved once at the face), the
    policy, the state store, the clock, an optional progress callback(label, done, total)."""

    db: Any  # pymongo Database
    policy: Any  # policy.Policy
    store: Any  # store.Store
    now: datetime
    progress: Callable[[str, int, int | None], None] | None = None

    def tick(self, label: str, done: int, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(label, done, total)


_RECIPES: dict[str, RecipeSpec] = {}


def register(spec: RecipeSpec) -> RecipeSpec:
    if spec.name in _RECIPES:
        raise RuntimeError(f"recipe {spec.name!r} registered twice")
    _RECIPES[spec.name] = spec
    return spec
