"""Rules decided by one document alone: field schema (S5) and migration state (S9).

Each rule compiles to a function ``doc -> [(variant, value, message), ...]``, so the scan loop
does no rule interpretation per document.
"""

from __future__ import annotations

import re
from typing import Callable

from ..fluxa.model import EMAIL_PATTERN
from ..policy.rules import FieldRule, MigrationRule
from .values import MISSING, bson_type, get_path, type_matches

Violation = tuple[str, object, str]
Check = Callable[[dict], list[Violation]]

FORMATS = {"email": re.compile(EMAIL_PATTERN)}


def compile_field_rule(rule: FieldRule, collection: str) -> Check:
    path = rule.field
    where = f"{collection}.{path}"
    pattern = re.compile(rule.pattern) if rule.pattern else None
    fmt = FORMATS[rule.format] if rule.format else None
    enum = rule.enum
    allowed = set(rule.allowed_keys) if rule.allowed_keys is not None else None

    def check(doc: dict) -> list[Violation]:
        v = get_path(doc, path)
        if v is MISSING:
            if rule.required and not rule.only_if_present:
                return [("missing", v, f"{where} is missing")]
            return []
        if v is None:
            if not rule.nullable:
                return [("null", v, f"{where} is null")]
            if not rule.types or "null" in rule.types:
                return []
        if rule.types and not type_matches(v, rule.types):
            return [("type", v, f"{where} should be {' or '.join(rule.types)}, found {bson_type(v)}")]
        out: list[Violation] = []
        if enum is not None and v not in enum:
            out.append(("enum", v, f"{where} should be one of {enum}"))
        if isinstance(v, str):
            if pattern is not None and not pattern.search(v):
                out.append(("pattern", v, f"{where} does not match /{rule.pattern}/"))
            if fmt is not None and not fmt.match(v):
                out.append(("format", v, f"{where} is not a valid {rule.format}"))
        if (rule.min is not None or rule.max is not None) and isinstance(v, (int, float)) and not isinstance(v, bool):
            if (rule.min is not None and v < rule.min) or (rule.max is not None and v > rule.max):
                out.append(("range", v, f"{where} is outside [{rule.min}, {rule.max}]"))
        if rule.max_length is not None and isinstance(v, (str, list)) and len(v) > rule.max_length:
            out.append(("length", v, f"{where} is longer than {rule.max_length}"))
        if allowed is not None and isinstance(v, dict):
            unknown = sorted(set(v) - allowed)
            if unknown:
                out.append(("unknown_keys", unknown, f"{where} has keys outside {sorted(allowed)}"))
        return out

    return check


def compile_migration_rule(rule: MigrationRule, collection: str) -> Check:
    where = f"{collection}.{rule.version_field}"

    def check(doc: dict) -> list[Violation]:
        out: list[Violation] = []
        v = get_path(doc, rule.version_field)
        if v != rule.expected_version:
            out.append(("version", v, f"{where} is not {rule.expected_version} (migration not applied)"))
        for f in rule.adds_fields:
            if get_path(doc, f) is MISSING:
                out.append((f"missing:{f}", MISSING,
                            f"{collection}.{f}, added by migration to v{rule.expected_version}, is missing"))
        return out

    return check


def compile_document_rule(rule, collection: str) -> Check | None:
    if isinstance(rule, FieldRule):
        return compile_field_rule(rule, collection)
    if isinstance(rule, MigrationRule):
        return compile_migration_rule(rule, collection)
    return None
