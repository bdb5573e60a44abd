"""Full backup and restore throughput as ratios to a plain cursor drain of the same collections,
in the same run, on a FerretDB of its own; plus the exact oplog probe's cost and peak RSS.

    .venv/bin/python benchmarks/bench_backup.py --users 2000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pymongo
from bson.raw_bson import RawBSONDocument


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--compression", default="zstd")
    ap.add_argument("--uri", help="use this server instead of starting a FerretDB")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fluxa-bench-"))
    os.environ["FLUXA_HOME"] = str(tmp / "home")
    from fluxa_integrity.backup.oplog import newest_oplog_ts
    from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.mongo.devserver import DevServer, free_port
    from fluxa_integrity.restore.executor import restore_snapshot
    from fluxa_integrity.store import open_store

    server = None
    uri = a.uri
    if not uri:
        server = DevServer(tmp / "devdb")
        uri = server.start(port=free_port(), progress=lambda m: None).uri
    try:
        client = pymongo.MongoClient(uri, tz_aware=True)
        db = client.bench
        t = time.perf_counter()
        gen = generate(db, GenerateOptions(users=a.users, seed=1, secondary=False))
        print(f"generated {sum(gen.counts.values()):,} documents ({gen.counts.get('messages', 0):,} messages) "
              f"in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        names = sorted(db.list_collection_names())
        docs = 0
        t = time.perf_counter()
        for n in names:  # the physical limit: the server handing over documents
            for _ in db.get_collection(n).with_options(
                    codec_options=db.codec_options.with_options(document_class=RawBSONDocument)).find(batch_size=5000):
                docs += 1
        drain = time.perf_counter() - t
        store = open_store()
        rss0 = rss_mb()
        t = time.perf_counter()
        res = run_backup(uri, "bench", store, BackupOptions(compression=a.compression, oplog_probe="clock", schema=False))
        backup_s = time.perf_counter() - t
        rss_backup = rss_mb()
        t = time.perf_counter()
        restore_snapshot(uri, store, res.id, "bench_restored")
        restore_s = time.perf_counter() - t
        _, how, probe_s = newest_oplog_ts(client, "exact")
        oplog_n = client.local.command("collStats", "oplog.rs")["count"] if "oplog.rs" in client.local.list_collection_names() else 0
        size = res.manifest["totals"]["bytes"]
        raw = sum(e.get("raw_bytes", 0) for e in res.manifest["collections"].values())
        print(f"documents            {docs:,} in {len(names)} collections, {raw / 1e6:.1f} MB raw BSON")
        print(f"cursor drain         {drain:.2f}s  {docs / drain:,.0f} docs/s")
        print(f"backup ({a.compression})        {backup_s:.2f}s  {docs / backup_s:,.0f} docs/s  ratio to drain {drain / backup_s:.2f}"
              f"  files {size / 1e6:.1f} MB ({raw / max(size, 1):.1f}x compression)")
        print(f"restore              {restore_s:.2f}s  {docs / restore_s:,.0f} docs/s  ratio to drain {drain / restore_s:.2f}")
        print(f"exact oplog probe    {probe_s:.2f}s over {oplog_n:,} oplog entries ({how}); each backup does two")
        print(f"peak RSS             {rss_mb():.0f} MB (before backup {rss0:.0f} MB, after backup {rss_backup:.0f} MB)")
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
