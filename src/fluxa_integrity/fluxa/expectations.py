"""Which finding of the default policy should report each fault kind: the key that scores
detection against the ground-truth manifest (tests and benchmarks)."""

from __future__ import annotations

from ..checks.findings import FindingResult
from .manifest import Manifest

# kind -> {manifest variant (None = any): (rule id, accepted finding variants)}
EXPECTED: dict[str, dict[str | None, tuple[str, set[str]]]] = {
    "orphan-messages": {None: ("messages.conversationId.ref", {"dangling"})},
    "orphan-conversations": {None: ("conversations.userId.ref", {"dangling"})},
    "null-parent": {None: ("messages.parentId.ref", {"null"})},
    "duplicate-emails": {None: ("users.email.unique", {"duplicate"})},
    "wrong-type-createdat": {None: ("users.createdAt.type", {"type"})},
    "wrong-type-lastlogin": {None: ("users.lastLogin.type", {"type"})},
    "malformed-email": {None: ("users.email.format", {"format"})},
    "half-migration": {None: ("conversations.migration", {"version", "missing:messageCount"})},
    "broken-counter": {None: ("conversations.messageCount", {"mismatch"})},
    "deleted-messages": {None: ("messages.deletions", {"audit_delete"})},
    "soft-deleted-users": {None: ("users.deletions", {"soft_deleted"})},
    "corrupt-preferences": {
        "invalid-theme": ("users.preferences.theme", {"enum"}),
        "non-boolean-notifications": ("users.preferences.notifications", {"type"}),
        "unknown-key": ("users.preferences.keys", {"unknown_keys"}),
    },
    "sync-drift": {
        "missing-in-secondary": ("users.sync", {"missing_in_secondary"}),
        "extra-in-secondary": ("users.sync", {"extra_in_secondary"}),
        "conflicting-lastUpdated": ("users.sync", {"changed_after_sync"}),
    },
}


def score(manifest: Manifest, findings: list[FindingResult]) -> dict[str, dict]:
    """Per fault kind: injected, detected, recall and the ids missed. Findings need ``ids``
    (run the checks with keep_ids=True)."""
    found: dict[tuple[str, str], set] = {}
    for f in findings:
        found.setdefault((f.rule_id, f.variant), set()).update(f.ids or [])
    out: dict[str, dict] = {}
    for inj in manifest.injections:
        expect = EXPECTED[inj.kind]
        row = out.setdefault(inj.kind, {"injected": 0, "detected": 0, "missed": []})
        for i, _id in enumerate(inj.ids):
            variant = inj.variants[i] if inj.variants else None
            rule_id, variants = expect.get(variant) or expect[None]
            row["injected"] += 1
            if any(_id in found.get((rule_id, v), ()) for v in variants):
                row["detected"] += 1
            else:
                row["missed"].append(_id)
    for row in out.values():
        row["recall"] = row["detected"] / row["injected"] if row["injected"] else 1.0
    return out
