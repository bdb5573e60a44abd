"""Continuous validation: write-to-finding latency under a sustained chat-like load (issue 11, S1).

A private dev server (or ``--uri``) with a small Fluxa dataset; a writer process sends chat traffic
at a fixed rate - a message insert, then its conversation's ``messageCount`` ``$inc`` (two writes
per message) - and every ``--bad-every``-th message is bad (a conversation that does not exist,
or a sender outside the enum, alternately). The watcher of ``serve``'s ``validate-oplog`` job and
the oplog archiver run in this process, as in ``serve``. Latency: from the writer's clock just
before the bad insert to the commit of its finding (the watcher's ``on_record``), p50/p95/p99.
A rate is kept up with when the writer reaches 95% of it and every bad write became a finding.

Two dev-server setups per run: ``keep-N`` (``devdb start --oplog-keep N``: once the archiver and
the watcher have read an entry, only the newest N stay - a short live oplog) and ``cap`` (the
default server: the oplog pre-filled to its cap of ``--oplog-entries``, the state the issue
measured; guards only keep unread entries beyond it).
Also printed: one poll's cost (``find ts > last``) against the oplog's length.

    .venv/bin/python benchmarks/bench_validation_latency.py --rates 100,200,400 --seconds 30 --setups keep-100,cap
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymongo
from bson import ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def writer(uri: str, db_name: str, rate: float, seconds: float, bad_every: int, convs: list, users: list,
           out: mp.Queue) -> None:
    """Chat traffic at ``rate`` writes/s; puts (bad message ids with their write times, writes done, seconds)."""
    from datetime import datetime, timezone

    c = pymongo.MongoClient(uri, tz_aware=True)
    db = c[db_name]
    bad: dict = {}
    writes, n, t0 = 0, 0, time.time()
    interval = 2.0 / rate  # two writes per message
    while time.time() - t0 < seconds:
        due = t0 + n * interval
        if due > time.time():
            time.sleep(due - time.time())
        conv, user = convs[n % len(convs)], users[n % len(users)]
        doc = {"_id": ObjectId(), "conversationId": conv, "userId": user, "text": f"message {n}", "sender": "user",
               "timestamp": datetime.now(timezone.utc)}
        is_bad = n % bad_every == bad_every - 1
        if is_bad:
            if (n // bad_every) % 2:
                doc["sender"] = "robot"  # outside the enum
            else:
                doc["conversationId"] = ObjectId()  # a conversation that does not exist
        t = time.time()
        db.messages.insert_one(doc)
        if is_bad:
            bad[str(doc["_id"])] = t
        db.conversations.update_one({"_id": conv}, {"$inc": {"messageCount": 1}})
        writes += 2
        n += 1
    out.put((bad, writes, time.time() - t0))
    c.close()


def poll_cost(client, repeats: int = 5) -> tuple[int, float]:
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    oplog = client.local.get_collection("oplog.rs", codec_options=CodecOptions(document_class=RawBSONDocument))
    n = oplog.estimated_document_count()
    last = next(oplog.find({}, {"ts": 1}).sort("$natural", -1).limit(1))["ts"]
    t0 = time.perf_counter()
    for _ in range(repeats):
        list(oplog.find({"ts": {"$gt": last}}).limit(1000))
    return n, (time.perf_counter() - t0) / repeats


def run_rate(uri: str, db_name: str, policy, rate: float, seconds: float, bad_every: int, repo: Path,
             slice_seconds: float, archiver: bool = True) -> dict:
    from fluxa_integrity.backup.archiver import ArchiveOptions, archive_oplog
    from fluxa_integrity.service.validation import WatchOptions, watch
    from fluxa_integrity.store import open_store

    c = pymongo.MongoClient(uri, tz_aware=True)
    convs = [d["_id"] for d in c[db_name].conversations.find({}, {"_id": 1}).limit(200)]
    users = [d["userId"] for d in c[db_name].conversations.find({}, {"userId": 1}).limit(200)]
    stop = threading.Event()
    recorded: dict[str, float] = {}
    lock = threading.Lock()

    def on_record(rows):
        now = time.time()
        with lock:
            for r in rows:
                recorded.setdefault(str(r._id), now)

    ready = threading.Event()
    box: dict = {}
    store = open_store()
    wt = threading.Thread(target=lambda: box.setdefault("w", watch(uri, db_name, policy, store, WatchOptions(
        poll_ms=100), stop, lambda m: None, ready.set, on_record)), daemon=True)
    at = threading.Thread(target=lambda: box.setdefault("a", archive_oplog(uri, store, repo, ArchiveOptions(
        slice_seconds=slice_seconds, poll_ms=500), stop)), daemon=True)
    if archiver:
        at.start()
    wt.start()
    ready.wait(120)
    q: mp.Queue = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=writer, args=(uri, db_name, rate, seconds, bad_every, convs, users, q))
    p.start()
    bad, writes, took = q.get()
    p.join()
    deadline = time.time() + 60
    while time.time() < deadline:
        with lock:
            if all(k in recorded for k in bad):
                break
        time.sleep(0.05)
    oplog_len = c.local["oplog.rs"].estimated_document_count()
    stop.set()
    wt.join(120)
    if archiver:
        at.join(120)
    lat = sorted(recorded[k] - t for k, t in bad.items() if k in recorded)

    def q_(p_: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p_ * len(lat)))], 3) if lat else None

    achieved = writes / took
    missing = len(bad) - len(lat)
    rep = box.get("w")
    return {"rate": rate, "achieved": round(achieved, 1), "bad": len(bad), "missed": missing,
            "p50": q_(0.5), "p95": q_(0.95), "p99": q_(0.99), "max": round(lat[-1], 3) if lat else None,
            "kept_up": achieved >= 0.95 * rate and missing == 0, "oplog_len_end": oplog_len,
            "documents": rep.documents if rep else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", help="a server to use instead of a private dev server (the setups are then skipped)")
    ap.add_argument("--rates", default="100,200,400", help="writes per second, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of load per rate")
    ap.add_argument("--bad-every", type=int, default=25, help="every Nth message is a bad write")
    ap.add_argument("--users", type=int, default=100, help="dataset size (Fluxa users)")
    ap.add_argument("--oplog-entries", type=int, default=20_000, help="the long-oplog setup's pre-filled length")
    ap.add_argument("--slice-seconds", type=float, default=1.0, help="the archiver's slice length (its guard moves "
                    "when a slice is cataloged, so the live oplog holds at least this many seconds of writes)")
    ap.add_argument("--no-archiver", action="store_true", help="run the watcher alone (its guard is then the only one)")
    ap.add_argument("--setups", default="keep-1000,cap", help="which dev-server setups to run (keep-N, cap)")
    args = ap.parse_args()

    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.mongo.devserver import DevServer, free_port
    from fluxa_integrity.policy import load_policy

    tmp = Path(tempfile.mkdtemp(prefix="bench-validation-"))
    os.environ["FLUXA_HOME"] = str(tmp / "home")
    policy = load_policy(None)
    rates = [float(r) for r in args.rates.split(",")]
    setups = ["external"] if args.uri else args.setups.split(",")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for setup in setups:
        server = None
        if args.uri:
            uri = args.uri
        else:
            server = DevServer(tmp / setup)
            keep = int(setup.split("-")[1]) if setup.startswith("keep-") else None
            uri = server.start(port=free_port(), oplog_entries=args.oplog_entries, oplog_keep=keep,
                               progress=lambda m: None).uri
        try:
            c = pymongo.MongoClient(uri, tz_aware=True)
            db_name = f"bench_validation_{setup.replace('-', '_')}"
            generate(c[db_name], GenerateOptions(users=args.users, secondary=False), drop=True)
            if setup == "cap":
                fill = max(0, args.oplog_entries - c.local["oplog.rs"].estimated_document_count())
                for i in range(0, fill, 5000):
                    c.filler.f.insert_many([{"i": j} for j in range(i, min(fill, i + 5000))])
            n, secs = poll_cost(c)
            print(f"\n[{setup}] one poll (find ts > last, limit 1000) on a {n:,}-entry oplog: {secs * 1000:.0f} ms")
            for rate in rates:
                res = run_rate(uri, db_name, policy, rate, args.seconds, args.bad_every, tmp / f"repo-{setup}-{rate:g}",
                               args.slice_seconds, not args.no_archiver)
                print(f"[{setup}] {res}")
            n, secs = poll_cost(c)
            print(f"[{setup}] after the load: one poll on a {n:,}-entry oplog: {secs * 1000:.0f} ms")
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
