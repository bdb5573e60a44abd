"""Partitions on backup files: the full default check suite over a mongodump directory with 1
and with 2 worker processes (issue 13: goal 1 -> 2 processes >= 1.8x, where no server shares the
cores), and the findings of both compared; beside them, in the same run, the machine's own
speed-up for the same split of plain decoding (``machine_speedup``), the physical limit here.

    .venv/bin/python benchmarks/bench_partitions.py --users 2100 --dir /tmp/bench-dump     # ~100k messages
    .venv/bin/python benchmarks/bench_partitions.py --users 21000 --dir /tmp/bench-dump-1m  # ~1M messages

The dump is written straight from the dataset generator's documents (no server: mongodump's
layout, zstd like our backups, ``--compression none|gzip|zstd``) and reused when the directory
already holds one for the same ``--users``. Each measurement runs in a fresh subprocess, so its
peak RSS is its own: the main process's, and the sum over it and its workers (sampled), with the
CPU seconds of all of them. Prints one JSON line: seconds,
docs/s, speed-up, peak RSS, the findings' agreement, and the machine's load average and cores,
because on a shared machine the other processes take their share of the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import bson

COMPRESS = {"zstd": ".zst", "gzip": ".gz", "none": ""}


def write_dump(out: Path, users: int, seed: int, compression: str) -> dict:
    """mongodump's layout under ``out/bench/``: the generator's collections, no server involved."""
    from fluxa_integrity.backup.files import HashedWriter
    from fluxa_integrity.backup.metadata import dumps_canonical
    from fluxa_integrity.fluxa import generator as g

    opts = g.GenerateOptions(users=users, seed=seed)
    convs, msgs = g.plan_sizes(opts)
    builder = g._Builder(opts)
    d = out / "bench"
    d.mkdir(parents=True, exist_ok=True)
    writers, counts = {}, {}
    for b, first in enumerate(range(0, users, g.BLOCK_USERS)):
        for name, docs in builder.block(b, min(g.BLOCK_USERS, users - first), convs, msgs).items():
            if name not in writers:
                writers[name] = HashedWriter(d / f"{name}.bson{COMPRESS[compression]}", compression, documents=True)
                counts[name] = 0
            writers[name].write(b"".join(bson.encode(doc) for doc in docs))
            counts[name] += len(docs)
    for name, w in writers.items():
        w.close()
        indexes = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}] + [
            {"v": 2, "key": dict(ix.document["key"]), "name": ix.document["name"]} for ix in g.INDEXES.get(name, [])]
        (d / f"{name}.metadata.json").write_text(dumps_canonical(
            {"options": {}, "indexes": indexes, "collectionName": name, "type": "collection"}))
    (out / "bench.json").write_text(json.dumps({"users": users, "seed": seed, "compression": compression, "seekable": True,
                                                "counts": counts}))
    return counts


class _Tree:
    """CPU seconds and peak RSS of this process and every descendant (the workers are the
    forkserver's children, which getrusage(RUSAGE_CHILDREN) never sees), sampled every 0.2 s."""

    def __init__(self):
        import threading

        import psutil

        self.me, self.cpu, self.peak, self.stop = psutil.Process(), {}, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        total = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t, mem = p.cpu_times(), p.memory_info().rss
            except Exception:  # noqa: BLE001 - a worker that just exited
                continue
            self.cpu[p.pid] = t.user + t.system
            total += mem
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def finish(self) -> tuple[float, float]:
        self.stop.set()
        self.thread.join()
        self._sample()
        return round(sum(self.cpu.values()), 2), round(self.peak / 2**20)


def one(directory: str, workers: int, dask: bool = False) -> dict:
    from fluxa_integrity.checks.runner import RunOptions, run_checks
    from fluxa_integrity.checks.sources import BackupFiles
    from fluxa_integrity.policy import default_policy

    files = BackupFiles.of_dump(Path(directory), "bench")
    tree = _Tree()
    t0 = time.perf_counter()
    report = run_checks(None, "bench", default_policy(),
                        RunOptions(workers=workers, dask="local" if dask else None), files=files)
    secs = time.perf_counter() - t0
    cpu, tree_rss = tree.finish()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"workers": workers, "dask": dask, "docs": report.total_docs, "seconds": round(secs, 2),
            "docs_per_s": round(report.total_docs / secs), "peak_rss_mb_main": round(rss / 1024),
            "peak_rss_mb_all_processes": tree_rss, "cpu_seconds_all_processes": cpu,
            "findings": sorted([f.rule_id, f.variant, f.count, f.affected_users] for f in report.findings)}


def _decode(segments: list) -> int:
    from fluxa_integrity.checks.scan import relaxed_gc

    with relaxed_gc():  # as a check's pass decodes
        return sum(len(b) for seg in segments for b in seg.batches(2000))


def limit(directory: str, procs: int) -> dict:
    """The machine's own limit for this split: the same files' two big collections decoded (no
    rules, the reader and garbage-collector settings of a check's pass) by ``procs`` processes,
    one segment of each file per process. Two vCPUs of a VM may
    share one physical core or its memory bandwidth: then two processes are not twice one, for
    any program, and this says by how much in the same run."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from fluxa_integrity.checks.sources import BackupFiles, FileSegment, frame_segments

    files = BackupFiles.of_dump(Path(directory), "bench")
    groups: list[list] = [[] for _ in range(procs)]
    for c in ("messages", "logs"):
        path, comp = files.files[c]
        segs = frame_segments(str(path), comp, procs) or [FileSegment(str(path), comp)]
        for k, seg in enumerate(segs):
            groups[k % procs].append(seg)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(procs, mp_context=get_context("fork")) as ex:
        docs = sum(ex.map(_decode, groups))
    return {"processes": procs, "docs": docs, "seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="/tmp/bench-partitions")
    ap.add_argument("--compression", default="zstd", choices=list(COMPRESS))
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to measure")
    ap.add_argument("--repeat", type=int, default=1, help="measure each worker count this many times, "
                    "alternating; the best run of each counts (a shared machine's load comes and goes)")
    ap.add_argument("--dask", action="store_true", help="also run each worker count above 1 on a Dask LocalCluster "
                    "(key sets, facts and counts held on the cluster by key hash): its time, and the peak RSS of "
                    "the process that runs the check - what the client holds")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.dir)
    if args.one:
        print(json.dumps(one(str(out), args.one, args.dask)))
        return
    if args.limit:
        print(json.dumps(limit(str(out), args.limit)))
        return
    meta = out / "bench.json"
    have = json.loads(meta.read_text()) if meta.is_file() else {}
    if (have.get("users"), have.get("seed"), have.get("compression"), have.get("seekable")) != (
            args.users, args.seed, args.compression, True):  # a dump of older code: written in one zstd frame
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        write_dump(out, args.users, args.seed, args.compression)
        print(f"dump written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    counts = json.loads(meta.read_text())["counts"]
    size = sum(p.stat().st_size for p in (out / "bench").iterdir())
    rows, every, limits, dask_rows = {}, [], {}, {}
    counts_w = [int(x) for x in args.workers.split(",")]
    for _ in range(args.repeat):
        for w in counts_w:  # the machine's limit for w processes, then the check with w workers
            got = subprocess.run([sys.executable, __file__, "--dir", str(out), "--limit", str(w)],
                                 capture_output=True, text=True, check=True).stdout
            lim = json.loads(got.strip().splitlines()[-1])
            print(json.dumps({"limit": lim}), file=sys.stderr)
            if w not in limits or lim["seconds"] < limits[w]["seconds"]:
                limits[w] = lim
            load = os.getloadavg()[0]
            got = subprocess.run([sys.executable, __file__, "--dir", str(out), "--one", str(w)],
                                 capture_output=True, text=True, check=True).stdout
            row = {**json.loads(got.strip().splitlines()[-1]), "load_avg_1m_before": round(load, 2)}
            every.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "findings"}), file=sys.stderr)
            if w not in rows or row["seconds"] < rows[w]["seconds"]:
                rows[w] = row
            if args.dask and w > 1:
                got = subprocess.run([sys.executable, __file__, "--dir", str(out), "--one", str(w), "--dask"],
                                     capture_output=True, text=True, check=True).stdout
                row = json.loads(got.strip().splitlines()[-1])
                every.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "findings"}), file=sys.stderr)
                if f"dask{w}" not in dask_rows or row["seconds"] < dask_rows[f"dask{w}"]["seconds"]:
                    dask_rows[f"dask{w}"] = row
    base, lbase = rows[min(rows)], limits[min(limits)]
    speedup = {w: round(base["seconds"] / r["seconds"], 2) for w, r in rows.items()}
    machine = {w: round(lbase["seconds"] / r["seconds"], 2) for w, r in limits.items()}
    print(json.dumps({
        "users": args.users, "documents": sum(counts.values()), "messages": counts.get("messages"),
        "files_mb": round(size / 1e6, 1), "compression": args.compression, "cpus": os.cpu_count(),
        "runs": {w: {k: v for k, v in r.items() if k != "findings"} for w, r in rows.items()},
        "speedup": speedup,
        # decoding split the same way, no rules: what this machine gives any program for w processes
        "machine_speedup": machine, "machine_runs": limits,
        "speedup_over_machine": {w: round(speedup[w] / machine[w], 2) for w in speedup},
        "dask_runs": {k: {x: v for x, v in r.items() if x != "findings"} for k, r in dask_rows.items()},
        "dask_speedup": {k: round(base["seconds"] / r["seconds"], 2) for k, r in dask_rows.items()},
        "findings_identical": all(r["findings"] == base["findings"] for r in every),
        "findings": len(base["findings"]),
    }))


if __name__ == "__main__":
    main()
