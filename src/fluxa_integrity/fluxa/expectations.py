"""Which finding of the default policy should report each fault kind: the key that scores
detection against the ground-truth manifest (tests and benchmarks). ``score`` measures recall
(every injected id found by its rule); ``unexplained`` measures precision document by document
(every id a finding names is an injected id of that rule, a document the injection names as
related, or a side effect the kind causes by design)."""

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
    "lost-messages": {None: ("conversations.messageCount", {"mismatch"})},
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
    "null-required": {
        "message-sender": ("messages.sender.enum", {"null"}),
        "user-name": ("users.name.type", {"null"}),
        "conversation-title": ("conversations.title.type", {"null"}),
    },
    "wrong-type-fields": {
        "user-name-missing": ("users.name.type", {"missing"}),
        "title-number": ("conversations.title.type", {"type"}),
        "text-missing": ("messages.text.type", {"missing"}),
        "event-missing": ("analytics.event.type", {"missing"}),
    },
    "out-of-range": {
        "font-too-small": ("users.preferences.fontSize", {"range"}),
        "font-too-large": ("users.preferences.fontSize", {"range"}),
        "unknown-language": ("users.preferences.language", {"enum"}),
    },
    "control-char-email": {None: ("users.email.format", {"format"})},
    "dates-out-of-order": {
        "login-before-signup": ("users.lastLogin.after_createdAt", {"out_of_order"}),
        "updated-before-signup": ("users.lastUpdated.after_createdAt", {"out_of_order"}),
        "conversation-before-user": ("conversations.createdAt.after_user", {"before_parent"}),
        "updated-before-created": ("conversations.lastUpdated.after_createdAt", {"out_of_order"}),
        "message-after-conversation-update": ("messages.timestamp.before_conversation_update", {"after_parent"}),
        "log-before-signup": ("logs.timestamp.after_user_creation", {"before_parent"}),
        "reply-before-parent": ("messages.timestamp.after_parent", {"before_parent"}),
    },
    "activity-after-deletion": {
        "user": ("users.lastLogin.before_deletedAt", {"out_of_order"}),
        "conversation": ("conversations.lastUpdated.before_user_deletion", {"after_parent"}),
        "message": ("messages.timestamp.before_user_deletion", {"after_parent"}),
        "log": ("logs.timestamp.before_user_deletion", {"after_parent"}),
        "analytics": ("analytics.timestamp.before_user_deletion", {"after_parent"}),
    },
}

# Findings a kind causes besides its own, by design (the fault breaks two invariants at once):
# a user updated before sign-up was also updated before the last login; a conversation updated
# before it was created has messages after its last update; a message moved after its
# conversation's last update is now later than the replies to it. Document by document:
# (kind, variant) -> (rule id, finding variant, where the side effect lands: None = the injected
# document itself, else (collection, field) = the documents of that collection whose field holds
# an injected id).
SIDE_EFFECTS_BY_KIND: dict[tuple[str, str], tuple[str, str, tuple[str, str] | None]] = {
    ("dates-out-of-order", "updated-before-signup"): ("users.lastUpdated.after_lastLogin", "out_of_order", None),
    ("dates-out-of-order", "updated-before-created"): (
        "messages.timestamp.before_conversation_update", "after_parent", ("messages", "conversationId")),
    ("dates-out-of-order", "message-after-conversation-update"): (
        "messages.timestamp.after_parent", "before_parent", ("messages", "parentId")),
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


def unexplained(manifest: Manifest, findings: list[FindingResult], db) -> dict[tuple[str, str], list]:
    """Per (rule id, finding variant): the ids a finding names that the ground truth does not
    explain (empty: no false positive), plus findings whose ``count`` is not the number of their
    ids, under ("count", rule id). Findings need ``ids`` (keep_ids=True); ``db`` is the
    application database (side effects on other documents are looked up there)."""
    allowed: dict[tuple[str, str], set] = {}
    for inj in manifest.injections:
        expect = EXPECTED[inj.kind]
        for i, _id in enumerate(inj.ids):
            variant = inj.variants[i] if inj.variants else None
            rule_id, variants = expect.get(variant) or expect[None]
            for v in variants:
                allowed.setdefault((rule_id, v), set()).update([_id, *inj.related])
            side = SIDE_EFFECTS_BY_KIND.get((inj.kind, variant or ""))
            if side is not None:
                rule_id, v, where = side
                ids = {_id} if where is None else {d["_id"] for d in db[where[0]].find({where[1]: _id}, {"_id": 1})}
                allowed.setdefault((rule_id, v), set()).update(ids)
    out: dict[tuple[str, str], list] = {}
    for f in findings:
        ids = list(f.ids or [])
        if f.count != len(ids):
            out[("count", f.rule_id)] = [f.count, len(ids)]
        extra = [i for i in ids if i not in allowed.get((f.rule_id, f.variant), ())]
        if extra:
            out.setdefault((f.rule_id, f.variant), []).extend(extra)
    return out
