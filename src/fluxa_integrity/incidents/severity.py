"""Severity (S15) and scope and impact (S14), both derived from policy and the linked findings."""

from __future__ import annotations

from ..policy.models import Policy
from .timeutil import iso, utc

# share of a collection's scanned documents above which a problem is called widespread (decision)
WIDESPREAD_SHARE = 0.05
_CAUSES = {"schema": "schema or code change writing bad values", "referential": "deletes or writes out of order",
           "consistency": "partial writes or a failed job", "data_loss": "deletions (user action, job or bug)",
           "corruption": "storage or index corruption", "sync": "replication or synchronization failure",
           "backup_verification": "backup process"}


def split_place(policy: Policy, place: str) -> tuple[str, str | None]:
    """``users.preferences`` -> ("users", "preferences"); a name the policy knows as a collection
    (even with a dot in it) stays whole. The longest known collection prefix wins."""
    if place in policy.collections:
        return place, None
    parts = place.split(".")
    for i in range(len(parts) - 1, 0, -1):
        coll = ".".join(parts[:i])
        if coll in policy.collections:
            return coll, ".".join(parts[i:])
    return place, None


def classes_for(policy: Policy, places: list[str]) -> list[str]:
    """Data classes of collections or ``collection.field`` places, as fine as the policy's covers:
    ``users.preferences`` is User Preferences (medium), ``users`` is User Accounts (critical)."""
    return sorted({dc.name for p in places if (dc := policy.data_class_for(*split_place(policy, p))) is not None})


def level_for(policy: Policy, data_classes: list[str]) -> str:
    crits = [policy.data_class(n).criticality for n in data_classes if _known(policy, n)]
    return policy.severity.level_for(crits)


def rank(policy: Policy, level: str) -> int:
    """0 = most severe (levels are listed most severe first)."""
    levels = list(policy.severity.levels)
    return levels.index(level) if level in levels else len(levels)


def _known(policy: Policy, name: str) -> bool:
    try:
        policy.data_class(name)
        return True
    except KeyError:
        return False


def scope_from(findings: list, scanned: dict[str, int] | None = None) -> dict:
    """Impact from linked findings (rows of the checks' findings table, sightings loaded).

    ``users`` is a sum over findings, so an upper bound when a user has several problems.
    ``trend``: growing when any finding's last sighting counts more than the one before it."""
    if not findings:
        return {}
    collections = sorted({f.collection for f in findings})
    docs = sum(f.count for f in findings)
    starts = [utc(f.first_doc_time) for f in findings if f.first_doc_time]
    ends = [utc(f.last_doc_time) for f in findings if f.last_doc_time]
    trend = "unknown (one sighting)"
    pairs = [[s.count for s in f.sightings][-2:] for f in findings]
    if any(len(p) == 2 for p in pairs):
        if any(len(p) == 2 and p[1] > p[0] for p in pairs):
            trend = "growing"
        elif all(len(p) < 2 or p[1] == p[0] for p in pairs):
            trend = "stable"
        else:
            trend = "shrinking"
    scanned = scanned or {}
    share = max((sum(f.count for f in findings if f.collection == c) / scanned[c]
                 for c in collections if scanned.get(c)), default=0.0)
    extent = "widespread" if len(collections) > 1 or share >= WIDESPREAD_SHARE else "isolated"
    return {"collections": collections, "documents": docs, "users": sum(f.affected_users for f in findings),
            "time_range": [iso(min(starts)) if starts else None, iso(max(ends)) if ends else None],
            "extent": extent, "largest_share": round(share, 4), "trend": trend,
            "ongoing": trend == "growing",
            "likely_causes": sorted({_CAUSES.get(f.category, f.category) for f in findings}),
            "findings": len(findings)}
