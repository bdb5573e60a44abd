"""The check engine on Dask (issue 13): the passes and partitions of a run on a Dask cluster find
exactly what the run's own worker processes find - on a server and on a backup's files, at two
dataset sizes, against the fault injector's ground truth - with progress per batch; an
unreachable scheduler, a bad --dask value and a scheduler lost mid-run are clear errors, and a
run that lost its cluster is recorded as failed, never complete."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import distributed  # a dependency of the package: missing, this file must fail, not skip
import pytest
from typer.testing import CliRunner

from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.checks.dask_pool import ClusterLost, parse_address
from fluxa_integrity.checks.runner import ProgressSink, RunOptions, run_checks
from fluxa_integrity.checks.history import list_runs
from fluxa_integrity.checks.sources import baselines_before, open_backup
from fluxa_integrity.cli.common import json_default
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.fluxa.expectations import score
from fluxa_integrity.fluxa.faults import KINDS, inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.mongo.devserver import free_port
from fluxa_integrity.policy import default_policy
from fluxa_integrity.store import open_store
from waiting import StderrWatch


def full(report, samples: bool = True) -> list:
    return sorted((f.rule_id, f.variant, f.count, f.affected_users, str(f.first_doc_time), str(f.last_doc_time),
                   sorted(map(str, f.ids)), repr(f.samples) if samples else None) for f in report.findings)


class Counted(ProgressSink):
    """Documents reported per collection, and which collections finished."""

    def __init__(self):
        self.docs, self.finished = Counter(), set()

    def advance(self, collection: str, n: int) -> None:
        self.docs[collection] += n

    def done(self, collection: str) -> None:
        self.finished.add(collection)


@pytest.fixture(scope="module")
def cluster():
    """A Dask cluster of two worker processes that the tests reach by address, as a deployment's
    (its scheduler runs in this process, so a test can see what the workers reported)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use")  # its HTTP server's port
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                           silence_logs=logging.ERROR)
    with cluster:
        yield cluster


def reported_by_workers(cluster) -> Counter:
    """Documents the cluster's workers reported scanning, per collection, over every run so far."""
    got = Counter()
    for topic, events in cluster.scheduler.get_events().items():  # read between runs: nothing is writing
        if topic.startswith("fluxa-check-progress-"):
            for _when, msg in events:
                assert msg["worker"] in cluster.scheduler.workers  # a worker of this cluster sent it
                got[msg["c"]] += msg["n"]
    return got


@pytest.mark.parametrize("users,per_kind", [(30, 1), (80, 2)])
def test_dask_finds_exactly_what_local_workers_find(mongo_uri, db, tmp_path, cluster, users, per_kind):
    """On a server: one process, three local workers and the Dask cluster (partitions as auto
    decides: on FerretDB whole collections in parallel). On the backup's files: one process and
    the cluster with every collection cut in three (tests/test_partitions.py holds three local
    workers to one process there), identical samples included."""
    policy = default_policy()
    generate(db, GenerateOptions(users=users, seed=users))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "all", per_kind, seed=users)
    store = open_store()
    files = open_backup(store, run_backup(mongo_uri, db.name, store,
                                          BackupOptions(repo=tmp_path / "repo", oplog_probe="clock")).id)
    on_server = dict(uri=mongo_uri)
    on_files = dict(uri=None, files=files, baselines={})
    cut = dict(partitions="on", min_partition_docs=20)

    def run(where: dict, progress=None, **kw):
        return run_checks(where["uri"], db.name, policy, RunOptions(keep_ids=True, **kw), progress=progress,
                          files=where.get("files"), baselines=where.get("baselines"))

    seen = {"server": Counted(), "files": Counted()}
    address = cluster.scheduler_address
    before = reported_by_workers(cluster)
    server = [run(on_server), run(on_server, workers=3), run(on_server, seen["server"], workers=3, dask=address)]
    backup = [run(on_files, **cut), run(on_files, seen["files"], workers=3, dask=address, **cut)]
    # the cluster's workers did the reading (both runs), not this process
    assert reported_by_workers(cluster) - before == Counter(server[2].docs) + Counter(backup[1].docs)
    # a server's ranges come in _id order, not natural order: there the samples may be other
    # members of the same finding; a file is read in its own order whatever the executor
    assert server[0].findings and full(server[1], False) == full(server[0], False) == full(server[2], False)
    assert backup[0].findings and full(backup[1]) == full(backup[0])
    assert server[0].docs == server[1].docs == server[2].docs == backup[1].docs
    # ground truth: every injected fault found (sync drift needs the secondary system, which a
    # backup does not hold)
    for source, report in (("server", server[2]), ("files", backup[1])):
        scores = score(manifest, report.findings)
        assert set(scores) == set(KINDS)
        for kind, row in scores.items():
            if source == "server" or kind != "sync-drift":
                assert row["recall"] == 1.0, f"{source} {kind}: missed {row['missed']}"
        # progress came back from the workers batch by batch, every document once
        assert {c: seen[source].docs[c] for c in report.docs} == report.docs
        assert set(report.docs) <= seen[source].finished


def test_a_worker_killed_mid_run_is_replaced_and_the_findings_are_the_same(mongo_uri, db, tmp_path, cluster):
    """A worker process is SIGKILLed on the first progress report (a level under way, later levels
    still to run): Dask's nanny starts another, the lost tasks run again, and the imports survive
    because every worker holds them - the run completes with the findings of one process."""
    generate(db, GenerateOptions(users=40, seed=7))
    inject(db, Manifest(tmp_path / "m.json", db.name), "all", 1, seed=7)
    with distributed.Client(cluster, set_as_default=False) as c:
        pids = c.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    class Killer(ProgressSink):
        def advance(self, collection, n):
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(collection)

    opts = dict(keep_ids=True, partitions="on", min_partition_docs=20)
    one = run_checks(mongo_uri, db.name, default_policy(), RunOptions(**opts))
    on_dask = run_checks(mongo_uri, db.name, default_policy(),
                         RunOptions(workers=3, dask=cluster.scheduler_address, **opts), progress=Killer())
    assert killed and one.findings
    assert full(on_dask, False) == full(one, False) and on_dask.docs == one.docs
    with distributed.Client(cluster, set_as_default=False) as c:
        assert victim not in c.run(os.getpid).values()  # it did die, and was replaced


def test_key_sets_stay_on_the_cluster_cut_by_key_hash(mongo_uri, db, tmp_path, cluster, monkeypatch):
    """The key sets later levels look up are never gathered here: each is held on the cluster in
    --key-buckets pieces by hash (together exactly the local run's key set), the references are
    joined there, and the injected dangling references are found with the local run's evidence."""
    import fluxa_integrity.checks.runner as runner_mod
    from fluxa_integrity.checks.dask_pool import OnCluster

    generate(db, GenerateOptions(users=30, seed=11, secondary=False))
    manifest = Manifest(tmp_path / "m.json", db.name)
    inject(db, manifest, "orphan-messages", 3, seed=11)
    inject(db, manifest, "orphan-conversations", 2, seed=11)
    store = open_store()
    files = open_backup(store, run_backup(mongo_uri, db.name, store,
                                          BackupOptions(repo=tmp_path / "repo", oplog_probe="clock")).id)
    seen = [{}, {}]  # per run: import key -> its keys (local) or its buckets (read from the cluster)
    real_collect = runner_mod._collect

    def collect(res, imports, results, progress):
        real_collect(res, imports, results, progress)
        run = seen[1] if any(isinstance(v, OnCluster) for v in imports.values()) else seen[0]
        for k, v in imports.items():
            if k[0] == "keys" and k not in run:  # while the run's client is open: its futures live
                run[k] = [ks._chunks[0].tolist() if ks._chunks else [] for ks in v.futures[0].client.gather(v.futures)] \
                    if isinstance(v, OnCluster) else (v,)

    monkeypatch.setattr(runner_mod, "_collect", collect)
    opts = dict(keep_ids=True, partitions="on", min_partition_docs=20)
    local = run_checks(None, db.name, default_policy(), RunOptions(**opts), files=files, baselines={})
    on_dask = run_checks(None, db.name, default_policy(),
                         RunOptions(workers=3, dask=cluster.scheduler_address, key_buckets=4, **opts),
                         files=files, baselines={})
    assert full(on_dask) == full(local)
    dangling = {f.rule_id: f.count for f in on_dask.findings if f.variant == "dangling"}
    assert dangling["messages.conversationId.ref"] >= 3 and dangling["conversations.userId.ref"] >= 2
    whole, held = seen
    assert ("keys", "conversations", "_id") in whole and set(held) == set(whole)
    for k, buckets in held.items():
        assert len(buckets) == 4, k  # a list of bucket contents: it was a OnCluster, not a key set
        for b, hashes in enumerate(buckets):
            assert all(h % 4 == b for h in hashes), (k, b)
        ks = whole[k][0]
        assert sorted(h for hs in buckets for h in hs) == (ks._chunks[0].tolist() if ks._chunks else [])
    for f in score(manifest, on_dask.findings).values():
        assert f["recall"] == 1.0, f


def test_the_cli_checks_a_backup_on_a_local_dask_cluster(cli, mongo_uri, db, tmp_path):
    generate(db, GenerateOptions(users=40, seed=4, secondary=False))
    inject(db, Manifest(tmp_path / "m.json", db.name), "orphan-messages", 3, seed=4)
    store = open_store()  # the state store the command line uses ($FLUXA_HOME of this test)
    backup = run_backup(mongo_uri, db.name, store, BackupOptions(repo=tmp_path / "repo", oplog_probe="clock"))
    files = open_backup(store, backup.id)
    local = run_checks(None, db.name, default_policy(), RunOptions(), files=files,
                       baselines=baselines_before(store, db.name, files.started_at))
    on_dask = cli("check", "run", "--backup", backup.id, "--dask", "local", "--workers", "2", "--json")
    assert on_dask.code == 1, on_dask.stderr
    got = sorted((f["rule_id"], f["variant"], f["count"], f["affected_users"], json.dumps(f["samples"], sort_keys=True))
                 for f in on_dask.json()["findings"])
    want = sorted((f["rule_id"], f["variant"], f["count"], f["affected_users"], json.dumps(f["samples"], sort_keys=True))
                  for f in json.loads(json.dumps([f.as_dict() for f in local.findings], default=json_default)))
    assert any(f[:3] == ("messages.conversationId.ref", "dangling", 3) for f in got), got
    assert got == want and on_dask.json()["docs"] == local.docs
    assert [(r.database, r.status) for r in list_runs(store)] == [(local.database, "complete")]


def test_an_unreachable_scheduler_is_a_quick_clear_error(cli, mongo_uri, db):
    generate(db, GenerateOptions(users=5, seed=1, secondary=False))
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    res = cli("check", "run", "--dask", address, "--uri", mongo_uri, "--db", db.name, "--json")
    assert res.code == 2
    err = res.json()
    assert f"cannot reach the Dask scheduler at {address}" in err["error"] and "dask scheduler" in err["hint"]
    assert time.monotonic() - began < 60  # a 5 s connect timeout, not dask's 30 s default and its retries
    assert [r.status for r in list_runs(open_store())] == []  # no run happened


@pytest.mark.parametrize("value", ["lokal", "tcp://host", "tcp://host:99999", "http://host:8786", ""])
def test_a_bad_dask_value_is_refused(value):
    with pytest.raises(FluxaError) as exc:
        parse_address(value)
    assert repr(value) in exc.value.message and "tcp://" in exc.value.hint


def test_the_cli_refuses_a_bad_dask_value_before_connecting(cli):
    res = cli("check", "run", "--dask", "tcp://nowhere", "--uri", "mongodb://127.0.0.1:1/", "--db", "x", "--json")
    assert res.code == 2 and "neither 'local' nor a scheduler address" in res.json()["error"]


def test_key_buckets_without_dask_are_refused_before_connecting(cli):
    res = cli("check", "run", "--key-buckets", "4", "--uri", "mongodb://127.0.0.1:1/", "--db", "x", "--json")
    assert res.code == 2 and "key buckets are for a Dask run" in res.json()["error"], res.stderr
    assert "--dask local" in res.json()["hint"]


def test_an_error_keeps_its_hint_across_processes():
    err = pickle.loads(pickle.dumps(ClusterLost("lost it", "run again")))
    assert type(err) is ClusterLost and err.message == "lost it" and err.hint == "run again"


def test_a_scheduler_lost_mid_run_fails_the_run_and_records_it_failed(mongo_uri, db, tmp_path, monkeypatch):
    """The scheduler is killed on the first progress report from a worker: a level is under way and
    later levels need the cluster, so the run cannot complete - deterministically, no sleeps."""
    from fluxa_integrity.cli import check_cmd
    from fluxa_integrity.cli.main import cli

    generate(db, GenerateOptions(users=30, seed=6, secondary=False))
    bindir = Path(sys.executable).parent
    sched = subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                              "--no-dashboard"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    worker = None
    try:
        address = StderrWatch(sched).wait_for(r"Scheduler at:\s+(tcp://\S+)").group(1)
        worker = subprocess.Popen([str(bindir / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard"],
                                  stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        killed = []

        def advance(self, collection, n):
            if not killed:
                sched.kill()
                sched.wait()
                killed.append(collection)

        monkeypatch.setattr(check_cmd._Bars, "advance", advance)
        began = time.monotonic()
        res = CliRunner().invoke(cli, ["check", "run", "--dask", address, "--uri", mongo_uri, "--db", db.name,
                                             "--json"])
        assert killed, res.output
        assert isinstance(res.exception, ClusterLost), res.output
        assert f"the Dask cluster at {address} failed in the middle of the run" in res.exception.message
        assert time.monotonic() - began < 60
        runs = list_runs(open_store())
        assert [(r.database, r.status) for r in runs] == [(db.name, "failed")]
        assert runs[0].error == res.exception.message
    finally:
        for p in (sched, worker):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
