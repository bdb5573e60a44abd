"""Deterministic Chatbot Fluxa dataset generator.

Same seed and options, same documents (ids, values, timestamps): the content hash of the
result depends on nothing else. Sizes are heavy-tailed (lognormal conversations per user and
messages per conversation), as real chat data is. Logs and the audit log agree with the data:
every message has its ``message_sent``/``message_received`` log entry carrying the text (so
history can be rebuilt from logs), every user has a login trail ending at ``lastLogin`` and an
audit ``insert`` entry.

Documents are built in blocks of users on the calling thread and inserted by a writer thread,
so generation overlaps with the server's work and memory stays bounded by the queue.

Interrupted runs: the generator marks the database ``running`` in ``_fluxa_meta`` first and
``complete`` last. A rerun that finds a ``running`` marker drops the half-loaded database and
starts clean (documented in docs/data-model.md).
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import numpy as np
from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..errors import FluxaError
from ..mongo.connection import first_line
from . import model as m

UTC = timezone.utc
BLOCK_USERS = 500  # fixed: the per-block random streams depend on it, so changing it changes data
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

FIRST = ("ada", "alan", "grace", "linus", "ken", "barbara", "edsger", "margaret", "donald",
         "frances", "john", "radia", "tim", "sophie", "dennis", "katherine", "guido", "anita",
         "leslie", "shafi", "niklaus", "hedy", "yukihiro", "bjarne", "annie", "joan")
LAST = ("lovelace", "turing", "hopper", "torvalds", "thompson", "liskov", "dijkstra",
        "hamilton", "knuth", "allen", "backus", "perlman", "berners", "wilson", "ritchie",
        "johnson", "rossum", "borg", "lamport", "goldwasser", "wirth", "lamarr", "matsumoto")
DOMAINS = ("example.com", "mail.test", "fluxa.dev", "inbox.example.org")
WORDS = ("the", "a", "how", "what", "why", "can", "you", "help", "me", "with", "my", "code",
         "data", "query", "index", "backup", "restore", "python", "mongo", "please", "explain",
         "error", "failed", "works", "thanks", "sure", "here", "is", "an", "example", "of",
         "schema", "migration", "field", "value", "user", "message", "conversation", "time",
         "today", "tomorrow", "write", "poem", "about", "cats", "weather", "translate", "into",
         "french", "summarise", "this", "article", "list", "steps", "to", "fix", "it", "ok")
TITLES = ("Debugging help", "Trip planning", "Recipe ideas", "Essay feedback", "SQL question",
          "Translation", "Birthday poem", "Workout plan", "Cover letter", "Math homework",
          "Book summary", "Gift ideas", "Email draft", "Bug report", "Learning Go")


@dataclass
class GenerateOptions:
    users: int
    seed: int = 1
    start: datetime = DEFAULT_START
    days: int = 300
    conversations_per_user: float = 5.0
    messages_per_conversation: float = 10.0
    secondary: bool = True
    batch_size: int = 5000


@dataclass
class GenerateResult:
    db: str
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    restarted: bool = False

    @property
    def documents(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["documents"] = self.documents
        d["docs_per_second"] = round(self.documents / self.seconds) if self.seconds else None
        return d


class IdFactory:
    """ObjectIds that are a function of (seed, kind, counter, timestamp): deterministic, unique."""

    def __init__(self, seed: int, kind: int):
        self.prefix = hashlib.sha256(str(seed).encode()).digest()[:3] + bytes([kind])
        self.counter = 0

    def __call__(self, when: datetime) -> ObjectId:
        self.counter += 1
        secs = int(when.timestamp()) & 0xFFFFFFFF
        return ObjectId(secs.to_bytes(4, "big") + self.prefix + self.counter.to_bytes(4, "big"))


def heavy_tailed_counts(rng: np.random.Generator, mean: float, n: int, cap: int) -> np.ndarray:
    """1 + floor(lognormal) with the given mean (sigma 1.0): most small, a long tail."""
    sigma = 1.0
    mu = math.log(max(mean - 0.5, 0.5)) - sigma * sigma / 2
    return np.minimum(1 + np.floor(rng.lognormal(mu, sigma, n)).astype(np.int64), cap)


def plan_sizes(opts: GenerateOptions) -> tuple[np.ndarray, np.ndarray]:
    """Conversations per user and messages per conversation, drawn up front so totals are known."""
    rng = np.random.default_rng([opts.seed, 0])
    convs = heavy_tailed_counts(rng, opts.conversations_per_user, opts.users, cap=200)
    msgs = heavy_tailed_counts(rng, opts.messages_per_conversation, int(convs.sum()), cap=400)
    return convs, msgs


def planned_counts(opts: GenerateOptions) -> dict[str, int]:
    convs, msgs = plan_sizes(opts)
    # login logs are drawn per block; estimate them from their Poisson mean for progress only
    return {m.USERS: opts.users, m.CONVERSATIONS: int(convs.sum()), m.MESSAGES: int(msgs.sum())}


def _ms(start: datetime, seconds: float) -> datetime:
    # BSON dates hold milliseconds: round here so values survive a round trip unchanged
    return start + timedelta(milliseconds=int(seconds * 1000))


class _Builder:
    """Builds one block of users with everything that belongs to them."""

    def __init__(self, opts: GenerateOptions):
        self.opts = opts
        self.ids = {k: IdFactory(opts.seed, i) for i, k in enumerate(m.COLLECTIONS, start=1)}
        self.span = opts.days * 86400.0
        text_rng = np.random.default_rng([opts.seed, 1])
        lengths = np.clip(text_rng.lognormal(2.3, 0.7, 4096).astype(int), 1, 300)
        self.texts = [" ".join(WORDS[j] for j in text_rng.integers(0, len(WORDS), k)) for k in lengths]
        self.user_index = 0
        self.conv_index = 0

    def block(self, b: int, n_users: int, convs: np.ndarray, msgs: np.ndarray) -> dict[str, list]:
        o = self.opts
        rng = np.random.default_rng([o.seed, 2, b])
        out: dict[str, list] = {k: [] for k in m.COLLECTIONS}
        created = rng.uniform(0, self.span * 0.8, n_users)
        has_login = rng.random(n_users) < 0.9
        login_counts = 1 + rng.poisson(2, n_users)
        names = rng.integers(0, [len(FIRST), len(LAST), len(DOMAINS)], (n_users, 3))
        themes = rng.integers(0, len(m.THEMES), n_users)
        notif = rng.random(n_users) < 0.7
        langs = rng.integers(0, len(m.LANGUAGES), n_users)
        sizes = rng.integers(12, 21, n_users)
        for u in range(n_users):
            i = self.user_index
            self.user_index += 1
            created_at = _ms(o.start, created[u])
            uid = self.ids[m.USERS](created_at)
            first, last, dom = names[u]
            user = {
                "_id": uid,
                "email": f"{FIRST[first]}.{LAST[last]}.{i}@{DOMAINS[dom]}",
                "name": f"{FIRST[first].title()} {LAST[last].title()}",
                "createdAt": created_at,
            }
            last_touch = created_at
            if has_login[u]:
                k = int(login_counts[u])
                times = np.sort(rng.uniform(created[u], self.span, k))
                for t in times:
                    when = _ms(o.start, t)
                    out[m.LOGS].append({"_id": self.ids[m.LOGS](when), "userId": uid,
                                        "timestamp": when, "operation": "login"})
                user["lastLogin"] = last_touch = _ms(o.start, times[-1])
            user["preferences"] = {
                "theme": m.THEMES[themes[u]],
                "notifications": bool(notif[u]),
                "language": m.LANGUAGES[langs[u]],
                "fontSize": int(sizes[u]),
            }
            user["lastUpdated"] = last_touch
            out[m.USERS].append(user)
            out[m.AUDIT_LOG].append({
                "_id": self.ids[m.AUDIT_LOG](created_at), "operation": "insert",
                "collection": m.USERS, "documentId": uid, "timestamp": created_at,
                "actor": "signup", "before": None,
            })
            self._conversations(rng, out, uid, created[u], int(convs[i]), msgs)
        return out

    def _conversations(self, rng, out, uid, user_created: float, n_convs: int, msgs: np.ndarray) -> None:
        o = self.opts
        counts = msgs[self.conv_index:self.conv_index + n_convs]
        self.conv_index += n_convs
        starts = rng.uniform(user_created, max(user_created, self.span - 86400), n_convs)
        titles = rng.integers(0, len(TITLES), n_convs)
        total = int(counts.sum())
        gaps = rng.exponential(90.0, total) + 1.0
        text_idx = rng.integers(0, len(self.texts), total)
        pos = 0
        for c in range(n_convs):
            n = int(counts[c])
            conv_created = _ms(o.start, starts[c])
            cid = self.ids[m.CONVERSATIONS](conv_created)
            t = starts[c]
            parent = None
            last_ts = conv_created
            for k in range(n):
                ts = _ms(o.start, t)
                mid = self.ids[m.MESSAGES](ts)
                sender = "user" if k % 2 == 0 else "bot"
                text = self.texts[text_idx[pos]]
                msg = {"_id": mid, "conversationId": cid, "userId": uid}
                if parent is not None:
                    msg["parentId"] = parent
                msg["text"] = text
                msg["sender"] = sender
                msg["timestamp"] = ts
                out[m.MESSAGES].append(msg)
                out[m.LOGS].append({
                    "_id": self.ids[m.LOGS](ts), "userId": uid, "conversationId": cid,
                    "messageId": mid, "timestamp": ts,
                    "operation": "message_sent" if sender == "user" else "message_received",
                    "messageContent": text,
                })
                parent = mid
                last_ts = ts
                t += gaps[pos]
                pos += 1
            out[m.CONVERSATIONS].append({
                "_id": cid, "userId": uid, "title": TITLES[titles[c]],
                "createdAt": conv_created, "lastUpdated": last_ts,
                "messageCount": n, "schemaVersion": m.CONVERSATION_SCHEMA_VERSION,
            })
            out[m.ANALYTICS].append({
                "_id": self.ids[m.ANALYTICS](conv_created), "event": "conversation_started",
                "userId": uid, "timestamp": conv_created,
                "props": {"conversationId": cid, "title": TITLES[titles[c]]},
            })


INDEXES = {
    m.USERS: [IndexModel([("email", ASCENDING)], name="email_1")],
    m.CONVERSATIONS: [IndexModel([("userId", ASCENDING)], name="userId_1")],
    m.MESSAGES: [IndexModel([("conversationId", ASCENDING), ("timestamp", ASCENDING)],
                            name="conversationId_1_timestamp_1")],
    m.LOGS: [IndexModel([("userId", ASCENDING), ("timestamp", ASCENDING)], name="userId_1_timestamp_1")],
    m.AUDIT_LOG: [IndexModel([("collection", ASCENDING), ("timestamp", ASCENDING)],
                             name="collection_1_timestamp_1")],
    m.ANALYTICS: [IndexModel([("timestamp", ASCENDING)], name="timestamp_1")],
}


class _Writers:
    """Threads inserting queued batches. Two of them keep the server busy on both cores while
    the next batch is built; the first error stops them and is re-raised by the producer."""

    def __init__(self, db: Database, on_batch: Callable[[str, int], None], threads: int = 2):
        self.db = db
        self.on_batch = on_batch
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.inserted = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"fluxa-writer-{i}")
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks after a failure
            name, docs = item
            try:
                self.db[name].insert_many(docs, ordered=False)
                with self.lock:
                    self.inserted += len(docs)
                    self.on_batch(name, len(docs))
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self.error = exc

    def put(self, name: str, docs: list) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((name, docs))

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()


def prepare_database(db: Database, drop: bool) -> bool:
    """Make the target ready. Returns True when a half-loaded earlier run was dropped."""
    client = db.client
    meta = db[m.META_COLLECTION].find_one({"_id": "generation"})
    existing = [c for c in db.list_collection_names() if c in m.COLLECTIONS and db[c].estimated_document_count()]
    restarted = bool(meta and meta.get("status") != "complete")
    if existing and not (drop or restarted):
        raise FluxaError(
            f"database {db.name!r} already holds data ({', '.join(existing)})",
            "pass --drop to replace it, or choose another --db",
        )
    if existing or meta or drop:
        client.drop_database(db.name)
        client.drop_database(m.secondary_db_name(db.name))
    return restarted


def generate(db: Database, opts: GenerateOptions, *, drop: bool = False,
             on_batch: Callable[[str, int], None] = lambda name, n: None) -> GenerateResult:
    if opts.users < 1:
        raise FluxaError("--users must be at least 1")
    began = time.perf_counter()
    try:
        restarted = prepare_database(db, drop)
        db[m.META_COLLECTION].insert_one({"_id": "generation", "status": "running",
                                          "options": _opts_doc(opts)})
    except PyMongoError as exc:
        raise _lost(exc, 0) from exc
    convs, msgs = plan_sizes(opts)
    builder = _Builder(opts)
    writer = _Writers(db, on_batch)
    counts: dict[str, int] = {k: 0 for k in m.COLLECTIONS}
    try:
        try:
            _produce(builder, writer, opts, convs, msgs, counts)
        finally:
            writer.close()
        if writer.error is not None:
            raise writer.error
        for name, idx in INDEXES.items():
            db[name].create_indexes(idx)
        if opts.secondary:
            _sync_secondary(db, opts)
        db[m.META_COLLECTION].update_one({"_id": "generation"},
                                         {"$set": {"status": "complete", "counts": counts}})
    except PyMongoError as exc:
        raise _lost(exc, writer.inserted) from exc
    return GenerateResult(db=db.name, seed=opts.seed, counts=counts,
                          seconds=time.perf_counter() - began, restarted=restarted)


def _produce(builder: _Builder, writer: _Writers, opts: GenerateOptions, convs, msgs,
             counts: dict[str, int]) -> None:
    pending: dict[str, list] = {k: [] for k in m.COLLECTIONS}
    for b, first in enumerate(range(0, opts.users, BLOCK_USERS)):
        n = min(BLOCK_USERS, opts.users - first)
        for name, docs in builder.block(b, n, convs, msgs).items():
            counts[name] += len(docs)
            buf = pending[name]
            buf.extend(docs)
            while len(buf) >= opts.batch_size:
                writer.put(name, buf[:opts.batch_size])
                del buf[:opts.batch_size]
    for name, buf in pending.items():
        if buf:
            writer.put(name, buf)


def _sync_secondary(db: Database, opts: GenerateOptions) -> None:
    """A secondary system (say a CRM) with a copy of users as of the last synchronisation."""
    sec = db.client[m.secondary_db_name(db.name)]
    last_sync = opts.start + timedelta(days=opts.days + 1)
    batch = []
    for u in db[m.USERS].find({}, {"email": 1, "lastUpdated": 1}).sort("_id", 1):
        batch.append({"_id": u["_id"], "email": u["email"], "lastUpdated": u["lastUpdated"]})
        if len(batch) >= opts.batch_size:
            sec[m.USERS].insert_many(batch)
            batch = []
    if batch:
        sec[m.USERS].insert_many(batch)
    sec[m.SYNC_STATE].insert_one({"_id": m.USERS, "lastSyncAt": last_sync})


def _opts_doc(opts: GenerateOptions) -> dict:
    d = asdict(opts)
    d["start"] = opts.start
    return d


def _lost(exc: BaseException, inserted: int) -> FluxaError:
    if isinstance(exc, FluxaError):
        return exc
    return FluxaError(
        f"generation failed after {inserted} documents were written: {first_line(exc)}",
        "make sure the server is up, then rerun the same command: an interrupted generation "
        "is detected and the database is regenerated from scratch",
    )
