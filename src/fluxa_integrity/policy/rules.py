"""Rule declarations: what the checks must hold true, per collection, as policy data.

Each rule has an ``id`` unique in the policy and a ``kind`` (the discriminator). Field paths are
dotted (``preferences.theme``). The scanner (``checks/``) evaluates every rule of a collection in
one pass; cross-collection rules (references, counters, timestamp order, copied fields, sync)
need key sets built from the other collection, also in one pass each.

Categories map rules to the playbook's check schedule (S39): ``schema`` (continuous),
``referential`` (daily), ``consistency`` (weekly), plus ``data_loss``, ``corruption`` and
``sync`` which the policy schedules too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BsonType = Literal["string", "int", "long", "double", "decimal", "bool", "date", "objectId",
                   "array", "object", "null", "number", "timestamp", "binData", "regex"]
# "number" is shorthand for int, long, double or decimal.
Format = Literal["email"]  # checks/formats.py implements each name


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Letters of either case: ids echo the (camelCase) field names, e.g. users.createdAt.type.
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", description="Unique in the policy; findings carry it.")
    description: str = ""
    enabled: bool = True


class FieldRule(_Rule):
    """Schema of one field (S5, S9): presence, BSON type, enum, pattern/format, range, length,
    nullability, unknown keys in a sub-document. Every constraint given is checked.

    ``nullable`` unset means: a required field must not be null (variant ``null``); on an
    optional field null is checked like any other value against ``types`` and ``enum`` (a null
    theme is not one of the themes). ``nullable: true`` accepts null outright, ``false``
    refuses it everywhere."""

    kind: Literal["field"] = "field"
    category: Literal["schema"] = "schema"
    field: str
    required: bool = False
    nullable: bool | None = None
    types: list[BsonType] | None = None
    enum: list | None = None
    pattern: str | None = None  # a Python regex searched in string values
    format: Format | None = None  # also refuses control/invisible characters (checks/formats.py)
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    allowed_keys: list[str] | None = None  # for sub-documents: any other key is a violation
    # a sub-document used as a map (its keys are data, e.g. hashes), or an array: every key
    # matches key_pattern; every value of the map / element of the array has one of
    # values_types and is one of values_enum
    key_pattern: str | None = None
    values_types: list[BsonType] | None = None
    values_enum: list | None = None
    only_if_present: bool = False  # skip documents lacking the field entirely (e.g. lastLogin)
    # what `recover plan correct-by-policy` sets when the value is missing or invalid and no
    # backup holds a valid one (the playbook: theme -> system); null: no default (a null value
    # is never a default: say `nullable: true` instead)
    default: Any = None

    @field_validator("pattern", "key_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        # at load, so `policy validate` names the file and line instead of `check run` crashing
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
        return value

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def null_allowed(self) -> bool:
        """Whether a present-but-null value passes the presence check (see the class doc)."""
        return self.nullable if self.nullable is not None else not self.required


class FieldOrderRule(_Rule):
    """Two dates of one document in order (S3): ``earlier <= later``, e.g. createdAt <= lastUpdated.
    Documents where either is missing or not a date are skipped (the type rules report those)."""

    kind: Literal["field_order"] = "field_order"
    category: Literal["consistency"] = "consistency"
    earlier: str
    later: str


class UniqueRule(_Rule):
    """Values that must be unique across the collection (S6); single or compound key."""

    kind: Literal["unique"] = "unique"
    category: Literal["referential"] = "referential"
    fields: list[str] = Field(min_length=1)
    case_insensitive: bool = False
    ignore_missing: bool = True  # documents lacking every key field are not compared


class ReferenceRule(_Rule):
    """``field`` must match ``to_field`` of a document in ``to`` (S2). A present-but-null value
    is its own finding (``<id>:null``) unless ``allow_null``; a missing field is fine unless
    ``required``. ``array``: the field holds a list of references."""

    kind: Literal["reference"] = "reference"
    category: Literal["referential"] = "referential"
    field: str
    to: str
    to_field: str = "_id"
    array: bool = False
    allow_null: bool = False
    required: bool = False


class CounterRule(_Rule):
    """A denormalised counter equals the number of children pointing here (S3)."""

    kind: Literal["counter"] = "counter"
    category: Literal["consistency"] = "consistency"
    field: str  # e.g. messageCount on conversations
    child_collection: str  # e.g. messages
    child_field: str  # e.g. conversationId
    only_if_present: bool = True  # a missing counter is a migration finding, not this one


class TimestampOrderRule(_Rule):
    """A child's date against its parent's (S3). ``relation: not_before`` (the default): the
    child's ``field`` is not before the parent's, e.g. message.timestamp >= conversation.createdAt
    (variant ``before_parent``). ``not_after``: not after it, e.g. message.timestamp <=
    conversation.lastUpdated, or nothing a user owns is newer than the user's ``deletedAt``
    (variant ``after_parent``). Parents lacking the date (a user never deleted) are skipped."""

    kind: Literal["timestamp_order"] = "timestamp_order"
    category: Literal["consistency"] = "consistency"
    field: str  # on this (child) collection
    parent_ref: str  # field of this collection holding the parent id
    parent_collection: str
    parent_field: str
    relation: Literal["not_before", "not_after"] = "not_before"


class CopiedFieldRule(_Rule):
    """A value copied from a parent equals its source (S3), e.g. message.userId == conversation.userId."""

    kind: Literal["copied_field"] = "copied_field"
    category: Literal["consistency"] = "consistency"
    field: str
    parent_ref: str
    parent_collection: str
    parent_field: str


class MigrationRule(_Rule):
    """Documents not at the expected schema version, or missing the fields the migration adds (S9)."""

    kind: Literal["migration"] = "migration"
    category: Literal["schema"] = "schema"
    version_field: str = "schemaVersion"
    expected_version: int
    adds_fields: list[str] = Field(default_factory=list)


class CountDropRule(_Rule):
    """The document count dropped more than ``max_drop_percent`` since the last run (S10)."""

    kind: Literal["count_drop"] = "count_drop"
    category: Literal["data_loss"] = "data_loss"
    max_drop_percent: float = Field(10.0, gt=0, le=100)


class DeletionsRule(_Rule):
    """Deletions since a time (S10): soft deletes (``soft_delete_field`` newer than the window
    start) and audit-log ``delete`` entries for this collection. The window starts at
    ``check run --since`` or else ``lookback`` before now."""

    kind: Literal["deletions"] = "deletions"
    category: Literal["data_loss"] = "data_loss"
    soft_delete_field: str | None = None
    audit_collection: str | None = None
    audit_operation_field: str = "operation"
    audit_collection_field: str = "collection"
    audit_document_field: str = "documentId"
    audit_timestamp_field: str = "timestamp"
    lookback: str = "24h"  # duration: 15m, 1h, 24h, 7d

    @model_validator(mode="after")
    def _one_source(self):
        if not self.soft_delete_field and not self.audit_collection:
            raise ValueError("a deletions rule needs soft_delete_field, audit_collection or both")
        return self


class IndexSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[tuple[str, int]]  # [["email", 1]]
    unique: bool = False


class CorruptionRule(_Rule):
    """The server's ``validate`` verdict for the collection and the indexes that must exist (S7)."""

    kind: Literal["corruption"] = "corruption"
    category: Literal["corruption"] = "corruption"
    validate_collection: bool = True
    expected_indexes: list[IndexSpec] = Field(default_factory=list)


class SyncRule(_Rule):
    """Drift against a secondary system's copy (S8): ids missing there, ids only there, and
    documents changed after the last synchronisation (``timestamp_field`` > the sync state)."""

    kind: Literal["sync"] = "sync"
    category: Literal["sync"] = "sync"
    secondary_db: str  # "{db}" is replaced by the application database name
    secondary_collection: str
    timestamp_field: str = "lastUpdated"
    sync_state_collection: str = "syncState"
    sync_state_id: str
    sync_state_field: str = "lastSyncAt"
    # How the sync recipe (recover plan sync, S31) brings the secondary in line:
    # ``fields``: what the secondary keeps of each document besides _id (None: the whole document);
    # ``winner``: who wins a record that differs - ``primary`` (the system of record, default) or
    # ``newest`` (the side whose ``timestamp_field`` is later; the primary on a tie or a missing stamp);
    # ``extra``: ids only the secondary has are deleted there (default) or only reported.
    fields: list[str] | None = None
    winner: Literal["primary", "newest"] = "primary"
    extra: Literal["delete", "report"] = "delete"


Rule = Annotated[
    Union[FieldRule, FieldOrderRule, UniqueRule, ReferenceRule, CounterRule, TimestampOrderRule, CopiedFieldRule,
          MigrationRule, CountDropRule, DeletionsRule, CorruptionRule, SyncRule],
    Field(discriminator="kind"),
]

RULE_CATEGORIES = ("schema", "referential", "consistency", "data_loss", "corruption", "sync")
