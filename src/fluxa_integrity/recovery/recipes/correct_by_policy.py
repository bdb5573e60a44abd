"""Recipe ``correct-by-policy`` (S27): bring a collection's documents in line with the policy's
field rules - the playbook's "Validate and correct user preferences", for any collection.

Which documents: those a field rule of ``--collection`` (or the ``--rule`` ids) rejects, judged
by the checks' own evaluator (checks/document_rules.compile_field_rule), never a second idea of
"valid". For each rejected value, the first of these that the rule accepts is planned:

1. unknown keys of a sub-document removed - only where the rule lists ``allowed_keys``;
2. a lossless type conversion of the value itself (numeric string -> number, ISO date string ->
   date; recovery/field_values.py): it keeps the information the document holds now;
3. the value from the document's history (recovery/document_history.py: the newest full backup,
   then the oplog up to now): the newest version whose value the rule accepts - a fault
   overwrote a valid value, and only history can give that value back (a policy default cannot).
   Used by default whenever such a backup exists; ``--from-backup`` makes it required (no backup
   is an error), ``--defaults-only`` skips it (the playbook's script, literally);
4. the rule's ``default`` (policy: ``users.preferences.theme`` -> system, ``notifications`` ->
   true).
Otherwise the value goes to ``unresolved`` (an email with no valid version anywhere: a person
must decide). The plan's reason names the source of every value (removed keys, conversion,
``backup <id>`` / ``oplog <t:i>``, policy default).

Never a change that the rules would still reject: the corrected document is checked against
every enabled field rule of the collection; a document whose targeted rules still fail after
correction keeps only the fixes that pass, and a correction that would break another rule is
dropped into ``unresolved``. Changes are ``update``s (whole before/after images, ``fields`` = the
dotted paths corrected); keys keep their position. Reads only: the collection once (documents the
rules reject are kept in memory), the backup file and the oplog once when history is needed.
"""

from __future__ import annotations

import copy
from typing import Any

from ...checks.document_rules import compile_field_rule
from ...checks.values import MISSING, get_path, short_repr
from ...errors import FluxaError
from ...policy.rules import FieldRule
from ..document_history import NoHistory, document_history, key
from ..field_values import NO_VALUE, coerce, put, unset_path
from ..model import Change, Param, Plan, RecipeContext, RecipeSpec, register

NAME = "correct-by-policy"


def _show(v: Any) -> str:
    return "(missing)" if v is MISSING else repr(short_repr(v, 40))


def field_rules(policy, collection: str, rule_ids: list[str] | None) -> list[FieldRule]:
    if collection not in policy.collections:
        raise FluxaError(f"the policy has no collection {collection!r}",
                         "collections: " + ", ".join(policy.collections))
    rules = [r for r in policy.collections[collection].rules if isinstance(r, FieldRule) and r.enabled]
    if rule_ids:
        known = {r.id: r for r in policy.collections[collection].rules}
        for rid in rule_ids:
            if rid not in known:
                raise FluxaError(f"no rule {rid!r} on collection {collection!r}",
                                 "field rules: " + ", ".join(r.id for r in rules))
            if not isinstance(known[rid], FieldRule):
                raise FluxaError(f"rule {rid!r} is a {known[rid].kind} rule; correct-by-policy corrects field rules",
                                 "field rules: " + ", ".join(r.id for r in rules))
        rules = [r for r in rules if r.id in rule_ids]
    return rules


class _Checker:
    """Every enabled field rule of the collection, compiled once."""

    def __init__(self, policy, collection: str):
        self.all = [(r, compile_field_rule(r, collection)) for r in field_rules(policy, collection, None)]
        self.by_id = dict((r.id, c) for r, c in self.all)

    def rejects(self, rule_id: str, doc: dict) -> list:
        return self.by_id[rule_id](doc)

    def violations(self, doc: dict) -> set[tuple[str, str]]:
        return {(r.id, v[0]) for r, check in self.all for v in check(doc)}


def _history_value(history, doc_id, rule: FieldRule, trial: dict, checker: _Checker):
    """(value, source) of the newest version whose value the rule accepts, or (NO_VALUE, None)."""
    if history is None:
        return NO_VALUE, None
    current = get_path(trial, rule.field)
    for version in reversed(history.versions.get(key(doc_id), [])):
        if version.doc is None:
            continue
        old = get_path(version.doc, rule.field)
        if old is MISSING and current is MISSING:
            continue
        probe = copy.deepcopy(trial)
        put(probe, rule.field, copy.deepcopy(old))
        if not checker.rejects(rule.id, probe):
            return old, version.source
    return NO_VALUE, None


def _correct(doc: dict, found: list[tuple[FieldRule, list]], history, checker: _Checker, defaults_only: bool
             ) -> tuple[dict, list[str], list[str], list[str]]:
    """(corrected copy, changed paths, reasons, unresolved texts) for one document."""
    new = copy.deepcopy(doc)
    paths: list[str] = []
    reasons: list[str] = []
    unresolved: list[str] = []
    for rule, violations in found:
        where = rule.field
        if not checker.rejects(rule.id, new):
            continue  # an earlier correction (a parent sub-document) already fixed it
        if rule.allowed_keys is not None and any(v[0] == "unknown_keys" for v in violations):
            value = get_path(new, where)
            extra = [k for k in value if k not in set(rule.allowed_keys)]
            for k in extra:
                unset_path(new, f"{where}.{k}")
            paths += [f"{where}.{k}" for k in extra]
            reasons.append(f"{where}: unknown keys {', '.join(extra)} removed ({rule.id} lists the keys)")
            if not checker.rejects(rule.id, new):
                continue
        value = get_path(new, where)
        converted = coerce(value, rule.types)
        if converted is not NO_VALUE:
            probe = copy.deepcopy(new)
            put(probe, where, converted)
            if not checker.rejects(rule.id, probe):
                new = probe
                paths.append(where)
                reasons.append(f"{where}: {_show(value)} converted to {_show(converted)} ({rule.id})")
                continue
        old, source = (NO_VALUE, None) if defaults_only else _history_value(history, doc["_id"], rule, new, checker)
        if old is not NO_VALUE:
            put(new, where, copy.deepcopy(old))
            paths.append(where)
            reasons.append(f"{where}: {_show(value)} -> {_show(old)} from {source}, its newest valid value ({rule.id})")
            continue
        if rule.has_default:
            probe = copy.deepcopy(new)
            put(probe, where, copy.deepcopy(rule.default))
            if not checker.rejects(rule.id, probe):
                new = probe
                paths.append(where)
                why = "no backup" if history is None else "no valid value in its history"
                reasons.append(f"{where}: {_show(value)} -> {_show(rule.default)}, the policy default "
                               f"({why}; {rule.id})")
                continue
        unresolved.append(f"{where} = {_show(value)}: {violations[0][2]}; no conversion, no valid value in "
                          f"{'its history' if history is not None else 'a backup'} and no policy default ({rule.id})")
    return new, paths, reasons, unresolved


def _data_class(policy, collection: str, paths: list[str]) -> str | None:
    classes = [dc for dc in (policy.data_class_for(collection, p) for p in paths) if dc is not None]
    return min(classes, key=lambda dc: dc.recovery_priority).name if classes else None


def build(ctx: RecipeContext, collection: str, rule: list[str] | None = None, from_backup: bool = False,
          defaults_only: bool = False) -> Plan:
    if from_backup and defaults_only:
        raise FluxaError("--from-backup and --defaults-only contradict each other", "give one of them")
    targets = field_rules(ctx.policy, collection, rule)
    if not targets:
        raise FluxaError(f"collection {collection!r} has no enabled field rule to correct by",
                         "add field rules to the policy (docs/policy.md)")
    checker = _Checker(ctx.policy, collection)
    compiled = [(r, compile_field_rule(r, collection)) for r in targets]
    bad: list[tuple[dict, list]] = []
    total = ctx.db[collection].estimated_document_count()
    for n, doc in enumerate(ctx.db[collection].find({}), 1):
        found = [(r, v) for r, check in compiled if (v := check(doc))]
        if found:
            bad.append((doc, found))
        if n % 1000 == 0:
            ctx.tick(f"reading {collection}", n, total)

    history, note = None, None
    if bad and not defaults_only:
        try:
            history = document_history(ctx.store, ctx.db.client, ctx.db.name, collection, [d["_id"] for d, _ in bad],
                                       until=ctx.now)
            note = (f"history: backup {history.backup_id}"
                    + (f" + {history.oplog_entries} oplog entries" if history.oplog_note is None
                       else f" only (oplog not replayed: {history.oplog_note})"))
        except NoHistory as exc:
            if from_backup:
                raise FluxaError(f"--from-backup: {exc.message}", exc.hint) from None
            note = f"no backup of {collection} to take earlier values from ({exc.message}): policy defaults only"

    changes: list[Change] = []
    unresolved: list[str] = []
    verify: list[str] = []
    for doc, found in bad:
        verify += [r.id for r, _ in found if r.id not in verify]
        new, paths, reasons, left = _correct(doc, found, history, checker, defaults_only)
        label = f"{collection}/{doc['_id']}"
        if paths and not checker.violations(new) <= checker.violations(doc):
            broken = sorted(f"{r} ({v})" for r, v in checker.violations(new) - checker.violations(doc))
            unresolved.append(f"{label}: the correction ({'; '.join(reasons)}) would break {', '.join(broken)}; "
                              "not planned")
            continue
        unresolved += [f"{label}: {text}" for text in left]
        if paths:
            changes.append(Change(collection, "update", doc["_id"], doc, new, "; ".join(reasons),
                                  _data_class(ctx.policy, collection, paths), paths))
    summary = (f"{len(changes)} of {collection}'s documents corrected by the policy's field rules"
               + (f", {len(unresolved)} value(s) left unresolved" if unresolved else "") + (f" ({note})" if note else ""))
    return Plan(NAME, ctx.db.name, {"collection": collection, "rule": rule or [], "from_backup": from_backup,
                                    "defaults_only": defaults_only}, ctx.now, changes, verify, unresolved, summary)


register(RecipeSpec(
    name=NAME,
    feature="S27",
    summary="Bring a collection's documents in line with the policy's field rules (earlier valid value, "
            "safe conversion, or the policy default).",
    params=[
        Param("collection", "The collection to correct (any collection of the policy).", required=True),
        Param("rule", "Only these field rule ids (repeatable; default: every field rule of the collection).",
              multiple=True),
        Param("from-backup", "Require a backup: take each invalid value's newest valid version from the "
                             "backup and oplog history, refuse when there is no backup.", type=bool, default=False),
        Param("defaults-only", "Ignore history: set invalid values to the policy default (the playbook's "
                               "script).", type=bool, default=False),
    ],
    build=build,
))
