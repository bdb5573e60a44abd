"""The check engine's passes and partitions on a Dask cluster (``check run --dask``), the other
executor beside the run's own worker processes (``runner._Pool``), with the same interface:
``run(splits, progress)`` evaluates the splits of one dependency level; ``close()`` ends it.

Shape: ``local`` starts a ``LocalCluster`` of ``workers`` processes (one thread each, no
dashboard) for the run and closes it at the end; ``tcp://HOST:PORT`` connects a client to a
scheduler someone else runs (docs/scale.md) and leaves the cluster as it found it. Every piece
of a split is a partition task (``_remote_part``: ``partitions.run_partition``, then
``shuffle.take_out``), and what a level exports never comes back here: its key sets, facts and
child counts are cut into ``buckets`` by key hash and each bucket put together on one worker
(``OnCluster``: the futures are all the client keeps), and the rules that read them - references,
parent rules, a collection's date order, counter rules - are decided by bucket tasks on the
cluster (checks/shuffle.py). Only the partials' small rest (findings' accumulators, watermarks)
and the joins' violations are gathered and merged here by ``partitions.merge``, in read order,
so the findings are exactly those of the local executor. Imports that are not held by bucket
(a sync rule's whole key set) are scattered to every worker once per level.
Progress: a task's ``progress(collection, n)`` becomes a worker event on a topic of this run's
own (``Worker.log_event``); the client's subscription queues it and ``run`` advances the bars.
``distributed`` is imported only when a pool is made: a run without ``--dask`` does not pay
its import (about a second).

Failure behaviour: a bad ``--dask`` value, an unreachable scheduler (connect timeout
``CONNECT_TIMEOUT``), a cluster without workers or with workers lacking this package raise
FluxaError before any task runs. Once tasks run, an error raised by a task (a server error, a
damaged backup file, a backup path a worker cannot read) is re-raised here as itself. A worker
that dies is replaced (by its nanny) and its tasks rerun by Dask: a bucket it held is computed
again from its lineage (every task only reads), so the run completes with the same findings.
A task that killed ``distributed.scheduler.allowed-failures`` workers, a lost scheduler, inputs
lost with every worker, or ``WORKER_WAIT`` seconds without any worker raise ``ClusterLost``.
Either way the remaining tasks are cancelled, nothing is merged, and the run is not complete
(the CLI records it as failed).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from functools import partial

from ..errors import FluxaError
from ..policy.rules import ReferenceRule, UniqueRule
from .partitions import Partial, Split, merge, run_partition
from .scan import PassResult, PassSpec
from .shuffle import (bucketed_fields, counter_join, join, joined_rules, order_join, order_rules, parent_join, take_out,
                      union, union_counts, union_facts, unique_join)
from .sources import FileSegment

CONNECT_TIMEOUT = 5  # seconds to reach a scheduler
WORKER_WAIT = 60  # seconds a cluster may have no worker (before the first task, or mid-run)
_ADDRESS = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
_HINT = ("give --dask local (a cluster of --workers processes on this machine) or the address of a running "
         "scheduler, e.g. --dask tcp://scheduler:8786 (docs/scale.md)")


class ClusterLost(FluxaError):
    """The Dask cluster failed under a running check (scheduler lost, workers killed or gone)."""


def parse_address(value: str) -> str:
    """``local`` or ``tcp://HOST:PORT``, checked; FluxaError otherwise."""
    v = (value or "").strip()
    if v == "local":
        return v
    m = _ADDRESS.match(v)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise FluxaError(f"--dask {value!r} is neither 'local' nor a scheduler address tcp://HOST:PORT", _HINT)
    return v


def _distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise FluxaError(f"--dask needs dask.distributed, which cannot be imported here: {exc}",
                         "install it: pip install 'dask[distributed]'") from exc
    return distributed


@dataclass
class OnCluster:
    """What a pass exports (a key set, facts, children counted per parent) held on the cluster:
    future ``b`` holds the keys whose hash mod ``len(futures)`` is ``b``. Later levels and the
    counter rules join against it there; it is never gathered."""
    futures: list
    on_cluster = True


class DaskPool:
    """A Dask client (and, for ``local``, its cluster) for one check run."""

    def __init__(self, address: str, workers: int, buckets: int | None = None):
        self.address = parse_address(address)
        distributed = _distributed()
        self.cluster = None
        self._quiet = _Quiet()
        try:
            if self.address == "local":
                with warnings.catch_warnings():
                    # no dashboard, but the scheduler's small HTTP server (health, metrics) takes
                    # another port when 8787 is in use, and says so: nothing for the user to do
                    warnings.filterwarnings("ignore", message="Port .* is already in use")
                    self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                            dashboard_address=None, silence_logs=logging.ERROR)
                self.client = distributed.Client(self.cluster, set_as_default=False)
                self.where = f"a local Dask cluster of {workers} processes"
            else:
                self.client = self._connect(distributed)
                self.where = f"the Dask cluster at {self.address}"
        except BaseException:
            self._quiet.restore()
            if self.cluster is not None:
                self.cluster.close()
            raise
        slots = sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values())
        # partitions per collection: the processes asked for, or every thread of a cluster
        self.workers = workers if self.address == "local" else max(workers, slots)
        # key-set buckets: one per worker, so a key set is spread over all of them
        self.buckets = buckets or max(self.workers, slots)
        self.topic = f"fluxa-check-progress-{uuid.uuid4().hex}"
        self.events: queue.Queue = queue.Queue()
        self.client.subscribe_topic(self.topic, self.events.put)
        self._no_workers_since: float | None = None
        self._task_error: BaseException | None = None

    def _connect(self, distributed):
        try:
            client = distributed.Client(self.address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise FluxaError(f"cannot reach the Dask scheduler at {self.address} (no answer in {CONNECT_TIMEOUT} s: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                             "start it (`dask scheduler`) or fix the address; --dask local runs a cluster on this "
                             "machine instead (docs/scale.md)") from exc
        try:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (TimeoutError, OSError) as exc:
                raise FluxaError(f"the Dask scheduler at {self.address} has had no worker for {WORKER_WAIT} s",
                                 "start workers (`dask worker " + self.address + "`) and run again") from exc
            versions = client.run(_package_version, on_error="return")
            lacking = sorted(w for w, v in versions.items() if not isinstance(v, str))
            if lacking:
                raise FluxaError(f"Dask workers {', '.join(lacking)} of {self.address} cannot import fluxa_integrity",
                                 "install this package (same version) in the workers' environment: docs/scale.md")
        except BaseException:
            client.close()
            raise
        return client

    # -- one level ----------------------------------------------------------------------------
    def run(self, splits: list[Split], progress) -> list[PassResult]:
        """The partitions of one level on the cluster. What later levels read of them (key sets,
        facts, child counts) stays there, cut by key hash, and what is decided against it
        (references, parent rules, a collection's date order, unique keys) is joined there
        (checks/shuffle.py); the rest comes back and is merged here in read order."""
        def level():
            plans = [self._submit(sp) for sp in splits]
            self._wait(progress)
            return [self._assemble(sp, plan) for sp, plan in zip(splits, plans)]

        return self._guarded(level)

    def counter_violations(self, rule, facts, counts) -> list[tuple]:
        """A counter rule over facts and child counts held on the cluster, bucket by bucket
        (collection_rules.counter_violations' rows, in id-hash order as one process gives them)."""
        def buckets():
            futs = [self._task(f"bucket {b} of counter rule {rule.id}", _counter_join, rule, held,
                               counts.futures[b] if counts else None) for b, held in enumerate(facts.futures)]
            self._wait(None)
            return self.client.gather(futs)

        return sorted((row for rows in self._guarded(buckets) for row in rows), key=lambda r: r[0])

    def _guarded(self, work):
        """``work()``, its tasks' failures turned into the run's: a task's own error as itself,
        the cluster's as ClusterLost; the remaining tasks cancelled either way."""
        self._scattered: dict[int, object] = {}  # id(import) -> its future: each import sent once per level
        self._waiting: dict = {}  # future -> what it is, for errors
        try:
            return work()
        except BaseException as exc:
            try:
                self.client.cancel(list(self._waiting))
            except Exception:  # noqa: BLE001 - a lost scheduler has nothing left to cancel
                pass
            if isinstance(exc, (FluxaError, KeyboardInterrupt)) or exc is self._task_error:
                raise
            # scattering, submitting or gathering failed: the cluster's fault, not a task's
            self._lost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", exc)
        finally:
            self._scattered, self._waiting = {}, {}

    def _task(self, what: str | None, fn, *args):
        """A task of this run; ``what`` names it in errors (None: a piece picked out of another)."""
        fut = self.client.submit(fn, *args, pure=False, key=f"fluxa-{fn.__name__.strip('_')}-{uuid.uuid4().hex}")
        if what is not None:
            self._waiting[fut] = what
        return fut

    def _remote_args(self, spec: PassSpec) -> tuple:
        """The spec as a task takes it: imports held on the cluster named in ``shuffled``, the
        others scattered to every worker (they all run partitions that read them, and a worker's
        death then loses none: the only copy of scattered data cannot be rebuilt)."""
        names, values, held = [], [], set()
        for name, obj in spec.imports.items():
            if isinstance(obj, OnCluster):
                held.add(name)  # joined on the cluster, never sent whole
                continue
            if obj is not None and id(obj) not in self._scattered:
                self._scattered[id(obj)] = self.client.scatter([obj], hash=False, broadcast=True)[0]
            names.append(name)
            values.append(self._scattered[id(obj)] if obj is not None else None)
        bare = replace(spec, imports={}, shuffled=frozenset(held), join_uniques=True)
        if isinstance(spec.source, FileSegment) and not os.path.isabs(spec.source.path):
            # a worker's working directory is not this one (--dump-dir ./dump)
            bare = replace(bare, source=replace(spec.source, path=os.path.abspath(spec.source.path)))
        return bare, names, values

    def _submit(self, sp: Split) -> dict:
        """Every task of one split: its partitions, the buckets of what it exports, its joins."""
        coll, B, task = sp.spec.collection, self.buckets, self._task
        outs, bare = [], None
        for k, part in enumerate(sp.parts):
            bare, names, values = self._remote_args(part)
            outs.append(task(None, _remote_part, bare, self.topic, B, names, *values))

        def pieces(*path):  # one piece of every partition's output
            return [task(None, _pick, o, *path) for o in outs]

        one = len(outs) == 1
        plan: dict = {"partials": [task(f"the pass over {coll}" if one else f"partition {k} of {coll}", _pick, o,
                                        "partial") for k, o in enumerate(outs)], "joins": []}
        fields = plan["fields"] = bucketed_fields(bare)
        plan["keys"] = {f: [task(f"bucket {b} of {coll}.{f}'s key set", _union, *pieces("keys", f, b))
                            for b in range(B)] for f in fields}
        if bare.export_facts:
            plan["facts"] = [task(f"bucket {b} of {coll}'s facts", _union_facts, *pieces("facts", b)) for b in range(B)]
        plan["counts"] = {f: [task(f"bucket {b} of the {coll} counted per {f}", _union_counts, *pieces("counts", f, b))
                              for b in range(B)] for f in bare.count_children}
        for r in joined_rules(bare, fields):
            if isinstance(r, UniqueRule):  # nothing held: the keys meet each other
                plan["joins"].append({r.id: [task(f"bucket {b} of rule {r.id}'s join", _unique_join, r, coll,
                                                  *pieces("refs", r.id, b)) for b in range(B)]})
                continue
            if isinstance(r, ReferenceRule):
                held = plan["keys"][r.to_field] if r.to == coll else sp.spec.imports[("keys", r.to, r.to_field)].futures
                fn = _join
            else:
                held, fn = sp.spec.imports[("facts", r.parent_collection)].futures, _parent_join
            plan["joins"].append({r.id: [task(f"bucket {b} of rule {r.id}'s join", fn, r, coll, held[b],
                                              *pieces("refs", r.id, b)) for b in range(B)]})
        rids = order_rules(bare)
        for b in range(B if rids else 0):
            kids = [p for rid in rids for p in pieces("children", rid, b)]
            plan["joins"].append({"": [task(f"bucket {b} of {coll}'s date-order join", _order_join, coll, rids,
                                            len(outs), *pieces("parents", b), *kids)]})
        return plan

    def _assemble(self, sp: Split, plan: dict) -> PassResult:
        """The split's PassResult: partials merged with what the joins found; what the cluster
        holds handed out as OnCluster handles."""
        gather = self.client.gather
        parts = gather(plan["partials"])
        joined: dict = {}
        for job in plan["joins"]:
            for rid, futs in job.items():
                for got in gather(futs):
                    # a reference or parent join answers per partition; the date-order join per rule
                    for r, per_part in (got.items() if rid == "" else [(rid, got)]):
                        into = joined.setdefault(r, [[] for _ in parts])
                        for k, rows in enumerate(per_part):
                            into[k].extend(rows)
        held = tuple(plan["fields"]) + tuple(plan["counts"])
        res = merge(sp, parts, None, held, joined)  # unique rules too are joined (no pass of their own)
        for f in plan["fields"]:
            if f in sp.spec.export_keys:
                res.keys[f] = OnCluster(plan["keys"][f])
        if "facts" in plan:
            res.facts = OnCluster(plan["facts"])
        for f, futs in plan["counts"].items():
            res.child_counts[f] = OnCluster(futs)
        return res

    def _wait(self, progress) -> None:
        """Until every task of this step has finished, advancing the bars as workers report."""
        waiting = self._waiting
        done_q: queue.Queue = queue.Queue()
        for fut in waiting:
            fut.add_done_callback(done_q.put)
        left = len(waiting)
        while left:
            try:
                fut = done_q.get(timeout=0.2)
            except queue.Empty:
                fut = None
            self._drain(progress)
            if fut is not None and fut.status in ("lost", "pending"):
                # it had finished on a worker that died since: Dask computes it again, and
                # the callback of that next finish is the one to wait for
                fut.add_done_callback(done_q.put)
            elif fut is not None:
                self._check(fut, waiting[fut])
                left -= 1
            else:
                self._watch()
        self._drain(progress)

    def _check(self, fut, what: str) -> None:
        """A finished task: fine, or the run stops with its error (or the cluster's)."""
        if fut.status == "finished":
            return
        if fut.status == "error":
            exc = fut.exception()
            from distributed.scheduler import KilledWorker

            if isinstance(exc, KilledWorker):
                raise ClusterLost(f"Dask workers of {self.where} died running {what} ({exc})",
                                  "look at the workers' logs (memory limit? killed?); the run is not complete - "
                                  "run it again, with more memory per worker or more partitions") from exc
            self._task_error = exc  # a task's own error (a server error, a damaged file): raised as itself
            raise exc
        try:
            fut.result(timeout=CONNECT_TIMEOUT)
            reason = fut.status
        except Exception as exc:  # noqa: BLE001 - the cancellation's reason, whatever its type
            reason = " ".join(str(exc).split()) or type(exc).__name__
        self._lost(f"{what} was cancelled ({reason})")

    def _watch(self) -> None:
        """Between task completions: the scheduler still there, and some worker to run the tasks."""
        if self.client.status != "running":
            self._lost(f"the connection to the scheduler was lost (client {self.client.status})")
        if self.cluster is None:
            workers = self.client.scheduler_info()["workers"]
            if workers:
                self._no_workers_since = None
            elif self._no_workers_since is None:
                self._no_workers_since = time.monotonic()
            elif time.monotonic() - self._no_workers_since > WORKER_WAIT:
                raise ClusterLost(f"{self.where} has had no worker for {WORKER_WAIT} s in the middle of the run",
                                  "start workers and run the check again; the run is not complete")

    def _lost(self, why: str, cause: BaseException | None = None):
        raise ClusterLost(f"{self.where} failed in the middle of the run: {why}",
                          "the run is not complete; check the scheduler (and its logs) and run the check again") \
            from cause

    def _drain(self, progress) -> None:
        while True:
            try:
                _when, msg = self.events.get_nowait()
            except queue.Empty:
                return
            if progress is not None:
                progress.advance(msg["c"], msg["n"])

    def close(self) -> None:
        try:
            try:
                self.client.unsubscribe_topic(self.topic)
            except Exception:  # noqa: BLE001 - a lost scheduler: nothing to unsubscribe from
                pass
            self.client.close(timeout=CONNECT_TIMEOUT)
            if self.cluster is not None:
                self.cluster.close(timeout=CONNECT_TIMEOUT)
        except Exception:  # noqa: BLE001 - closing a broken cluster: the run's own error is what matters
            pass
        finally:
            self._quiet.restore()


class _Quiet:
    """While a pool is open, Dask's own loggers say only what is critical: a lost scheduler makes
    the client log every reconnect attempt with a traceback, and the run reports it once, as a
    ClusterLost, with what to do."""

    NAMES = ("distributed", "distributed.client", "distributed.utils", "distributed.core")

    def __init__(self):
        self.saved = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.CRITICAL)

    def restore(self) -> None:
        for n, level in self.saved.items():
            logging.getLogger(n).setLevel(level)


# -- on the workers ---------------------------------------------------------------------------
def _package_version() -> str:
    from importlib.metadata import version

    return version("fluxa-integrity")


def _remote(spec: PassSpec, topic: str, names: list, *imports) -> Partial:
    """One partition, with its imports (resolved from futures)."""
    from distributed import get_worker

    worker = get_worker()
    spec = replace(spec, imports=dict(zip([tuple(n) for n in names], imports)))
    if isinstance(spec.source, FileSegment) and not os.path.exists(spec.source.path):
        raise FluxaError(f"Dask worker {worker.address} cannot read {spec.source.path}: the backup's files are not "
                         "at that path on the worker",
                         "mount the backup repository at the same path on every worker (a shared filesystem), "
                         "or check the backup with local workers (--workers N): docs/scale.md")
    return run_partition(spec, partial(_progress, worker, topic))


def _remote_part(spec: PassSpec, topic: str, buckets: int, names: list, *imports) -> dict:
    """A partition whose key sets and references are cut into buckets for the join: what the
    client merges (``partial``) and the pieces the bucket tasks pick."""
    part = _remote(spec, topic, names, *imports)
    return {"partial": part, **take_out(part, spec, buckets)}


def _pick(out: dict, *path):
    """One piece of a partition's output (a task, so that only that piece moves)."""
    for step in path:
        out = out[step]
    return out


def _order_join(collection: str, rule_ids: list, n: int, *pieces) -> dict:
    """One bucket of the date-order join: ``n`` partitions' parent rows, then per rule their child rows."""
    return order_join(collection, list(pieces[:n]),
                      {rid: list(pieces[n + k * n:n + (k + 1) * n]) for k, rid in enumerate(rule_ids)})


def _union(*pieces):
    return union(pieces)


def _union_facts(*pieces):
    return union_facts([p for p in pieces if p is not None])


def _union_counts(*pieces):
    return union_counts(pieces)


def _join(rule, collection: str, keys, *pieces):
    return join(rule, collection, keys, pieces)


def _parent_join(rule, collection: str, facts, *pieces):
    return parent_join(rule, collection, facts, pieces)


def _unique_join(rule, collection: str, *pieces):
    return unique_join(rule, collection, pieces)


def _counter_join(rule, facts, counts):
    return counter_join(rule, facts, counts if counts is not None else union_counts([]))


def _progress(worker, topic: str, collection: str, n: int) -> None:
    worker.log_event(topic, {"c": collection, "n": n})
