"""The policy's per-document rules evaluated on one document at a time (continuous validation, S1).

Shape: ``DocumentEvaluator(policy, collection, db)`` compiles, once, the collection's enabled
field, field-order and migration rules with ``document_rules.compile_document_rule`` and takes
its reference rules; ``evaluate(doc)`` returns ``Violation(rule, variant, value, message)``s -
the same rule ids, variants and messages a check run reports, so the findings they make carry
the same fingerprints. A reference rule's missing/null half comes from
``document_rules.reference_items`` (the scan's own definition); each value it holds is looked up
with ``find_one({to_field: value})`` on the target collection (on ``_id``, the usual target, an
indexed lookup on every server; FerretDB pushes down only ``_id`` equality). Values found are
remembered in a bounded cache, so a chat's thousand messages cost one lookup of their
conversation; a value not found is asked again every time (it may be written a moment later).

Failure behaviour: server errors propagate (the watcher's caller retries); a rule whose field
cannot be read is the rule's own business (missing/type variants), never an exception.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..policy.models import Policy
from ..policy.rules import ReferenceRule
from .document_rules import compile_document_rule, dangling_message, reference_items

FOUND_CACHE = 50_000  # referenced values known to exist (per evaluator)


@dataclass
class Violation:
    rule: object  # the policy rule
    variant: str
    value: object
    message: str


class DocumentEvaluator:
    def __init__(self, policy: Policy, collection: str, db, cache_size: int = FOUND_CACHE):
        self.collection = collection
        self.db = db
        cp = policy.collections.get(collection)
        rules = [r for r in (cp.rules if cp else []) if r.enabled]
        self.checks = [(r, c) for r in rules if (c := compile_document_rule(r, collection)) is not None]
        self.refs = [r for r in rules if isinstance(r, ReferenceRule)]
        self.rule_ids = sorted({r.id for r, _ in self.checks} | {r.id for r in self.refs})
        self._found: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self.lookups = 0

    def __bool__(self) -> bool:
        return bool(self.checks or self.refs)

    def evaluate(self, doc: dict) -> list[Violation]:
        out = [Violation(rule, variant, value, message)
               for rule, check in self.checks for variant, value, message in check(doc)]
        for rule in self.refs:
            bad, items = reference_items(rule, self.collection, doc)
            out.extend(Violation(rule, variant, value, message) for variant, value, message in bad)
            for item in items:
                if not self._exists(rule, item):
                    out.append(Violation(rule, "dangling", item, dangling_message(rule, self.collection)))
        return out

    def _exists(self, rule: ReferenceRule, value) -> bool:
        try:
            key = (rule.to, rule.to_field, type(value).__name__, value)
            hash(key)
        except TypeError:  # an unhashable reference (a document): ask, never cache
            key = None
        if key is not None and key in self._found:
            self._found.move_to_end(key)
            return True
        self.lookups += 1
        found = self.db[rule.to].find_one({rule.to_field: value}, {"_id": 1}) is not None
        if found and key is not None:
            self._found[key] = True
            if len(self._found) > self._cache_size:
                self._found.popitem(last=False)
        return found
