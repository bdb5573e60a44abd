"""The check engine's passes and partitions on a Dask cluster (``check run --dask``), the other
executor beside the run's own worker processes (``runner._Pool``), with the same interface:
``run(splits, progress)`` evaluates the splits of one dependency level and merges each
collection's partitions in read order on this machine; ``close()`` ends it.

Shape: ``local`` starts a ``LocalCluster`` of ``workers`` processes (one thread each, no
dashboard) for the run and closes it at the end; ``tcp://HOST:PORT`` connects a client to a
scheduler someone else runs (docs/scale.md) and leaves the cluster as it found it. A task is
``_remote(kind, spec, topic, names, *imports)``: the PassSpec without its imports, which travel
as futures - the key sets and facts a level imports are scattered once per level to every
worker (each runs partitions that read them), not pickled into every partition's task. A task
returns a ``PassResult`` (a whole pass) or a ``Partial``; the partials are gathered here and
merged by ``checks.partitions.merge``, so the findings are exactly those of the local executor.
Progress: a task's ``progress(collection, n)`` becomes a worker event on a topic of this run's
own (``Worker.log_event``); the client's subscription queues it and ``run`` advances the bars.
``distributed`` is imported only when a pool is made: a run without ``--dask`` does not pay
its import (about a second).

Failure behaviour: a bad ``--dask`` value, an unreachable scheduler (connect timeout
``CONNECT_TIMEOUT``), a cluster without workers or with workers lacking this package raise
FluxaError before any task runs. Once tasks run, an error raised by a task (a server error, a
damaged backup file, a backup path a worker cannot read) is re-raised here as itself. A worker
that dies is replaced (by its nanny) and its tasks rerun by Dask - the imports survive it, since
every worker holds them, and a task only reads - so the run completes with the same findings.
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
from dataclasses import replace
from functools import partial

from ..errors import FluxaError
from .partitions import Split, assemble, jobs, run_partition
from .scan import PassResult, PassSpec, run_pass
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


class DaskPool:
    """A Dask client (and, for ``local``, its cluster) for one check run."""

    def __init__(self, address: str, workers: int):
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
        """Whole passes and partitions of one level on the cluster; partitions merged in read order."""
        client = self.client
        scattered: dict[int, object] = {}  # id(import) -> its future: each import sent once per level

        def remote_args(spec: PassSpec) -> tuple:
            names, values = [], []
            for name, obj in spec.imports.items():
                if obj is not None and id(obj) not in scattered:
                    # on every worker: they all run partitions that read it, and a worker's
                    # death then loses no import (the only copy of scattered data cannot be rebuilt)
                    scattered[id(obj)] = client.scatter([obj], hash=False, broadcast=True)[0]
                names.append(name)
                values.append(scattered[id(obj)] if obj is not None else None)
            bare = replace(spec, imports={})
            if isinstance(spec.source, FileSegment) and not os.path.isabs(spec.source.path):
                # a worker's working directory is not this one (--dump-dir ./dump)
                bare = replace(bare, source=replace(spec.source, path=os.path.abspath(spec.source.path)))
            return bare, names, values

        futures: dict = {}  # future -> (split index, "whole" | "uniques" | partition number)
        done_q: queue.Queue = queue.Queue()
        tag = uuid.uuid4().hex[:8]
        try:
            for i, kind, spec in jobs(splits):
                bare, names, values = remote_args(spec)
                # the unique-only pass reads the collection a second time: not counted on its bar again
                fut = client.submit(_remote, "whole" if kind == "whole" else "partition", bare,
                                    self.topic if kind != "uniques" else None,
                                    names, *values, pure=False, key=f"fluxa-check-{spec.collection}-{kind}-{tag}")
                futures[fut] = (i, kind)
                fut.add_done_callback(done_q.put)
            left = len(futures)
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
                    self._check(fut, futures[fut], splits)
                    left -= 1
                else:
                    self._watch()
            self._drain(progress)
            got = dict(zip(futures.values(), client.gather(list(futures))))
        except BaseException as exc:
            try:
                client.cancel(list(futures))
            except Exception:  # noqa: BLE001 - a lost scheduler has nothing left to cancel
                pass
            if isinstance(exc, (FluxaError, KeyboardInterrupt)) or exc is self._task_error:
                raise
            # scattering, submitting or gathering failed: the cluster's fault, not a task's
            self._lost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", exc)
        finally:
            scattered.clear()
        return assemble(splits, got)

    def _check(self, fut, job: tuple, splits: list[Split]) -> None:
        """A finished task: fine, or the run stops with its error (or the cluster's)."""
        if fut.status == "finished":
            return
        i, kind = job
        what = f"{'the pass' if kind == 'whole' else 'the unique-key pass' if kind == 'uniques' else f'partition {kind}'}" \
               f" of {splits[i].spec.collection}"
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


def _remote(kind: str, spec: PassSpec, topic: str, names: list, *imports):
    """A task: one whole pass or one partition, with its imports (resolved from futures)."""
    from distributed import get_worker

    worker = get_worker()
    spec = replace(spec, imports=dict(zip([tuple(n) for n in names], imports)))
    if isinstance(spec.source, FileSegment) and not os.path.exists(spec.source.path):
        raise FluxaError(f"Dask worker {worker.address} cannot read {spec.source.path}: the backup's files are not "
                         "at that path on the worker",
                         "mount the backup repository at the same path on every worker (a shared filesystem), "
                         "or check the backup with local workers (--workers N): docs/scale.md")
    report = partial(_progress, worker, topic) if topic is not None else None
    return (run_pass if kind == "whole" else run_partition)(spec, report)


def _progress(worker, topic: str, collection: str, n: int) -> None:
    worker.log_event(topic, {"c": collection, "n": n})
