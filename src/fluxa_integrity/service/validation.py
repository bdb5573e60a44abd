"""Continuous validation (S1): every write to a policy collection evaluated within seconds.

Shape: ``Watcher(client, db, policy, store, opts, stop, log).run(ready)`` follows the writes to
the policy's collections and evaluates each inserted, updated or replaced document with
``checks/single_document.py`` - the policy's field, field-order and migration rules as the check
runs compile them, and its reference rules by a lookup of each referenced value - then records
what fails as findings with the check runs' fingerprints (database, rule, variant), so a check
run, the watcher and the incident intake all speak of the same finding.

Where the writes come from (``mode``):
- ``change_stream`` (a capability probe opens one; MongoDB replica sets): ``db.watch`` with
  ``fullDocument: updateLookup``, resumed from the stored resume token;
- ``oplog`` (FerretDB, or anything without change streams): ``find({ts: {$gt: position}})``
  on ``local.oplog.rs``, ``batch`` entries at a time, polled every ``poll_ms`` once caught up.
  Not a tailable cursor: on FerretDB an empty getMore re-runs the whole query, the same full read
  as this find, and a find needs no cursor kept alive (measured: docs/performance.md). FerretDB's
  ``u`` entries carry the whole new document (``$set`` with ``_id``); MongoDB's ``$v: 2`` diffs and
  partial ``$set``s do not, so that document is fetched by ``_id`` (a document deleted since is
  skipped: its deletion is the deletion rules' business).
  On the dev server the watcher keeps an oplog guard (mongo/oplog_guard.py) at its position, so
  the server never trims an entry it has not read, and trims the rest: the short live oplog is
  what keeps each poll cheap.

State (store/validation_models.py): the position (the last ``ts`` evaluated, and the resume token)
is saved in the same transaction as the findings of the entries up to it, and at least every
POSITION_EVERY_S: a restart resumes right after it. First start: at the server's clock now (the
history is a check run's business). A restart whose position the live oplog no longer holds (the
oplog was trimmed past it while no watcher ran) is a gap: said at once in the log and in the
report (the run ends failed); validation continues from the oldest entry still there.

Findings: one ``CheckRun`` per watcher session with status ``continuous`` (never ``complete``: a
session is not a run that read everything, so it closes no finding and is never "the last run"),
each batch's violations grouped per (rule, variant): a new finding opens (count = documents seen),
an open one grows (count and samples, with a sighting), a closed one reopens. The next full check
run sets the count to the truth again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure, PyMongoError
from sqlalchemy import select

from ..checks.findings import DEFAULT_SAMPLES, fingerprint
from ..checks.single_document import DocumentEvaluator, Violation
from ..checks.values import MISSING, doc_time, get_path, key_hash, short_repr
from ..mongo.oplog_guard import OplogGuard
from ..policy.models import Policy
from ..store import Store
from ..store.models import CheckRun, Finding, Sighting
from ..store.validation_models import ValidationPosition

UTC = timezone.utc
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
DOCS = CodecOptions(tz_aware=True)
POSITION_EVERY_S = 1.0
MODES = ("auto", "oplog", "change_stream")


@dataclass
class WatchOptions:
    mode: str = "auto"
    poll_ms: int = 100
    batch: int = 1000
    name: str | None = None  # the position's key (default validation:<db>)
    once: bool = False  # stop once caught up (a manual run, tests)


@dataclass
class Recorded:
    """One violation as recorded: for the latency the benchmark and the job report."""
    collection: str
    _id: object
    rule_id: str
    variant: str
    written: datetime | None  # the oplog entry's wall time (None from a change stream without it)
    recorded: datetime


@dataclass
class WatchReport:
    mode: str = ""
    entries: int = 0
    documents: int = 0
    violations: int = 0
    opened: int = 0
    reopened: int = 0
    last: Timestamp | None = None
    gaps: list[dict] = field(default_factory=list)
    run_id: int | None = None
    latencies: list[float] = field(default_factory=list)  # seconds from write (wall) to recorded finding

    def latency_summary(self) -> dict:
        if not self.latencies:
            return {}
        xs = sorted(self.latencies)

        def q(p: float) -> float:
            return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)

        return {"n": len(xs), "p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "max": round(xs[-1], 3)}


def _json(value):
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def ts_text(ts: Timestamp | None) -> str | None:
    return f"{ts.time}:{ts.inc}" if ts is not None else None


def load_position(store: Store, name: str) -> tuple[Timestamp | None, dict | None]:
    with store.session() as s:
        row = s.get(ValidationPosition, name)
        if row is None or row.ts_t is None:
            return None, (row.resume_token if row else None)
        return Timestamp(row.ts_t, row.ts_i), row.resume_token


def _save_position(s, name: str, db: str, ts: Timestamp | None, token, report: WatchReport) -> None:
    row = s.get(ValidationPosition, name) or ValidationPosition(name=name, db=db)
    if ts is not None:
        row.ts_t, row.ts_i = ts.time, ts.inc
    if token is not None:
        row.resume_token = _json(token)
    row.db, row.updated_at = db, datetime.now(UTC)
    row.stats = {"entries": report.entries, "documents": report.documents, "violations": report.violations,
                 "run_id": report.run_id, "mode": report.mode}
    s.merge(row)


def supports_change_streams(db) -> bool:
    """The capability probe: can a change stream be opened on this database?"""
    try:
        with db.watch(max_await_time_ms=1) as stream:
            stream.try_next()
        return True
    except (OperationFailure, PyMongoError):
        return False


class Watcher:
    def __init__(self, client, db_name: str, policy: Policy, store: Store, opts: WatchOptions | None = None,
                 stop: threading.Event | None = None, log: Callable[[str], None] = lambda msg: None,
                 on_record: Callable[[list[Recorded]], None] | None = None):
        self.client, self.db_name, self.policy, self.store = client, db_name, policy, store
        self.db = client.get_database(db_name, codec_options=DOCS)
        self.opts = opts or WatchOptions()
        if self.opts.mode not in MODES:
            from ..errors import FluxaError

            raise FluxaError(f"unknown validation mode {self.opts.mode!r}", f"use one of {', '.join(MODES)}")
        self.stop = stop or threading.Event()
        self.log = log
        self.on_record = on_record
        self.name = self.opts.name or f"validation:{db_name}"
        self.evaluators = {c: ev for c in policy.collections if (ev := DocumentEvaluator(policy, c, self.db))}
        self.prefix = db_name + "."
        self.report = WatchReport()
        self._saved_at = float("-inf")
        self._pending_pos: Timestamp | None = None

    # -- entry point ------------------------------------------------------------------------------

    def run(self, ready: Callable[[], None] = lambda: None) -> WatchReport:
        if not self.evaluators:
            from ..errors import FluxaError

            raise FluxaError("the policy has no enabled document or reference rule to validate writes with",
                             "enable field/reference rules for the collections (`policy show --section rules`)")
        mode = self.opts.mode
        if mode == "auto":
            mode = "change_stream" if supports_change_streams(self.db) else "oplog"
        self.report.mode = mode
        self.report.run_id = self._open_session()
        try:
            if mode == "change_stream":
                self._run_change_stream(ready)
            else:
                self._run_oplog(ready)
        finally:
            self._close_session()
        return self.report

    # -- the oplog ----------------------------------------------------------------------------------

    def _run_oplog(self, ready: Callable[[], None]) -> None:
        oplog = self.client.local.get_collection("oplog.rs", codec_options=RAW)
        pos, _ = load_position(self.store, self.name)
        if pos is None:
            pos = _server_now(self.client)
            self.log(f"continuous validation of {self.db_name}: first start, from the server's clock "
                     f"({ts_text(pos)}); earlier writes are a check run's business")
        else:
            pos = self._check_overlap(oplog, pos)
        guard = OplogGuard(self.client, self.name)
        self._hold(guard, pos, force=True)
        ready()
        while not self.stop.is_set():
            batch = list(oplog.find({"ts": {"$gt": pos}}, batch_size=self.opts.batch).limit(self.opts.batch))
            if batch:
                pos = self._process_oplog(batch)
            self._hold(guard, pos)
            self._maybe_save(pos)
            if len(batch) < self.opts.batch:
                if self.opts.once:
                    break
                self.stop.wait(self.opts.poll_ms / 1000)
        self._maybe_save(pos, force=True)

    def _hold(self, guard: OplogGuard, pos: Timestamp, force: bool = False) -> None:
        try:
            guard.hold(pos, force=force)
        except PyMongoError as exc:  # the cap applies meanwhile; the next poll writes it again
            self.log(f"continuous validation: oplog guard not written: {exc}")

    def _check_overlap(self, oplog, pos: Timestamp) -> Timestamp:
        first = next(iter(oplog.find({"ts": {"$gte": pos}}, {"ts": 1}).limit(1)), None)
        if first is None or first["ts"] == pos:
            return pos  # the position is still there, or nothing was written since (nothing missed)
        gap = {"after": ts_text(pos), "before": ts_text(first["ts"]),
               "reason": "the live oplog was trimmed past the validation position while no watcher ran"}
        self.report.gaps.append(gap)
        self.log(f"GAP: continuous validation of {self.db_name} did not see the writes after {gap['after']} up to "
                 f"{gap['before']} ({gap['reason']}); a check run covers them; validating from {gap['before']}")
        return Timestamp(first["ts"].time, first["ts"].inc - 1) if first["ts"].inc else \
            Timestamp(first["ts"].time - 1, 0xFFFFFFFF)

    def _process_oplog(self, batch: list) -> Timestamp:
        items: list[tuple[str, dict, Violation, datetime | None]] = []
        for e in batch:
            self.report.entries += 1
            ns = e["ns"]
            if not ns.startswith(self.prefix):
                continue
            coll = ns[len(self.prefix):]
            ev = self.evaluators.get(coll)
            if ev is None:
                continue
            op = e["op"]
            if op == "i":
                doc = _decode(e["o"])
            elif op == "u":
                doc = self._updated_document(coll, e)
            else:
                continue
            if doc is None:
                continue
            self.report.documents += 1
            wall = e.get("wall")
            for v in ev.evaluate(doc):
                items.append((coll, doc, v, wall))
        last = batch[-1]["ts"]
        if items:
            self._record(items, last, None)
        else:
            self._pending_pos = last
        return last

    def _updated_document(self, coll: str, e) -> dict | None:
        o = e["o"]
        s = o.get("$set")
        if o.get("$v") != 2 and s is not None and "_id" in s:
            return _decode(s)  # FerretDB: the whole new document
        if not any(k.startswith("$") for k in o.keys()):
            return _decode(o)  # a replacement
        o2 = e.get("o2") or {}
        if "_id" not in o2:
            return None
        return self.db[coll].find_one({"_id": _decode(o2)["_id"]})

    # -- change streams -----------------------------------------------------------------------------

    def _run_change_stream(self, ready: Callable[[], None]) -> None:
        pos, token = load_position(self.store, self.name)
        pipeline = [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]},
                                "ns.coll": {"$in": sorted(self.evaluators)}}}]
        kw: dict = {}
        if token:
            kw["resume_after"] = token
        elif pos is not None:
            kw["start_at_operation_time"] = Timestamp(pos.time, pos.inc + 1)
        with self.db.watch(pipeline, full_document="updateLookup", max_await_time_ms=self.opts.poll_ms,
                           batch_size=self.opts.batch, **kw) as stream:
            ready()
            while not self.stop.is_set():
                items, last = [], None
                change = stream.try_next()
                n = 0
                while change is not None:
                    n += 1
                    self.report.entries += 1
                    last = change.get("clusterTime") or last
                    doc = change.get("fullDocument")
                    coll = change["ns"]["coll"]
                    if doc is not None and coll in self.evaluators:
                        self.report.documents += 1
                        wall = change.get("wallTime")
                        items.extend((coll, doc, v, wall) for v in self.evaluators[coll].evaluate(doc))
                    if n >= self.opts.batch:
                        break
                    change = stream.try_next()
                token = stream.resume_token
                if items:
                    self._record(items, last, token)
                elif last is not None:
                    self._pending_pos = last
                    self._maybe_save(last, token)
                if n == 0 and self.opts.once:
                    break
            self._maybe_save(self._pending_pos, stream.resume_token, force=True)

    # -- the state store ----------------------------------------------------------------------------

    def _open_session(self) -> int:
        rules = sorted({r for ev in self.evaluators.values() for r in ev.rule_ids})
        with self.store.session() as s:
            run = CheckRun(database=self.db_name, started_at=datetime.now(UTC), status="continuous", rules=rules,
                           collections=sorted(self.evaluators), stats={"continuous": True, "incremental": True,
                                                                       "watcher": self.name})
            s.add(run)
            s.flush()
            return run.id

    def _close_session(self) -> None:
        r = self.report
        with self.store.session() as s:
            run = s.get(CheckRun, r.run_id)
            run.finished_at = datetime.now(UTC)
            run.stats = {**run.stats, "mode": r.mode, "entries": r.entries, "documents": r.documents,
                         "violations": r.violations, "opened": r.opened, "reopened": r.reopened,
                         "last": ts_text(r.last), "gaps": r.gaps, "latency": r.latency_summary()}

    def _maybe_save(self, pos: Timestamp | None, token=None, force: bool = False) -> None:
        if pos is None or (pos == self.report.last and token is None and not force):
            return
        if not force and time.monotonic() - self._saved_at < POSITION_EVERY_S:
            return
        self.report.last = pos
        with self.store.session() as s:
            _save_position(s, self.name, self.db_name, pos, token, self.report)
        self._saved_at = time.monotonic()

    def _record(self, items: list, pos: Timestamp | None, token) -> None:
        """The batch's violations as findings, and the position after them, in one transaction."""
        now = datetime.now(UTC)
        groups: dict[tuple[str, str], list] = defaultdict(list)
        for coll, doc, v, wall in items:
            groups[(v.rule.id, v.variant)].append((coll, doc, v, wall))
        recorded: list[Recorded] = []
        with self.store.session() as s:
            for (rule_id, variant), rows in groups.items():
                coll, _, first_v, _ = rows[0]
                self._upsert(s, coll, first_v, rows, now)
                for c, doc, v, wall in rows:
                    recorded.append(Recorded(c, doc.get("_id"), rule_id, variant, wall, now))
            if pos is not None:
                self.report.last = pos
                _save_position(s, self.name, self.db_name, pos, token, self.report)
        self._saved_at = time.monotonic()
        self.report.violations += len(items)
        for r in recorded:
            if isinstance(r.written, datetime):
                w = r.written if r.written.tzinfo else r.written.replace(tzinfo=UTC)
                self.report.latencies.append(max(0.0, (r.recorded - w).total_seconds()))
        if len(self.report.latencies) > 100_000:
            del self.report.latencies[:50_000]
        if self.on_record is not None:
            self.on_record(recorded)

    def _upsert(self, s, coll: str, v: Violation, rows: list, now: datetime) -> None:
        rule = v.rule
        fp = fingerprint(self.db_name, rule.id, v.variant)
        cp = self.policy.collections.get(coll)
        user_field = cp.user_field if cp is not None else None
        samples = [{"_id": doc.get("_id"), "value": short_repr(x.value), "source": "continuous validation"}
                   for _, doc, x, _ in rows[:DEFAULT_SAMPLES]]
        users = {key_hash(u) for _, doc, _, _ in rows
                 if user_field and (u := get_path(doc, user_field)) is not MISSING and u is not None}
        times = [t for _, doc, _, _ in rows if (t := doc_time(doc)) is not None]
        times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times]
        dc = self.policy.data_class_for(coll, getattr(rule, "field", None))
        row = s.scalar(select(Finding).where(Finding.database == self.db_name, Finding.fingerprint == fp))
        if row is None or row.status == "closed":
            fields = dict(rule_id=rule.id, variant=v.variant, collection=coll, category=rule.category,
                          data_class=dc.name if dc else None, criticality=dc.criticality if dc else None,
                          message=v.message, count=len(rows), affected_users=len(users), samples=_json(samples),
                          first_doc_time=min(times, default=None), last_doc_time=max(times, default=None),
                          last_run_id=self.report.run_id)
            if row is None:
                row = Finding(database=self.db_name, fingerprint=fp, status="open", opened_at=now,
                              first_run_id=self.report.run_id, **fields)
                s.add(row)
                self.report.opened += 1
            else:
                for k, val in fields.items():
                    setattr(row, k, val)
                row.status, row.closed_at = "open", None
                self.report.reopened += 1
            self.log(f"finding {'opened' if row.id is None else 'reopened'}: {rule.id} ({v.variant}) on "
                     f"{self.db_name}.{coll}: {v.message}")
        else:  # open: it grows; the next full check run sets the count to the truth
            seen = {json.dumps(x.get("_id"), sort_keys=True, default=str) for x in (row.samples or [])}
            fresh = [x for x in _json(samples) if json.dumps(x.get("_id"), sort_keys=True, default=str) not in seen]
            row.samples = ((row.samples or []) + fresh)[:DEFAULT_SAMPLES]
            row.count = (row.count or 0) + len(rows)
            row.affected_users = max(row.affected_users or 0, len(users))
            if times:
                lo, hi = min(times), max(times)
                first, last = _aware(row.first_doc_time), _aware(row.last_doc_time)
                row.first_doc_time = lo if first is None or lo < first else first
                row.last_doc_time = hi if last is None or hi > last else last
        s.flush()
        s.add(Sighting(finding_id=row.id, run_id=self.report.run_id, seen_at=now, count=row.count))


def _aware(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _decode(raw) -> dict:
    if isinstance(raw, RawBSONDocument):
        return bson.decode(raw.raw, codec_options=DOCS)
    return raw


def _server_now(client) -> Timestamp:
    local = client.admin.command("hello").get("localTime")
    secs = int(local.timestamp()) if local is not None else int(time.time())
    return Timestamp(secs, 0)


def watch(uri: str, db: str, policy: Policy, store: Store, opts: WatchOptions | None = None,
          stop: threading.Event | None = None, log: Callable[[str], None] = lambda msg: None,
          ready: Callable[[], None] = lambda: None, on_record=None) -> WatchReport:
    """Connect, watch until ``stop`` (or, with ``once``, until caught up), return the report."""
    from ..mongo.connection import connect

    client = connect(uri)
    try:
        return Watcher(client, db, policy, store, opts, stop, log, on_record).run(ready)
    finally:
        client.close()


def run_task(ctx, job, once: bool, ready: Callable[[], None]) -> tuple[str, str, dict, str | None]:
    """The ``validate-oplog`` job of ``serve`` (tasks.py builds its TaskResult from this):
    (outcome, summary, details, error) of one watcher session; a gap makes it failed."""
    opts = WatchOptions(once=once, poll_ms=int(job.params.get("poll_ms", 100)))
    rep = watch(ctx.uri, ctx.db, ctx.policy, ctx.store, opts, ctx.stop, ctx.log, ready)
    details = {"mode": rep.mode, "entries": rep.entries, "documents": rep.documents, "violations": rep.violations,
               "opened": rep.opened, "reopened": rep.reopened, "last": ts_text(rep.last), "gaps": rep.gaps,
               "check_run_id": rep.run_id, "latency": rep.latency_summary()}
    text = (f"validated {rep.documents} written documents ({rep.entries} oplog entries, {rep.mode}): "
            f"{rep.violations} violations, {rep.opened} findings opened, {rep.reopened} reopened")
    if rep.gaps:
        return "failed", text, details, "; ".join(f"GAP after {g['after']} up to {g['before']}: {g['reason']}"
                                                  for g in rep.gaps)
    return "ok", text, details, None
