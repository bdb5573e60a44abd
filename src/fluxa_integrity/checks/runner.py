"""A check run: plan the passes from the policy, run them (in levels, optionally in worker
processes), then decide the per-collection rules and label findings with their data class.

Order: a collection whose rules look up another collection's ids or fields is scanned after
it (users -> conversations -> messages). With ``workers > 1`` the passes of one level run in
parallel, and each collection is split into partitions (checks/partitions.py): segments of a
backup's files, ``_id`` ranges on a server - except on FerretDB in ``auto`` mode, which does not
push ``_id`` range filters down to SQLite, so each range would cost a full scan (docs/checks.md).
With ``dask`` the same passes and partitions run on a Dask cluster instead of the run's own
processes (checks/dask_pool.py: same interface as ``_Pool``, same merge, so the same findings).

The documents come from a server (``uri``) or from a backup's files (``files``,
checks/sources.py) - the same passes and rules either way. On files, rules that need what a
backup does not hold are listed in the warnings as not evaluable: ``sync`` (the secondary
system is another database), ``validate`` (the server's verdict on its storage), and
``count_drop`` when there is no baseline from before the backup (a plain dump).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import FluxaError
from ..mongo.connection import connect, fast_count
from ..mongo.unsupported import is_ferretdb
from ..policy.durations import parse_duration
from ..policy.models import Policy
from ..policy.rules import (CopiedFieldRule, CorruptionRule, CountDropRule, CounterRule, DeletionsRule,
                            FieldOrderRule, FieldRule, MigrationRule, ReferenceRule, SyncRule,
                            TimestampOrderRule)
from .collection_rules import (add_counter_violations, audit_deletion_findings, corruption_findings,
                               count_drop_findings, counter_violations, sync_extra_findings)
from .findings import DEFAULT_SAMPLES, Findings, FindingResult
from .partitions import Split, assemble_one, jobs, run_partition, split, tasks_of
from .scan import PassResult, PassSpec, run_pass
from .sources import BackupFiles

UTC = timezone.utc
DOC_LOCAL = (FieldRule, FieldOrderRule, MigrationRule, ReferenceRule, DeletionsRule)  # what incremental runs evaluate


@dataclass
class RunOptions:
    collections: list[str] | None = None
    rules: list[str] | None = None
    workers: int = 1
    since: datetime | None = None
    now: datetime | None = None
    max_samples: int = DEFAULT_SAMPLES
    keep_ids: bool = False
    incremental: bool = False
    # with workers > 1, split collections into partitions: auto (backup files always, a server
    # unless it is FerretDB), on, off (whole collections in parallel, as before issue 13)
    partitions: str = "auto"
    min_partition_docs: int = 20000
    # run the passes and partitions on Dask (checks/dask_pool.py): "local" (a LocalCluster of
    # ``workers`` processes for this run) or "tcp://HOST:PORT" (an existing scheduler)
    dask: str | None = None
    # on Dask, key sets are held on the cluster in this many buckets by key hash and references
    # joined there (checks/shuffle.py); None: one bucket per worker
    key_buckets: int | None = None
    # read from the server only what the oplog says changed since the last --changes run, and
    # evaluate only the parts of a local copy that changed (checks/changes_run.py); exact
    changes: bool = False


@dataclass
class RunReport:
    database: str
    started_at: datetime
    seconds: float
    collections: list[str]
    rules: list[str]  # ids evaluated: only their findings can be closed by this run
    docs: dict[str, int]
    findings: list[FindingResult]
    warnings: list[str] = field(default_factory=list)
    watermarks: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    incremental: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # full document counts: count-drop baselines
    missing: list[str] = field(default_factory=list)  # collections in scope absent from the database
    changes: dict | None = None  # --changes: per collection, parts evaluated and reused, documents read

    @property
    def total_docs(self) -> int:
        return sum(self.docs.values())


class ProgressSink:
    """What the CLI shows: a bar per collection."""

    def start(self, collection: str, total: int) -> None: ...
    def advance(self, collection: str, n: int) -> None: ...
    def done(self, collection: str) -> None: ...


def _user_field(policy: Policy, coll: str) -> str | None:
    cp = policy.collections.get(coll)
    return cp.user_field if cp is not None else None


def _time_window(rule: DeletionsRule, opts: RunOptions, now: datetime) -> datetime:
    return opts.since or now - parse_duration(rule.lookback)


def plan(policy: Policy, existing: set[str], opts: RunOptions,
         db_name: str = "the database") -> tuple[dict[str, list], list[str], list[str]]:
    """Active rules per collection in scope, warnings about what cannot be checked, and the
    collections in scope that the database lacks.

    Raises FluxaError when nothing would be evaluated: a run that checked no rule must not look
    like a clean one (a mistyped --db, or a policy written for another database)."""
    warnings: list[str] = []
    known = list(policy.collections)
    wanted = opts.collections or known
    unknown = [c for c in wanted if c not in policy.collections]
    if unknown:
        raise FluxaError(f"unknown collection {unknown[0]!r}: the policy does not describe it",
                         f"the policy's collections are: {', '.join(known)}")
    all_ids = {r.id for _, r in policy.iter_rules()}
    if opts.rules:
        bad = [r for r in opts.rules if r not in all_ids]
        if bad:
            raise FluxaError(f"unknown rule {bad[0]!r}", "list them with `fluxa-integrity policy show --section rules`")
    active: dict[str, list] = {}
    missing: list[str] = []
    selected = 0
    for coll in wanted:
        rules = [r for r in policy.collections[coll].rules if r.enabled and (not opts.rules or r.id in opts.rules)]
        if opts.incremental:
            rules = [r for r in rules if isinstance(r, DOC_LOCAL)]
        if not rules:
            continue
        selected += len(rules)
        if coll not in existing:
            missing.append(coll)
            warnings.append(f"collection {coll!r} does not exist in the database: its {len(rules)} rules were skipped")
            continue
        active[coll] = rules
    if not active:
        if selected == 0:
            what = "incremental run" if opts.incremental else "run"
            raise FluxaError(f"this {what} selects no enabled rule of the policy, so it would check nothing",
                             "widen --rules/--collections" + (" or run without --incremental (it evaluates only "
                                                               "per-document rules)" if opts.incremental else ""))
        raise FluxaError(f"database {db_name!r} has none of the collections the policy checks "
                         f"(expected {', '.join(missing)}), so no rule could be evaluated",
                         "check --db and --uri (database names are case-sensitive), or point --policy at the "
                         "policy written for this database")
    return active, warnings, missing


def run_checks(uri: str | None, db_name: str, policy: Policy, opts: RunOptions | None = None,
               baselines: dict[str, int] | None = None, watermarks: dict[str, datetime] | None = None,
               progress: ProgressSink | None = None, files: BackupFiles | None = None, store=None) -> RunReport:
    """``files``: evaluate a backup's files (no server; ``uri`` is ignored). ``baselines`` are
    then the counts of the last run before the backup was taken, None when unknown (a dump).
    ``store``: the state store, for --changes (the oplog archive); opened when None."""
    opts = opts or RunOptions()
    if not opts.changes or files is not None:
        return _run_checks(uri, db_name, policy, opts, baselines, watermarks, progress, files, store)
    from ..home import fluxa_home
    from .mirror import copy_lock

    with copy_lock(fluxa_home(), uri or "", db_name):
        return _run_checks(uri, db_name, policy, opts, baselines, watermarks, progress, files, store)


def _run_checks(uri: str | None, db_name: str, policy: Policy, opts: RunOptions, baselines, watermarks,
                progress: ProgressSink | None, files: BackupFiles | None, store) -> RunReport:
    progress = progress or ProgressSink()
    began = time.perf_counter()
    now = opts.now or datetime.now(UTC)
    if files is not None and opts.incremental:
        raise FluxaError("--incremental reads what changed on a server since the last run; a backup is read whole",
                         "drop --incremental")
    if opts.changes:
        _changes_guard(opts, files)
    if opts.partitions not in ("auto", "on", "off"):
        raise FluxaError(f"unknown partitions mode {opts.partitions!r}", "use auto, on or off")
    if opts.dask is not None:
        from .dask_pool import parse_address

        parse_address(opts.dask)
    if opts.key_buckets is not None and (opts.dask is None or opts.key_buckets < 1):
        raise FluxaError(f"--key-buckets {opts.key_buckets}: key buckets are for a Dask run, and at least 1",
                         "add --dask local (or --dask tcp://HOST:PORT) with --key-buckets N >= 1, or drop it")
    client = connect(uri) if files is None else None
    db = client[db_name] if client is not None else files.as_database()
    try:
        existing = set(db.list_collection_names())
        active, warnings, missing = plan(policy, existing, opts, db_name)
    except FluxaError:
        if client is not None:
            client.close()
        raise
    unevaluable: set[str] = set()
    watermarks = watermarks or {}

    # -- what each pass must provide to others ------------------------------------------------
    keys_needed: dict[str, set[str]] = {}
    facts_needed: dict[str, set[str]] = {}
    counts_needed: dict[str, set[str]] = {}
    deps: dict[str, set[str]] = {c: set() for c in active}
    sync_cutoffs: dict[str, datetime] = {}
    secondary_passes: list[tuple[str, SyncRule, str]] = []
    for coll, rules in active.items():
        for r in rules:
            if isinstance(r, ReferenceRule) and r.to != coll:
                keys_needed.setdefault(r.to, set()).add(r.to_field)
                deps[coll].add(r.to)
            elif isinstance(r, (TimestampOrderRule, CopiedFieldRule)):
                if r.parent_collection == coll:
                    continue  # decided within the pass (checks/self_order.py)
                facts_needed.setdefault(r.parent_collection, set()).add(r.parent_field)
                if r.parent_collection != coll:
                    deps[coll].add(r.parent_collection)
            elif isinstance(r, CounterRule):
                facts_needed.setdefault(coll, set()).add(r.field)
                counts_needed.setdefault(r.child_collection, set()).add(r.child_field)
            elif isinstance(r, SyncRule) and files is not None:
                unevaluable.add(r.id)
                warnings.append(f"rule {r.id}: not evaluable on a backup: it compares {coll} with the secondary system "
                                f"({r.secondary_db.replace('{db}', db_name)}), which the backup does not hold")
            elif isinstance(r, CountDropRule) and files is not None and baselines is None:
                unevaluable.add(r.id)
                warnings.append(f"rule {r.id}: not evaluable on this dump: no check run counted {coll} before it was "
                                "taken, so there is no baseline to compare its count with")
            elif isinstance(r, SyncRule):
                sec_db = r.secondary_db.replace("{db}", db_name)
                state = client[sec_db][r.sync_state_collection].find_one({"_id": r.sync_state_id})
                if state is None or r.secondary_collection not in client[sec_db].list_collection_names():
                    warnings.append(f"rule {r.id}: no secondary system at {sec_db}.{r.secondary_collection} "
                                    f"with {r.sync_state_collection}._id={r.sync_state_id!r}; skipped")
                    continue
                cutoff = state.get(r.sync_state_field)
                if isinstance(cutoff, datetime):
                    sync_cutoffs[r.id] = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
                secondary_passes.append((coll, r, sec_db))
                keys_needed.setdefault(coll, set()).add("_id")
    for coll in active:
        active[coll] = [r for r in active[coll] if r.id not in unevaluable]
    # collections others depend on but that are not checked themselves still need a keys pass
    support = [c for c in set(keys_needed) | set(facts_needed) | set(counts_needed) if c not in active]
    for c in support:
        if c not in existing:
            warnings.append(f"collection {c!r} is referenced but does not exist: references to it all dangle")
        active[c] = []
        deps[c] = set()
    levels = _levels(deps)

    since_of: dict[str, datetime | None] = {}
    for coll, rules in active.items():
        dels = [r for r in rules if isinstance(r, DeletionsRule)]
        since_of[coll] = _time_window(dels[0], opts, now) if dels else opts.since

    imports: dict = {}
    results: dict[str, PassResult] = {}
    mirror, old_exports, stored_refs, change_stats = None, {}, {}, {}
    if opts.changes:
        mirror, old_exports = _refresh_mirror(client, store, uri, db_name, active, existing, progress)
        warnings.extend(mirror.warnings)
    # the secondary systems' id sets come first: the primary's pass checks against them
    for coll, r, sec_db in secondary_passes:
        res = run_pass(PassSpec(uri=uri, db=db_name, source_db=sec_db, collection=r.secondary_collection,
                                export_keys=["_id"], user_field=None))
        imports[("keys", "secondary:" + r.id, "_id")] = res.keys["_id"]

    def spec_for(coll: str) -> PassSpec:
        needs = {}
        for r in active[coll]:
            if isinstance(r, ReferenceRule) and r.to != coll:
                needs[("keys", r.to, r.to_field)] = imports.get(("keys", r.to, r.to_field))
            elif isinstance(r, (TimestampOrderRule, CopiedFieldRule)) and r.parent_collection != coll:
                needs[("facts", r.parent_collection)] = imports.get(("facts", r.parent_collection))
            elif isinstance(r, SyncRule) and ("keys", "secondary:" + r.id, "_id") in imports:
                needs[("keys", "secondary:" + r.id, "_id")] = imports[("keys", "secondary:" + r.id, "_id")]
        changed_since = None
        wm_field = policy.collections[coll].watermark_field if coll in policy.collections else None
        if opts.incremental and wm_field and coll in watermarks:
            changed_since = (wm_field, watermarks[coll])
        return PassSpec(uri=uri or "", db=db_name, collection=coll, rules=active[coll], watermark_field=wm_field,
                        export_keys=sorted(keys_needed.get(coll, ())), export_facts=sorted(facts_needed.get(coll, ())),
                        count_children=sorted(counts_needed.get(coll, ())), imports=needs,
                        user_field=_user_field(policy, coll), changed_since=changed_since, since=since_of.get(coll),
                        sync_cutoffs=sync_cutoffs, max_samples=opts.max_samples, keep_ids=opts.keep_ids,
                        source=files.segment(coll) if files is not None else None)

    pool = None
    try:
        if opts.dask is not None:
            from .dask_pool import DaskPool

            pool = DaskPool(opts.dask, opts.workers, opts.key_buckets)
        elif opts.workers > 1:
            pool = _Pool(opts.workers)
        parts = pool.workers if pool is not None else 1
        partition = parts > 1 and (opts.partitions == "on" or (
            opts.partitions == "auto" and (files is not None or not is_ferretdb(client))))
        for level in levels:
            specs = [spec_for(c) for c in level if c in existing]
            for s in specs:
                progress.start(s.collection, files.count(s.collection) if files is not None else fast_count(db, s.collection))
            # on Dask a unique rule's keys are joined by hash, not read again by a pass of their own
            splits = [split(s, parts if partition else 1, opts.min_partition_docs,
                            db if files is None else None, uniques_pass=opts.dask is None) for s in specs]
            if mirror is not None:
                from .changes_run import CollectionStats, evaluate

                done = []
                for s in specs:
                    if s.collection in mirror.copies:
                        st = change_stats[s.collection] = CollectionStats()
                        res, stored_refs[s.collection] = evaluate(mirror, mirror.copies[s.collection], s, old_exports,
                                                                  progress.advance, st)
                    else:
                        res = run_pass(s, progress.advance)
                    done.append(res)
            else:
                done = pool.run(splits, progress) if pool is not None else [run_pass(s, progress.advance) for s in specs]
            for res in done:
                _collect(res, imports, results, progress)
            for c in level:  # a referenced collection that does not exist has no keys at all
                for f in keys_needed.get(c, ()):
                    imports.setdefault(("keys", c, f), _empty_keyset())
        # counter rules: on a Dask run the facts and counts are on the cluster, so decided there
        counted = {(coll, r.id): _counter_violations(r, results.get(coll), results.get(r.child_collection), pool)
                   for coll, rules in active.items() for r in rules if isinstance(r, CounterRule) and coll in results}
    except BaseException:
        if client is not None:
            client.close()
        raise
    finally:
        if pool is not None:
            pool.close()

    # -- rules decided per collection --------------------------------------------------------
    findings: list[FindingResult] = []
    docs: dict[str, int] = {}
    counts_now: dict[str, int] = {}
    wm_out: dict[str, tuple[str, datetime]] = {}
    for coll, rules in active.items():
        if not rules or coll not in results:
            continue
        res = results[coll]
        docs[coll] = res.docs
        extra = Findings(coll, opts.max_samples, opts.keep_ids)
        full_count = res.docs if not opts.incremental else db[coll].count_documents({})
        counts_now[coll] = full_count
        for r in rules:
            if isinstance(r, CounterRule):
                add_counter_violations(r, coll, counted[(coll, r.id)], extra)
            elif isinstance(r, CountDropRule):
                count_drop_findings(r, coll, full_count, (baselines or {}).get(coll), extra)
            elif isinstance(r, DeletionsRule):
                audit_deletion_findings(db, r, coll, since_of[coll], _user_field(policy, coll), extra)
            elif isinstance(r, CorruptionRule):
                corruption_findings(db, r, coll, extra, warnings)
            elif isinstance(r, SyncRule) and ("keys", coll, "_id") in imports and r.id in sync_cutoffs:
                sync_extra_findings(client, r, coll, r.secondary_db.replace("{db}", db_name),
                                    imports[("keys", coll, "_id")], extra)
        findings.extend(res.findings)
        findings.extend(extra.results())
        warnings.extend(_never_present_warnings(rules, res))
        if res.watermark is not None:  # the pass saw every document (or every changed one)
            prev = (watermarks or {}).get(coll)
            wm_out[coll] = (policy.collections[coll].watermark_field, max(res.watermark, prev) if prev else res.watermark)
    if client is not None:
        client.close()
    if mirror is not None:  # the run is complete: its copy and results become the next run's start
        mirror.commit(stored_refs, {k: v for k, v in imports.items()
                                    if k[0] in ("keys", "facts") and not k[1].startswith("secondary:")})
    rule_index = {r.id: r for _, r in policy.iter_rules()}
    for f in findings:
        r = rule_index.get(f.rule_id)
        dc = policy.data_class_for(f.collection, getattr(r, "field", None))
        if dc is not None:
            f.data_class, f.criticality = dc.name, dc.criticality
    findings.sort(key=lambda f: (f.collection, f.rule_id, f.variant))
    evaluated = sorted(r.id for rules in active.values() for r in rules)
    report = RunReport(database=files.label if files is not None else db_name, started_at=now, seconds=time.perf_counter() - began,
                       collections=sorted(c for c, r in active.items() if r), rules=evaluated, docs=docs,
                       findings=findings, warnings=warnings, watermarks=wm_out, incremental=opts.incremental,
                       counts=counts_now, missing=missing,
                       changes={c: vars(st) for c, st in change_stats.items()} if mirror is not None else None)
    return report


def _changes_guard(opts: RunOptions, files) -> None:
    if files is not None:
        raise FluxaError("--changes follows a live database's oplog; a backup is read whole", "drop --changes")
    if opts.incremental:
        raise FluxaError("--changes and --incremental are two ways to read less: pick one",
                         "--changes is exact (every rule); --incremental evaluates per-document rules only")
    if opts.dask is not None or opts.workers > 1:
        raise FluxaError("--changes evaluates the changed parts in this process; --workers and --dask are not "
                         "supported with it yet", "drop --workers/--dask (a --changes run reads a small share)")


def _refresh_mirror(client, store, uri: str | None, db_name: str, active: dict, existing: set,
                    progress: ProgressSink):
    """The local copy brought up to the server's state, and the exports of its last run."""
    from ..home import fluxa_home
    from .mirror import Mirror

    if store is None:
        from ..store import open_store

        store = open_store()
    mirror = Mirror.open(fluxa_home(), uri or "", db_name)
    # a collection compared with a secondary system is read from the server as before
    copied = sorted(c for c in active if c in existing and not any(isinstance(r, SyncRule) for r in active[c]))
    mirror.refresh(client, store, copied, progress)
    return mirror, mirror.old_exports()


def _counter_violations(rule: CounterRule, parent: PassResult, child: PassResult | None, pool) -> list[tuple]:
    facts = parent.facts
    counts = child.child_counts.get(rule.child_field) if child is not None else None
    if getattr(facts, "on_cluster", False):  # held by key hash on a Dask cluster
        return pool.counter_violations(rule, facts, counts)
    return counter_violations(rule, facts, counts or Counter())


def _empty_keyset():
    from .keyset import KeySet

    return KeySet().freeze()


def _never_present_warnings(rules: list, res: PassResult) -> list[str]:
    """A field rule whose field no document has is probably a typo in the policy."""
    out = []
    if res.docs == 0:
        return out
    missing_everywhere = {f.rule_id for f in res.findings if f.variant == "missing" and f.count == res.docs}
    for r in rules:
        if isinstance(r, FieldRule) and r.id in missing_everywhere:
            out.append(f"rule {r.id}: field {r.field!r} is missing from all {res.docs} documents of "
                       f"{res.collection} - a typo in the policy?")
    return out


def _levels(deps: dict[str, set[str]]) -> list[list[str]]:
    levels, done = [], set()
    remaining = dict(deps)
    while remaining:
        ready = sorted(c for c, d in remaining.items() if d <= done | {c})
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise FluxaError(f"the policy's cross-collection rules form a cycle among: {cycle}",
                             "point references one way (child -> parent); docs/checks.md explains why")
        levels.append(ready)
        done.update(ready)
        for c in ready:
            remaining.pop(c)
    return levels


def _collect(res: PassResult, imports: dict, results: dict, progress: ProgressSink) -> None:
    """A finished pass: its result, and the key sets and facts later levels import."""
    results[res.collection] = res
    for f, ks in res.keys.items():
        imports[("keys", res.collection, f)] = ks
    if res.facts is not None:
        imports[("facts", res.collection)] = res.facts
    progress.done(res.collection)


class _Pool:
    """Worker processes for the whole run, fed the passes and partitions of one level at a time.

    A forkserver that has imported the scanner once forks the workers: a spawned worker would
    import numpy, pymongo and the policy models itself (about a second each on an idle machine
    here, 8 s under load). The forkserver is single-threaded, so forking from it is safe
    whatever threads this process runs (progress bars, a pymongo client). Progress comes back on
    a queue handed to each worker when it starts."""

    def __init__(self, workers: int):
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["fluxa_integrity.checks.partitions"])
        self.workers = workers
        self.q = self.ctx.Queue()
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=self.ctx, initializer=_init_worker,
                                        initargs=(self.q,))
        # start the workers now: they boot while this process plans and reads the first level
        self.warm = [self.pool.submit(_ready) for _ in range(workers)]

    def run(self, splits: list[Split], progress: ProgressSink) -> list[PassResult]:
        """Whole passes and partitions of one level; partitions merged in their read order."""
        if len(splits) == 1 and len(splits[0].parts) == 1:
            return [run_pass(splits[0].parts[0], progress.advance)]
        # the unique-only pass reads the collection a second time: not counted on its bar again
        futures = {self.pool.submit(run_pass if kind == "whole" else run_partition, spec,
                                    _report if kind != "uniques" else None): (i, kind) for i, kind, spec in jobs(splits)}
        pending = set(futures)
        got: dict = {}
        left = {i: len(tasks_of(splits, i)) for i in range(len(splits))}
        merged: dict[int, PassResult] = {}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(self.q, progress)
            for f in done:
                i, kind = futures[f]
                got[(i, kind)] = f.result()  # the first failure stops the level (and the run)
                left[i] -= 1
                if not left[i]:  # merged now, while the workers go on with the others
                    merged[i] = assemble_one(splits[i], i, got)
        _drain(self.q, progress)
        return [merged[i] for i in range(len(splits))]

    def close(self) -> None:
        # no waiting for the workers to exit: the executor reaps them, the run has its results
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.q.close()


_progress_q = None


def _init_worker(q) -> None:
    global _progress_q
    _progress_q = q


def _ready() -> None:
    return None


def _report(coll: str, n: int) -> None:
    """A worker's progress, to the run's queue (module level: picklable as the progress callback)."""
    _progress_q.put((coll, n))


def _drain(q, progress: ProgressSink) -> None:
    while True:
        try:
            coll, n = q.get_nowait()
        except queue_mod.Empty:
            return
        progress.advance(coll, n)
