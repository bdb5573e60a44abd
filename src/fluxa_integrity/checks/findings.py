"""Findings: what a rule found wrong, with evidence, identified by a stable fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime

from .values import short_repr

DEFAULT_SAMPLES = 20


def fingerprint(database: str, rule_id: str, variant: str) -> str:
    """The same rule failing the same way on the same database is the same finding across runs."""
    return hashlib.sha256(f"{database}\x00{rule_id}\x00{variant}".encode()).hexdigest()[:32]


@dataclass
class FindingResult:
    rule_id: str
    variant: str  # which way the rule failed: type, enum, dangling, null, duplicate, ...
    collection: str
    category: str
    message: str
    count: int = 0
    samples: list[dict] = field(default_factory=list)
    affected_users: int = 0
    first_doc_time: datetime | None = None
    last_doc_time: datetime | None = None
    data_class: str | None = None
    criticality: str | None = None
    ids: list | None = None  # every offending _id, kept only when asked (scoring, recovery)

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["ids"] is None:
            d.pop("ids")
        return d


class Accumulator:
    """Collects violations of one (rule, variant) during a pass with bounded memory
    (count, up to N samples, a set of affected-user hashes, first/last document times)."""

    __slots__ = ("result", "max_samples", "users", "keep_ids")

    def __init__(self, result: FindingResult, max_samples: int = DEFAULT_SAMPLES, keep_ids: bool = False):
        self.result = result
        self.max_samples = max_samples
        self.users: set[int] = set()
        self.keep_ids = keep_ids
        if keep_ids:
            result.ids = []

    def add(self, _id, value, user_hash: int | None, when: datetime | None, extra: dict | None = None) -> None:
        r = self.result
        r.count += 1
        if len(r.samples) < self.max_samples:
            sample = {"_id": _id, "value": short_repr(value)}
            if extra:
                sample.update(extra)
            r.samples.append(sample)
        if self.keep_ids:
            r.ids.append(_id)
        if user_hash is not None:
            self.users.add(user_hash)
        if when is not None:
            if r.first_doc_time is None or when < r.first_doc_time:
                r.first_doc_time = when
            if r.last_doc_time is None or when > r.last_doc_time:
                r.last_doc_time = when

    def finish(self) -> FindingResult:
        self.result.affected_users = len(self.users)
        return self.result


class Findings:
    """The accumulators of one pass, created on first violation."""

    def __init__(self, collection: str, max_samples: int, keep_ids: bool):
        self.collection = collection
        self.max_samples = max_samples
        self.keep_ids = keep_ids
        self._acc: dict[tuple[str, str], Accumulator] = {}

    def get(self, rule, variant: str, message: str, collection: str | None = None) -> Accumulator:
        key = (rule.id, variant)
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = Accumulator(
                FindingResult(rule_id=rule.id, variant=variant, collection=collection or self.collection,
                              category=rule.category, message=message),
                self.max_samples, self.keep_ids)
        return acc

    def results(self) -> list[FindingResult]:
        return [a.finish() for a in self._acc.values()]
