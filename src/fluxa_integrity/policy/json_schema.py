"""The JSON Schema of a policy file, for editors (yaml-language-server, VS Code, JetBrains).

Generated from the pydantic models, so it cannot drift from what the loader accepts, then
sharpened where pydantic's export is looser than the models: durations get their pattern (the
models check them in a validator, invisible to the schema) and every rule requires its ``kind``
(the discriminator an editor needs to pick the rule's settings to complete). The loader stays
the authority: cross-section checks (unknown collections, roles, levels) are not expressible in
JSON Schema and only ``policy validate`` reports them.
"""

from __future__ import annotations

from typing import Any

from .loader import DURATION_FIELDS
from .models import Policy

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:fluxa-integrity:policy:1"  # a name, not a download address
# parse_duration accepts surrounding blanks and either case: 15m, 1h30m, 30D
DURATION_PATTERN = r"^\s*(?:[0-9]+[smhdwSMHDW])+\s*$"


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(mode="validation")
    for definition in schema.get("$defs", {}).values():
        _sharpen(definition)
    _sharpen(schema)
    return {"$schema": DRAFT, "$id": SCHEMA_ID, **schema, "title": "Fluxa Integrity policy",
            "description": "The data-integrity playbook as data: criticality classes, schedules, severity, "
                           "clocks, escalation, response phases, templates and per-collection rules "
                           "(docs/policy.md). Check a file with `fluxa-integrity policy validate FILE`."}


def _sharpen(definition: dict) -> None:
    props = definition.get("properties", {})
    for field, prop in props.items():
        if field in DURATION_FIELDS:
            for branch in prop.get("anyOf", [prop]):
                if branch.get("type") == "string":
                    branch["pattern"] = DURATION_PATTERN
    kind = props.get("kind", {})
    if "const" in kind and "kind" not in definition.get("required", []):
        definition["required"] = ["kind", *definition.get("required", [])]

