"""Schema migrations as policy data: what a migration does to each document, declared step by
step, so the `migrate` recipe (S30) can apply it as a corrective migration or roll it back.

Shape (YAML, top-level ``migrations:`` list)::

    - id: conversations-v2
      collection: conversations
      rule: conversations.migration     # the migration rule that finds documents it has not reached
      steps:
        - {op: add_field, field: messageCount, before: schemaVersion,
           count_children: {collection: messages, field: conversationId}}
        - {op: set_version, field: schemaVersion, value: 2}

Steps run in order on one document. ``add_field`` sets a field the document lacks (never
overwrites one it has) to ``value`` or to the number of documents of ``count_children`` whose
``field`` points at it; ``before`` places the new key before that field (documents compared by
content hash care about key order; MongoDB's ``$set`` would append it). ``rename`` moves a value
to a new name in place, ``convert`` changes a value's BSON type when it converts without loss
(else the document is left to `unresolved`), ``remove_field`` drops a field, ``set_version``
sets the version field. Validation at load: exactly one of ``value``/``count_children`` on
``add_field``; the cross-section checks (collection and rule exist) are in models.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CountChildren(_Step):
    collection: str = Field(min_length=1)
    field: str = Field(min_length=1)  # on the child, holding the parent's _id


class AddField(_Step):
    op: Literal["add_field"] = "add_field"
    field: str = Field(min_length=1)
    value: Any = None
    count_children: CountChildren | None = None
    before: str | None = None  # an existing top-level field the new key goes in front of

    @model_validator(mode="after")
    def _one_source(self):
        # null means "not given" (so `policy show --json` round-trips): a null value is no default
        if (self.value is not None) == (self.count_children is not None):
            raise ValueError("add_field needs exactly one of value (not null) or count_children")
        return self


class Rename(_Step):
    op: Literal["rename"] = "rename"
    field: str = Field(min_length=1)  # the old name
    to: str = Field(min_length=1)


ConvertTo = Literal["int", "long", "double", "string", "bool", "date", "objectId"]


class Convert(_Step):
    op: Literal["convert"] = "convert"
    field: str = Field(min_length=1)
    to: ConvertTo


class RemoveField(_Step):
    op: Literal["remove_field"] = "remove_field"
    field: str = Field(min_length=1)


class SetVersion(_Step):
    op: Literal["set_version"] = "set_version"
    field: str = "schemaVersion"
    value: int


MigrationStep = Annotated[Union[AddField, Rename, Convert, RemoveField, SetVersion], Field(discriminator="op")]


class Migration(_Step):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    collection: str = Field(min_length=1)
    description: str = ""
    rule: str | None = None  # id of the `migration` rule whose findings a forward run closes
    steps: list[MigrationStep] = Field(min_length=1)

    def touched_fields(self) -> list[str]:
        """Every field a step writes or removes (rollback restores exactly these)."""
        out: list[str] = []
        for s in self.steps:
            for f in ([s.field, s.to] if isinstance(s, Rename) else [s.field]):
                if f not in out:
                    out.append(f)
        return out
