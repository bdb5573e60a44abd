"""Oplog archiver lag under a sustained write load, and the time of a point-in-time restore, on a
FerretDB of its own.

    .venv/bin/python benchmarks/bench_pitr.py --users 200 --rate 200 --seconds 30

A writer thread inserts (and every 4th write updates) at a fixed rate while the archiver follows
the oplog in another thread (slices closed every --slice-seconds); lag = now - wall time of the
newest archived entry, sampled every 0.5 s. Then a point-in-time restore to the middle of the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pymongo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
UTC = timezone.utc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--rate", type=float, default=200.0, help="writes per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--slice-seconds", type=float, default=5.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pitr-"))
    os.environ["FLUXA_HOME"] = str(tmp / "home")
    from backup_helpers import hashes, make_data
    from fluxa_integrity.backup import archive_catalog as ac
    from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
    from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
    from fluxa_integrity.mongo.devserver import DevServer, free_port
    from fluxa_integrity.restore.pitr import restore_to_point
    from fluxa_integrity.store import open_store

    server = DevServer(tmp / "devdb")
    uri = server.start(port=free_port(), progress=lambda m: None).uri
    try:
        client = pymongo.MongoClient(uri, tz_aware=True)
        db = client.app
        make_data(db, users=a.users)
        store = open_store()
        run_backup(uri, "app", store, BackupOptions(repo=tmp / "repo"))
        stop_w, stop_a = threading.Event(), threading.Event()
        marks: dict = {}

        def writer() -> None:
            i, t0 = 0, time.perf_counter()
            while not stop_w.is_set():
                db.load.insert_one({"_id": i, "v": i})
                if i % 4 == 3:
                    db.load.update_one({"_id": i - 1}, {"$set": {"v": -i}})
                i += 1
                if "at" not in marks and time.perf_counter() - t0 >= a.seconds / 2:  # the writer pauses for the copy
                    time.sleep(0.01)  # wall times are ms: keep the copy's moment apart from the writes around it
                    marks["copy"], marks["at"] = hashes(db), datetime.now(UTC).isoformat()
                    time.sleep(0.01)
                time.sleep(max(0.0, t0 + i / a.rate - time.perf_counter()))
            marks["writes"] = i

        arch = threading.Thread(target=archive_oplog, args=(uri, store, tmp / "repo",
                                ArchiveOptions(slice_seconds=a.slice_seconds, poll_ms=500), stop_a))
        arch.start()
        w = threading.Thread(target=writer)
        w.start()
        lags = []
        end = time.time() + a.seconds
        while time.time() < end:
            time.sleep(0.5)
            row = ac.last_archived(store, tmp / "repo")
            if row is not None and row.last_wall is not None:
                lags.append((datetime.now(UTC) - ac.aware(row.last_wall)).total_seconds())
        stop_w.set()
        w.join()
        stop_a.set()
        arch.join()
        n_oplog = client.local["oplog.rs"].estimated_document_count()
        print(f"writes: {marks['writes']} in {a.seconds:.0f}s ({marks['writes'] / a.seconds:.0f}/s target {a.rate:.0f}/s), "
              f"oplog entries {n_oplog}")
        print(f"archiver lag (slice every {a.slice_seconds}s): median {statistics.median(lags):.2f}s, "
              f"p95 {sorted(lags)[int(len(lags) * 0.95) - 1]:.2f}s, max {max(lags):.2f}s over {len(lags)} samples",
              flush=True)
        t0 = time.perf_counter()
        res = restore_to_point(uri, store, "app", "app_pitr", marks["at"])
        secs = time.perf_counter() - t0
        got = hashes(client.app_pitr)
        ok = got == marks["copy"]
        if not ok:
            print("differs:", {k: (marks["copy"].get(k), got.get(k)) for k in set(got) | set(marks["copy"])
                               if got.get(k) != marks["copy"].get(k)})
        print(f"point-in-time restore: {secs:.2f}s total (snapshot {res['snapshot_seconds']:.2f}s, "
              f"{res['replay']['entries']} entries replayed from {[s['kind'] for s in res['sources']]}), "
              f"equal to the copy: {ok}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
