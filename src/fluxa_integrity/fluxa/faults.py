"""Fault injection with ground truth: each kind breaks data the way the playbook describes
and records exactly which documents it broke in the manifest.

Targets are drawn with a seeded reservoir sample over ``_id`` order (deterministic on any
server) and never reuse a document an earlier injection touched, so every fault stays
attributable to one kind.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from bson import ObjectId
from pymongo.database import Database

from ..errors import FluxaError
from ..mongo.by_id import delete_by_ids, find_by_ids, update_by_ids
from . import model as m
from .manifest import Injection, Manifest

UTC = timezone.utc


@dataclass
class Context:
    db: Database
    manifest: Manifest
    rng: random.Random
    now: datetime

    @property
    def secondary(self) -> Database:
        return self.db.client[m.secondary_db_name(self.db.name)]

    def sample(self, coll: str, count: int, flt: dict | None = None, projection: dict | None = None,
               db: Database | None = None, exclude_key: str | None = None) -> list[dict]:
        """Reservoir-sample ``count`` documents matching ``flt`` not touched before."""
        excluded = self.manifest.touched(exclude_key or coll)
        picked: list[dict] = []
        seen = 0
        cursor = (db if db is not None else self.db)[coll].find(flt or {}, projection or {"_id": 1}).sort("_id", 1)
        for doc in cursor:
            if doc["_id"] in excluded:
                continue
            seen += 1
            if len(picked) < count:
                picked.append(doc)
            else:
                j = self.rng.randrange(seen)
                if j < count:
                    picked[j] = doc
        if len(picked) < count:
            raise FluxaError(
                f"only {len(picked)} untouched documents in {coll!r} fit this fault, {count} asked",
                "ask for fewer with --count, or generate a larger dataset",
            )
        picked.sort(key=lambda d: d["_id"])
        return picked


def _ids(docs: list[dict]) -> list:
    return [d["_id"] for d in docs]


def _rotate(variants: tuple[str, ...], n: int) -> list[str]:
    return [variants[i % len(variants)] for i in range(n)]


def orphan_messages(ctx: Context, count: int) -> list[Injection]:
    """Messages whose conversation does not exist (a conversation removed, its messages left)."""
    users = ctx.sample(m.USERS, 1, exclude_key="-")
    docs = []
    for i in range(count):
        if i % 3 == 0:
            ghost = ObjectId()
        docs.append({"_id": ObjectId(), "conversationId": ghost, "userId": users[0]["_id"],
                     "text": "orphaned message", "sender": "user", "timestamp": ctx.now})
    ctx.db[m.MESSAGES].insert_many(docs)
    return [Injection("orphan-messages", m.MESSAGES, _ids(docs), ctx.now,
                      details={"missing_conversations": sorted({d["conversationId"] for d in docs})})]


def orphan_conversations(ctx: Context, count: int) -> list[Injection]:
    """Conversations whose user does not exist."""
    docs = [{"_id": ObjectId(), "userId": ObjectId(), "title": "orphaned conversation",
             "createdAt": ctx.now, "lastUpdated": ctx.now, "messageCount": 0,
             "schemaVersion": m.CONVERSATION_SCHEMA_VERSION} for _ in range(count)]
    ctx.db[m.CONVERSATIONS].insert_many(docs)
    return [Injection("orphan-conversations", m.CONVERSATIONS, _ids(docs), ctx.now)]


def null_parent(ctx: Context, count: int) -> list[Injection]:
    """``parentId`` present but null (the playbook's ``{parentId: {$exists: true}, parentId: null}``)."""
    docs = ctx.sample(m.MESSAGES, count, {"parentId": {"$exists": True, "$ne": None}}, {"parentId": 1})
    update_by_ids(ctx.db[m.MESSAGES], _ids(docs), {"$set": {"parentId": None}})
    return [Injection("null-parent", m.MESSAGES, _ids(docs), ctx.now,
                      details={"original_parentIds": [d["parentId"] for d in docs]})]


def duplicate_emails(ctx: Context, count: int) -> list[Injection]:
    """Users given another user's email; every other one differs only in letter case."""
    docs = ctx.sample(m.USERS, 2 * count, projection={"email": 1})
    ctx.rng.shuffle(docs)
    originals, copies = docs[:count], docs[count:]
    variants = _rotate(("exact", "case"), count)
    for orig, copy, variant in zip(originals, copies, variants):
        email = orig["email"] if variant == "exact" else orig["email"].upper()
        ctx.db[m.USERS].update_one({"_id": copy["_id"]}, {"$set": {"email": email}})
    return [Injection("duplicate-emails", m.USERS, _ids(copies), ctx.now, variants=variants,
                      related=_ids(originals))]


def wrong_type_createdat(ctx: Context, count: int) -> list[Injection]:
    """``createdAt`` stored as an ISO string instead of a date."""
    docs = ctx.sample(m.USERS, count, projection={"createdAt": 1})
    for d in docs:
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"createdAt": d["createdAt"].isoformat()}})
    return [Injection("wrong-type-createdat", m.USERS, _ids(docs), ctx.now)]


def wrong_type_lastlogin(ctx: Context, count: int) -> list[Injection]:
    """``lastLogin`` stored as epoch milliseconds (a number) instead of a date."""
    docs = ctx.sample(m.USERS, count, {"lastLogin": {"$exists": True}}, {"lastLogin": 1})
    for d in docs:
        ctx.db[m.USERS].update_one({"_id": d["_id"]},
                                   {"$set": {"lastLogin": int(d["lastLogin"].timestamp() * 1000)}})
    return [Injection("wrong-type-lastlogin", m.USERS, _ids(docs), ctx.now)]


MALFORMED = (lambda e: e.replace("@", ".at."), lambda e: e.split(".")[0] + "@localhost",
             lambda e: e.replace("@", "@@"), lambda e: " " + e)


def malformed_email(ctx: Context, count: int) -> list[Injection]:
    """Emails that are strings but not addresses: no @, no domain dot, two @, leading space."""
    docs = ctx.sample(m.USERS, count, projection={"email": 1})
    variants = _rotate(("no-at", "no-dot", "double-at", "whitespace"), count)
    for i, d in enumerate(docs):
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"email": MALFORMED[i % 4](d["email"])}})
    return [Injection("malformed-email", m.USERS, _ids(docs), ctx.now, variants=variants)]


def half_migration(ctx: Context, count: int) -> list[Injection]:
    """Migration v2 (adds ``messageCount``) half applied: left at v1, or bumped without the field."""
    docs = ctx.sample(m.CONVERSATIONS, count)
    variants = _rotate(("not-migrated", "version-bumped-field-missing"), count)
    for d, v in zip(docs, variants):
        update = {"$unset": {m.CONVERSATION_MIGRATED_FIELD: ""}}
        if v == "not-migrated":
            update["$set"] = {"schemaVersion": m.CONVERSATION_SCHEMA_VERSION - 1}
        ctx.db[m.CONVERSATIONS].update_one({"_id": d["_id"]}, update)
    return [Injection("half-migration", m.CONVERSATIONS, _ids(docs), ctx.now, variants=variants)]


def broken_counter(ctx: Context, count: int) -> list[Injection]:
    """``messageCount`` no longer equal to the number of the conversation's messages."""
    docs = ctx.sample(m.CONVERSATIONS, count, {"messageCount": {"$exists": True}}, {"messageCount": 1})
    deltas = []
    for d in docs:
        delta = ctx.rng.choice([-2, -1, 1, 2, 3, 7]) if d["messageCount"] > 2 else ctx.rng.choice([1, 2, 5])
        deltas.append(delta)
        ctx.db[m.CONVERSATIONS].update_one({"_id": d["_id"]}, {"$inc": {"messageCount": delta}})
    return [Injection("broken-counter", m.CONVERSATIONS, _ids(docs), ctx.now, details={"deltas": deltas})]


def deleted_messages(ctx: Context, count: int) -> list[Injection]:
    """Messages deleted the way the app deletes them: the last message of a conversation goes,
    the counter follows, and the audit log keeps the document in ``before``."""
    convs = ctx.sample(m.CONVERSATIONS, count, {"messageCount": {"$gt": 1}}, exclude_key=m.CONVERSATIONS)
    deleted, audit = [], []
    touched_msgs = ctx.manifest.touched(m.MESSAGES)
    newest = _newest_messages(ctx, convs, None)
    for c in convs:
        last = (newest.get(c["_id"]) or [None])[0]
        if last is None or last["_id"] in touched_msgs:
            continue
        ctx.db[m.MESSAGES].delete_one({"_id": last["_id"]})
        ctx.db[m.CONVERSATIONS].update_one({"_id": c["_id"]}, {"$inc": {"messageCount": -1}})
        audit.append({"_id": ObjectId(), "operation": "delete", "collection": m.MESSAGES,
                      "documentId": last["_id"], "timestamp": ctx.now,
                      "actor": "admin:cleanup-script", "before": last})
        deleted.append(last["_id"])
    if audit:
        ctx.db[m.AUDIT_LOG].insert_many(audit)
    return [Injection("deleted-messages", m.MESSAGES, deleted, ctx.now,
                      details={"audit_ids": _ids(audit), "conversations": _ids(convs)})]


def lost_messages(ctx: Context, count: int) -> list[Injection]:
    """Messages lost the way a storage failure loses them: the last one or two messages of a
    conversation hard-deleted with no audit record and the counter left as it was (stale). The
    ids are the conversations (their counter is what detection sees); ``details.messages`` the
    lost messages, each still in the logs (S26 rebuilds them) and in the oplog."""
    convs = ctx.sample(m.CONVERSATIONS, count, {"messageCount": {"$gt": 2}}, exclude_key=m.CONVERSATIONS)
    touched_msgs = ctx.manifest.touched(m.MESSAGES)
    hit, lost = [], []
    newest = _newest_messages(ctx, convs, {"_id": 1, "conversationId": 1, "timestamp": 1})
    for i, c in enumerate(convs):
        last = newest.get(c["_id"], [])[:1 + i % 2]
        if not last or any(d["_id"] in touched_msgs for d in last):
            continue
        delete_by_ids(ctx.db[m.MESSAGES], _ids(last))
        hit.append(c["_id"])
        lost += _ids(last)
    return [Injection("lost-messages", m.CONVERSATIONS, hit, ctx.now, details={"messages": sorted(lost)})]


def _newest_messages(ctx: Context, convs: list[dict], projection: dict | None) -> dict:
    """Each conversation's messages, newest first: one pass over messages for all of them (a
    filter per conversation is a full scan each on servers without that index). A conversation
    holding a message whose timestamp is not a date is left out: its order is not a time."""
    by_conv: dict = {}
    for d in ctx.db[m.MESSAGES].find({"conversationId": {"$in": _ids(convs)}}, projection):
        by_conv.setdefault(d["conversationId"], []).append(d)
    out = {}
    for cid, docs in by_conv.items():
        if all(isinstance(d.get("timestamp"), datetime) for d in docs):
            out[cid] = sorted(docs, key=lambda d: d["timestamp"], reverse=True)
    return out


def soft_deleted_users(ctx: Context, count: int) -> list[Injection]:
    """Users marked deleted with ``deletedAt`` (recoverable by unsetting it): now, or a second
    after the user's newest date and the newest document they own when the dataset's timeline
    runs past today, so the deletion breaks no ordering rule (*.before_user_deletion) on its own."""
    docs = ctx.sample(m.USERS, count, None, {"createdAt": 1, "lastLogin": 1, "lastUpdated": 1})
    when = {}
    owned: dict = {}  # each user's owned dates, one pass per collection
    for coll, fld, _variant in OWNED_TIME:
        for o in ctx.db[coll].find({"userId": {"$in": _ids(docs)}, fld: {"$type": "date"}}, {"userId": 1, fld: 1}):
            owned.setdefault(o["userId"], []).append(_aware(o[fld]))
    for d in docs:
        dates = [_aware(d.get(f)) for f in ("createdAt", "lastLogin", "lastUpdated")] + owned.get(d["_id"], [])
        latest = max((x for x in dates if x is not None), default=None)
        when[d["_id"]] = ctx.now if latest is None or latest < ctx.now else latest + timedelta(seconds=1)
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"deletedAt": when[d["_id"]]}})
    return [Injection("soft-deleted-users", m.USERS, _ids(docs), ctx.now,
                      details={"deletedAt": [when[i] for i in _ids(docs)]})]


def _aware(value) -> datetime | None:
    """A date as UTC-aware (the client may hand naive UTC back); anything else is None."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def corrupt_preferences(ctx: Context, count: int) -> list[Injection]:
    """The playbook's preference corruption: invalid theme, non-boolean notifications, unknown keys."""
    docs = ctx.sample(m.USERS, count)
    variants = _rotate(("invalid-theme", "non-boolean-notifications", "unknown-key"), count)
    sets = {"invalid-theme": {"preferences.theme": "purple"},
            "non-boolean-notifications": {"preferences.notifications": "yes"},
            "unknown-key": {"preferences.legacyColor": "#ff00ff"}}
    for d, v in zip(docs, variants):
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": sets[v]})
    return [Injection("corrupt-preferences", m.USERS, _ids(docs), ctx.now, variants=variants)]


def sync_drift(ctx: Context, count: int) -> list[Injection]:
    """Drift against the secondary system's copy of users: ids missing there, extra ids there,
    and users changed after the last synchronisation (``lastUpdated`` conflicts)."""
    sec = ctx.secondary
    state = sec[m.SYNC_STATE].find_one({"_id": m.USERS})
    if state is None:
        raise FluxaError(
            f"no secondary system for {ctx.db.name!r} (database {sec.name!r} has no syncState)",
            "generate the dataset with the secondary copy (the default; not --no-secondary)",
        )
    variants = _rotate(("missing-in-secondary", "extra-in-secondary", "conflicting-lastUpdated"), count)
    n_missing, n_extra = variants.count("missing-in-secondary"), variants.count("extra-in-secondary")
    n_conflict = variants.count("conflicting-lastUpdated")
    picked = ctx.sample(m.USERS, n_missing + n_conflict)
    missing, conflict = picked[:n_missing], picked[n_missing:]
    if missing:
        delete_by_ids(sec[m.USERS], _ids(missing))
    extra = [{"_id": ObjectId(), "email": f"ghost{i}@crm.example.com", "lastUpdated": state["lastSyncAt"]}
             for i in range(n_extra)]
    if extra:
        sec[m.USERS].insert_many(extra)
    changed_at = max(ctx.now, state["lastSyncAt"].replace(tzinfo=UTC) + timedelta(minutes=5))
    for d in conflict:
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"lastUpdated": changed_at}})
    ids = _ids(missing) + _ids(extra) + _ids(conflict)
    kinds = (["missing-in-secondary"] * len(missing) + ["extra-in-secondary"] * len(extra)
             + ["conflicting-lastUpdated"] * len(conflict))
    return [Injection("sync-drift", m.USERS, ids, ctx.now, variants=kinds,
                      details={"secondary_db": sec.name, "lastSyncAt": state["lastSyncAt"]})]


# --- kinds for the rest of the data model (required non-null, ranges, formats, date order,
# soft deletion). Each returns one Injection per collection it touches, variants per id.

def _by_collection(kind: str, now: datetime, rows: list[tuple[str, object, str]]) -> list[Injection]:
    """(collection, id, variant) rows -> one Injection per collection, in first-seen order."""
    out: dict[str, Injection] = {}
    for coll, _id, variant in rows:
        inj = out.setdefault(coll, Injection(kind, coll, [], now, variants=[]))
        inj.ids.append(_id)
        inj.variants.append(variant)
    return list(out.values())


def _split(variants: tuple[str, ...], count: int) -> dict[str, int]:
    rotated = _rotate(variants, count)
    return {v: rotated.count(v) for v in variants if rotated.count(v)}


def null_required(ctx: Context, count: int) -> list[Injection]:
    """Required fields present but null: a message's sender, a user's name, a conversation's title."""
    where = {"message-sender": (m.MESSAGES, "sender"), "user-name": (m.USERS, "name"),
             "conversation-title": (m.CONVERSATIONS, "title")}
    rows = []
    for variant, n in _split(tuple(where), count).items():
        coll, fld = where[variant]
        docs = ctx.sample(coll, n)
        update_by_ids(ctx.db[coll], _ids(docs), {"$set": {fld: None}})
        rows += [(coll, d["_id"], variant) for d in docs]
    return _by_collection("null-required", ctx.now, rows)


def wrong_type_fields(ctx: Context, count: int) -> list[Injection]:
    """Fields of the model missing or of the wrong type: a user without a name, a numeric
    conversation title, a message without text, an analytics event without its name."""
    changes = {"user-name-missing": (m.USERS, {"$unset": {"name": ""}}),
               "title-number": (m.CONVERSATIONS, {"$set": {"title": 42}}),
               "text-missing": (m.MESSAGES, {"$unset": {"text": ""}}),
               "event-missing": (m.ANALYTICS, {"$unset": {"event": ""}})}
    rows = []
    for variant, n in _split(tuple(changes), count).items():
        coll, update = changes[variant]
        docs = ctx.sample(coll, n)
        update_by_ids(ctx.db[coll], _ids(docs), update)
        rows += [(coll, d["_id"], variant) for d in docs]
    return _by_collection("wrong-type-fields", ctx.now, rows)


def out_of_range(ctx: Context, count: int) -> list[Injection]:
    """Preferences outside their range: font size below 12 or above 20, an unsupported language."""
    sets = {"font-too-small": {"preferences.fontSize": 8}, "font-too-large": {"preferences.fontSize": 48},
            "unknown-language": {"preferences.language": "xx"}}
    variants = _rotate(tuple(sets), count)
    docs = ctx.sample(m.USERS, count, {"preferences": {"$exists": True}})
    for d, v in zip(docs, variants):
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": sets[v]})
    return [Injection("out-of-range", m.USERS, _ids(docs), ctx.now, variants=variants)]


CONTROL = {"nul": lambda e: e.replace("@", "\x00@", 1), "newline": lambda e: e + "\n",
           "zero-width": lambda e: e.replace("@", "\u200b@", 1), "tab": lambda e: e.replace("@", "@\t", 1)}


def control_char_email(ctx: Context, count: int) -> list[Injection]:
    """Emails that look right but hold a control or invisible character: NUL, a trailing newline,
    a zero-width space, a tab."""
    docs = ctx.sample(m.USERS, count, projection={"email": 1})
    variants = _rotate(tuple(CONTROL), count)
    for d, v in zip(docs, variants):
        ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"email": CONTROL[v](d["email"])}})
    return [Injection("control-char-email", m.USERS, _ids(docs), ctx.now, variants=variants)]


def _users_to_avoid(ctx: Context) -> set:
    """Users touched by an earlier injection: their dates may no longer be dates."""
    return set(ctx.manifest.touched(m.USERS))


def dates_out_of_order(ctx: Context, count: int) -> list[Injection]:
    """Dates against the order the model implies: a login before sign-up, a user updated before
    sign-up, a conversation older than its user or updated before it was created, a message
    after its conversation's last update, a log entry before its user signed up, a reply older
    than the message it answers."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    split = _split(("login-before-signup", "updated-before-signup", "conversation-before-user",
                    "updated-before-created", "message-after-conversation-update", "log-before-signup",
                    "reply-before-parent"), count)
    avoid = _users_to_avoid(ctx)
    rows: list[tuple[str, object, str]] = []
    users_done: set = set()
    if n := split.get("login-before-signup"):
        for d in ctx.sample(m.USERS, n, {"lastLogin": {"$exists": True}}, {"createdAt": 1}):
            ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"lastLogin": d["createdAt"] - day}})
            rows.append((m.USERS, d["_id"], "login-before-signup"))
            users_done.add(d["_id"])
    if n := split.get("updated-before-signup"):
        flt = {"_id": {"$nin": list(users_done)}}
        for d in ctx.sample(m.USERS, n, flt, {"createdAt": 1}):
            ctx.db[m.USERS].update_one({"_id": d["_id"]}, {"$set": {"lastUpdated": d["createdAt"] - day}})
            rows.append((m.USERS, d["_id"], "updated-before-signup"))
            users_done.add(d["_id"])
    avoid |= users_done
    convs_done: set = set()
    if n := split.get("conversation-before-user"):
        for d in ctx.sample(m.CONVERSATIONS, n, {"userId": {"$nin": list(avoid)}}, {"userId": 1}):
            user = ctx.db[m.USERS].find_one({"_id": d["userId"]}, {"createdAt": 1})
            ctx.db[m.CONVERSATIONS].update_one({"_id": d["_id"]}, {"$set": {"createdAt": user["createdAt"] - day}})
            rows.append((m.CONVERSATIONS, d["_id"], "conversation-before-user"))
            convs_done.add(d["_id"])
    if n := split.get("updated-before-created"):
        for d in ctx.sample(m.CONVERSATIONS, n, {"_id": {"$nin": list(convs_done)}}, {"createdAt": 1}):
            ctx.db[m.CONVERSATIONS].update_one({"_id": d["_id"]}, {"$set": {"lastUpdated": d["createdAt"] - hour}})
            rows.append((m.CONVERSATIONS, d["_id"], "updated-before-created"))
            convs_done.add(d["_id"])
    msgs_done: set = set()
    if n := split.get("message-after-conversation-update"):
        touched_convs = list(ctx.manifest.touched(m.CONVERSATIONS) | convs_done)
        for d in ctx.sample(m.MESSAGES, n, {"conversationId": {"$nin": touched_convs}}, {"conversationId": 1}):
            conv = ctx.db[m.CONVERSATIONS].find_one({"_id": d["conversationId"]}, {"lastUpdated": 1})
            ctx.db[m.MESSAGES].update_one({"_id": d["_id"]}, {"$set": {"timestamp": conv["lastUpdated"] + hour}})
            rows.append((m.MESSAGES, d["_id"], "message-after-conversation-update"))
            msgs_done.add(d["_id"])
    if n := split.get("reply-before-parent"):
        # a reply moved a millisecond before the message it answers, whose own parent keeps it at
        # least a second after the conversation started: no other order breaks
        touched = ctx.manifest.touched(m.MESSAGES) | msgs_done
        picked = []
        for d in ctx.sample(m.MESSAGES, 4 * n, {"parentId": {"$exists": True, "$ne": None,
                                                             "$nin": list(touched)},
                                                "_id": {"$nin": list(msgs_done)}}, {"parentId": 1}):
            parent = ctx.db[m.MESSAGES].find_one({"_id": d["parentId"]}, {"parentId": 1, "timestamp": 1})
            if (parent and parent.get("parentId") is not None and len(picked) < n
                    and d["_id"] not in msgs_done and parent["_id"] not in msgs_done):
                picked.append((d["_id"], parent["timestamp"]))
                msgs_done.update((d["_id"], parent["_id"]))  # no chain of two moved replies
        if len(picked) < n:
            raise FluxaError(f"only {len(picked)} replies to a reply fit reply-before-parent, {n} asked",
                             "ask for fewer with --count, or generate a larger dataset")
        for _id, parent_ts in picked:
            ctx.db[m.MESSAGES].update_one({"_id": _id}, {"$set": {"timestamp": parent_ts - timedelta(milliseconds=1)}})
            rows.append((m.MESSAGES, _id, "reply-before-parent"))
    if n := split.get("log-before-signup"):
        for d in ctx.sample(m.LOGS, n, {"userId": {"$nin": list(avoid)}}, {"userId": 1}):
            user = ctx.db[m.USERS].find_one({"_id": d["userId"]}, {"createdAt": 1})
            ctx.db[m.LOGS].update_one({"_id": d["_id"]}, {"$set": {"timestamp": user["createdAt"] - day}})
            rows.append((m.LOGS, d["_id"], "log-before-signup"))
    return _by_collection("dates-out-of-order", ctx.now, rows)


OWNED_TIME = ((m.CONVERSATIONS, "lastUpdated", "conversation"), (m.MESSAGES, "timestamp", "message"),
              (m.LOGS, "timestamp", "log"), (m.ANALYTICS, "timestamp", "analytics"))


def activity_after_deletion(ctx: Context, count: int) -> list[Injection]:
    """Users soft-deleted halfway through their history, so that documents they own are newer
    than ``deletedAt`` (docs/data-model.md: a deleted user's documents are frozen at deletion).
    The ids are every document that breaks it: the user itself (a login after deletion) and each
    conversation, message, log entry and analytics event dated after ``deletedAt``."""
    avoid = _users_to_avoid(ctx)
    for coll, _f, _v in OWNED_TIME:  # users owning a document another kind changed
        touched = list(ctx.manifest.touched(coll))
        if touched:
            avoid.update(d["userId"] for d in find_by_ids(ctx.db[coll], touched, {"userId": 1})
                         if "userId" in d)
    users = ctx.sample(m.USERS, count, {"lastLogin": {"$exists": True}, "_id": {"$nin": list(avoid)}},
                       {"createdAt": 1, "lastLogin": 1})
    rows: list[tuple[str, object, str]] = []
    deleted_at = {}
    for u in users:
        half = (u["lastLogin"] - u["createdAt"]) / 2
        when = u["createdAt"] + timedelta(milliseconds=int(half.total_seconds() * 1000))
        deleted_at[u["_id"]] = when
        ctx.db[m.USERS].update_one({"_id": u["_id"]}, {"$set": {"deletedAt": when}})
        if u["lastLogin"] > when:
            rows.append((m.USERS, u["_id"], "user"))
    # the ground truth, read back the way the rule decides it: one pass per collection (a filter
    # per user would be a full scan each on servers without a userId index), and a date compared
    # with a date only, as the server's $gt does
    for coll, fld, variant in OWNED_TIME:
        cursor = ctx.db[coll].find({"userId": {"$in": list(deleted_at)}, fld: {"$type": "date"}},
                                   {"_id": 1, "userId": 1, fld: 1}).sort("_id", 1)
        rows += [(coll, d["_id"], variant) for d in cursor if d[fld] > deleted_at[d["userId"]]]
    out = _by_collection("activity-after-deletion", ctx.now, rows)
    for inj in out:
        if inj.collection == m.USERS:
            inj.details = {"deletedAt": [deleted_at[i] for i in inj.ids]}
    return out


KINDS: dict[str, Callable[[Context, int], list[Injection]]] = {
    "orphan-messages": orphan_messages,
    "orphan-conversations": orphan_conversations,
    "null-parent": null_parent,
    "duplicate-emails": duplicate_emails,
    "wrong-type-createdat": wrong_type_createdat,
    "wrong-type-lastlogin": wrong_type_lastlogin,
    "malformed-email": malformed_email,
    "half-migration": half_migration,
    "broken-counter": broken_counter,
    "deleted-messages": deleted_messages,
    "lost-messages": lost_messages,
    "soft-deleted-users": soft_deleted_users,
    "corrupt-preferences": corrupt_preferences,
    "sync-drift": sync_drift,
    "null-required": null_required,
    "wrong-type-fields": wrong_type_fields,
    "out-of-range": out_of_range,
    "control-char-email": control_char_email,
    "dates-out-of-order": dates_out_of_order,
    "activity-after-deletion": activity_after_deletion,  # last: it reads back what others changed
}


def inject(db: Database, manifest: Manifest, kind: str, count: int, seed: int = 1,
           now: datetime | None = None) -> list[Injection]:
    """Inject ``count`` faults of ``kind`` (or of every kind for ``all``) and record them."""
    if count < 1:
        raise FluxaError("--count must be at least 1")
    kinds = list(KINDS) if kind == "all" else [kind]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise FluxaError(f"unknown fault kind {unknown[0]!r}", "known kinds: all, " + ", ".join(KINDS))
    if db[m.USERS].estimated_document_count() == 0:
        raise FluxaError(f"database {db.name!r} has no Fluxa data to break",
                         "generate it first: fluxa-integrity fluxa generate --users N")
    done: list[Injection] = []
    for k in kinds:
        when = (now or datetime.now(UTC)).replace(microsecond=0)  # BSON keeps milliseconds
        ctx = Context(db, manifest, random.Random(f"{seed}:{k}:{len(manifest.injections)}"), when)
        for inj in KINDS[k](ctx, count):
            manifest.append(inj)
            done.append(inj)
    return done
