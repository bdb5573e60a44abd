"""What the data-loss recipes read from the policy: how a collection's documents are rebuilt from
application log entries (S26, ``reconstruct``) and how undelete finds the children soft-deleted
with a parent (S28, ``undelete``). Both sit under a collection's policy (models.CollectionPolicy).

``reconstruct.fields`` is an ordered mapping, document field -> where its value comes from: a
log field name, ``$operation`` (the ``operations`` value of the entry's operation, e.g. the
sender) or ``$previous`` (the ``_id`` of the document before this one in the same ``group``,
ordered by ``time``; the field is left out on the group's first document). The rebuilt document
is ``_id`` followed by these fields in this order, so a document rebuilt from a complete log is
byte-for-byte the one that was lost. Validation errors are ``ValueError``s pydantic turns into a
located load problem.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .durations import parse_duration

SPECIAL = ("$operation", "$previous")


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reconstruct(_Model):
    """Rebuild missing documents of this collection from log entries (S26)."""

    log_collection: str = "logs"  # in the same database; --log-file lines have the same fields
    operation_field: str = "operation"
    operations: dict[str, str] = Field(min_length=1)  # log operation -> the value of $operation
    id_field: str | None = None  # log field holding the original _id (else a deterministic id)
    fields: dict[str, str] = Field(min_length=1)  # document field -> log field | $operation | $previous
    group: str | None = None  # document field naming the parent (--conversation, $previous, counter)
    time: str  # document field: --since/--until and the order within a group
    match: list[str] = Field(default_factory=list)  # document fields identifying a document without its id
    provenance_field: str | None = None  # when set, each rebuilt document carries {from, logId} there

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        for name in [self.group, self.time, *self.match]:
            if name is not None and name not in self.fields:
                problems.append(f"{name!r} is not a field of `fields` ({', '.join(self.fields)})")
        for doc_field, source in self.fields.items():
            if source.startswith("$") and source not in SPECIAL:
                problems.append(f"fields.{doc_field}: {source!r} is not a log field, $operation or $previous")
            if source == "$previous" and self.group is None:
                problems.append(f"fields.{doc_field}: $previous needs `group` (the documents it orders)")
        if self.time in self.fields and self.fields[self.time].startswith("$"):
            problems.append(f"time field {self.time!r} must come from a log field")
        if self.provenance_field in self.fields or self.provenance_field == "_id":
            problems.append(f"provenance_field {self.provenance_field!r} is already a rebuilt field")
        if self.provenance_field is not None and (not self.provenance_field or self.provenance_field.startswith("$")
                                                  or "." in self.provenance_field):
            problems.append(f"provenance_field {self.provenance_field!r} must be a plain top-level key "
                            "(no '$' prefix, no '.')")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def log_field(self, doc_field: str) -> str | None:
        """The log field a document field is copied from (None for $operation/$previous)."""
        source = self.fields.get(doc_field)
        return None if source is None or source.startswith("$") else source


class Undelete(_Model):
    """How undelete (S28) tells which soft-deleted children went with a parent: children of this
    collection (collections whose reference rules point here and whose deletions rule names a
    soft-delete field) whose marker lies within ``cascade_window`` of the parent's."""

    cascade_window: Annotated[str, AfterValidator(_duration)] = "1m"
