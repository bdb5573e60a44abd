"""Rules decided by one document alone: field schema (S5), the order of two dates in the same
document (S3) and migration state (S9).

Each rule compiles to a function ``doc -> [(variant, value, message), ...]``, so the scan loop
does no rule interpretation per document. That function is the rule's definition. For the scan,
a rule also compiles to a *screen* ``Batch -> [document index, ...]``: the documents of a batch
that the definition must look at. A screen clears documents a column at a time from facts that
imply the definition finds nothing (every value is of a type the rule accepts with no further
test, every value is one of the enum's); whatever it cannot clear goes to the definition. So a
screen may pass too many documents, never too few.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Callable

import numpy as np
from bson import Decimal128, Int64, ObjectId, Timestamp
from bson.binary import Binary
from bson.regex import Regex

from ..policy.rules import FieldOrderRule, FieldRule, MigrationRule, ReferenceRule, UniqueRule
from .columns import Batch
from .facts import to_ms
from .formats import FORMATS
from .values import (MISSING, NONE, NUMBER_TYPES, MissingType, bson_type, get_path, key_hash, normalise_key,
                     type_matches)

Violation = tuple[str, object, str]
Check = Callable[[dict], list[Violation]]
Screen = Callable[[Batch], list[int]]

# Python types whose every value has one BSON type name (int is 'int' or 'long' by its size)
_TYPE_NAMES = {str: "string", datetime: "date", ObjectId: "objectId", bool: "bool", float: "double",
               dict: "object", list: "array", Int64: "long", Decimal128: "decimal", Decimal: "decimal",
               bytes: "binData", Binary: "binData", Timestamp: "timestamp", Regex: "regex"}
_NULL = type(None)


def compile_field_rule(rule: FieldRule, collection: str) -> Check:
    path = rule.field
    where = f"{collection}.{path}"
    pattern = re.compile(rule.pattern) if rule.pattern else None
    fmt = FORMATS[rule.format] if rule.format else None
    enum = rule.enum
    allowed = set(rule.allowed_keys) if rule.allowed_keys is not None else None
    key_re = re.compile(rule.key_pattern) if rule.key_pattern else None
    nullable = rule.null_allowed
    # null is a value like any other unless the policy says `nullable: true` (or lists it in
    # types/enum): a null theme is not one of the enum's values
    null_ok = rule.nullable is True or (rule.types is not None and "null" in rule.types) or (
        enum is not None and None in enum) or (rule.types is None and enum is None)

    def check(doc: dict) -> list[Violation]:
        v = get_path(doc, path)
        if v is MISSING:
            if rule.required and not rule.only_if_present:
                return [("missing", v, f"{where} is missing")]
            return []
        if v is None:
            if not nullable:
                return [("null", v, f"{where} is null")]
            if null_ok:
                return []
        if rule.types and not type_matches(v, rule.types):
            return [("type", v, f"{where} should be {' or '.join(rule.types)}, found {bson_type(v)}")]
        out: list[Violation] = []
        if enum is not None and v not in enum:
            out.append(("enum", v, f"{where} should be one of {enum}"))
        if isinstance(v, str):
            if pattern is not None and not pattern.search(v):
                out.append(("pattern", v, f"{where} does not match /{rule.pattern}/"))
            if fmt is not None and not fmt(v):
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
        if key_re is not None and isinstance(v, dict):
            bad = sorted(k for k in v if not key_re.search(k))
            if bad:
                out.append(("key_pattern", bad[:10], f"{where} has keys not matching /{rule.key_pattern}/"))
        if (rule.values_types or rule.values_enum is not None) and isinstance(v, (dict, list)):
            items = list(v.values()) if isinstance(v, dict) else v
            if rule.values_types and any(not type_matches(x, rule.values_types) for x in items):
                found = sorted({bson_type(x) for x in items if not type_matches(x, rule.values_types)})
                out.append(("values_type", found, f"{where} holds {', '.join(found)} values, "
                                                  f"expected {' or '.join(rule.values_types)}"))
            if rule.values_enum is not None:
                outside = [x for x in items if x not in rule.values_enum]
                if outside:
                    out.append(("values_enum", outside[:10], f"{where} holds values outside {rule.values_enum}"))
        return out

    return check


def _accepts(rule: FieldRule, name: str) -> bool:
    return rule.types is None or name in rule.types or ("number" in rule.types and name in NUMBER_TYPES)


def _quick_types(rule: FieldRule) -> frozenset:
    """Types whose every value passes ``rule`` with no test but the enum's: their BSON type is
    allowed and no pattern, format, range, length or key test applies to them."""
    quick = set()
    for t, name in _TYPE_NAMES.items():
        if not _accepts(rule, name):
            continue
        if t is str and (rule.pattern or rule.format or rule.max_length is not None):
            continue
        if t in (float, Int64) and (rule.min is not None or rule.max is not None):
            continue
        if t is list and (rule.max_length is not None or rule.values_types or rule.values_enum is not None):
            continue
        if t is dict and (rule.allowed_keys is not None or rule.key_pattern or rule.values_types
                          or rule.values_enum is not None):
            continue
        quick.add(t)
    if _accepts(rule, "int") and _accepts(rule, "long") and rule.min is None and rule.max is None:
        quick.add(int)
    if not (rule.required and not rule.only_if_present):
        quick.add(MissingType)
    null_ok = rule.nullable is True or (rule.types is not None and "null" in rule.types) or (
        rule.enum is not None and None in rule.enum) or (rule.types is None and rule.enum is None)
    if rule.null_allowed and null_ok:
        quick.add(_NULL)
    return frozenset(quick)


def _field_screen(rule: FieldRule) -> Screen:
    path = rule.field
    quick = _quick_types(rule)
    if rule.enum is None:
        def screen(batch: Batch) -> list[int]:
            if batch.types(path) <= quick:
                return []
            return [i for i, v in enumerate(batch.values(path)) if type(v) not in quick]
        return screen
    # an enum: a value passes when its type is quick and it is one of the values; absent and
    # null values pass by their type alone (the definition returns before the enum test)
    free = quick & {MissingType, _NULL}
    hashable = frozenset(t for t in quick if t.__hash__ is not None)  # not dict, list
    allowed = frozenset(v for v in rule.enum if type(v) in hashable and type(v) not in free)

    def screen(batch: Batch) -> list[int]:
        col = batch.values(path)
        types = batch.types(path)
        if types <= hashable:
            if not types & free:  # every document holds a value: one set of them all
                if set(col) <= allowed:
                    return []
            elif types <= free or {v for v in col if type(v) not in free} <= allowed:
                return []
        return [i for i, v in enumerate(col)
                if type(v) not in free and (type(v) not in hashable or v not in allowed)]
    return screen


def _field_order_screen(rule: FieldOrderRule) -> Screen:
    def screen(batch: Batch) -> list[int]:
        a, b = batch.ms(rule.earlier), batch.ms(rule.later)
        return np.flatnonzero((a != NONE) & (b != NONE) & (b < a)).tolist()
    return screen


def _migration_screen(rule: MigrationRule) -> Screen:
    def screen(batch: Batch) -> list[int]:
        col = batch.values(rule.version_field)
        try:
            clean = set(col) <= {rule.expected_version}
        except TypeError:  # an unhashable version (a document, an array): not the expected one
            clean = False
        if clean and all(MissingType not in batch.types(f) for f in rule.adds_fields):
            return []
        return list(range(batch.n))
    return screen


def compile_screen(rule) -> Screen | None:
    """The batch screen of a rule ``compile_document_rule`` compiles (None for other kinds)."""
    if isinstance(rule, FieldRule):
        return _field_screen(rule)
    if isinstance(rule, FieldOrderRule):
        return _field_order_screen(rule)
    if isinstance(rule, MigrationRule):
        return _migration_screen(rule)
    return None


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


def compile_field_order_rule(rule: FieldOrderRule, collection: str) -> Check:
    """``earlier <= later`` within one document; documents lacking either date are the type
    rules' business (a string or a missing date is not compared)."""
    msg = f"{collection}.{rule.later} is before {collection}.{rule.earlier}"

    def check(doc: dict) -> list[Violation]:
        a, b = get_path(doc, rule.earlier), get_path(doc, rule.later)
        if isinstance(a, datetime) and isinstance(b, datetime) and to_ms(b) < to_ms(a):
            return [("out_of_order", {rule.earlier: a, rule.later: b}, msg)]
        return []

    return check


def reference_items(rule: ReferenceRule, collection: str, doc: dict) -> tuple[list[Violation], list]:
    """The half of a reference rule one document decides: a missing or null reference is a
    violation by itself; the values it holds (one, or each item of an array) must exist in
    ``rule.to``. The scan looks them up in a key set per batch, continuous validation by an
    indexed query per value: this is the one definition both use."""
    v = get_path(doc, rule.field)
    if v is MISSING:
        return ([("missing", v, f"{collection}.{rule.field} is missing")] if rule.required else []), []
    if v is None:
        return ([] if rule.allow_null else [("null", v, f"{collection}.{rule.field} is present but null")]), []
    out: list[Violation] = []
    items = []
    for item in (v if rule.array and isinstance(v, list) else [v]):
        if item is None:
            if not rule.allow_null:
                out.append(("null", item, f"{collection}.{rule.field} holds a null reference"))
            continue
        items.append(item)
    return out, items


def dangling_message(rule: ReferenceRule, collection: str) -> str:
    return f"{collection}.{rule.field} -> {rule.to}.{rule.to_field}: no such document"


def unique_keys(rule: UniqueRule, docs: list[dict]):
    """``(index, key hash, value)`` of each document a unique rule compares, in read order."""
    for i, d in enumerate(docs):
        vals = [get_path(d, f) for f in rule.fields]
        if rule.ignore_missing and all(v is MISSING for v in vals):
            continue
        key = key_hash(tuple(None if v is MISSING else normalise_key(v, rule.case_insensitive) for v in vals)) \
            if len(vals) > 1 else key_hash(None if vals[0] is MISSING else normalise_key(vals[0], rule.case_insensitive))
        yield i, key, vals[0] if len(vals) == 1 else vals


def unique_message(rule: UniqueRule, collection: str) -> str:
    return (f"{collection}.{'+'.join(rule.fields)} is not unique"
            + (" (case-insensitive)" if rule.case_insensitive else ""))


def compile_document_rule(rule, collection: str) -> Check | None:
    if isinstance(rule, FieldRule):
        return compile_field_rule(rule, collection)
    if isinstance(rule, FieldOrderRule):
        return compile_field_order_rule(rule, collection)
    if isinstance(rule, MigrationRule):
        return compile_migration_rule(rule, collection)
    return None
