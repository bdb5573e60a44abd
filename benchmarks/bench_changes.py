"""Runs that read only what changed (issue 13, item 5): `check run --changes` against a full run
after 1% and 10% of the messages changed, with the findings of both compared.

    FLUXA_HOME=/tmp/bench-changes .venv/bin/fluxa-integrity devdb start --port 27218
    FLUXA_HOME=/tmp/bench-changes .venv/bin/python benchmarks/bench_changes.py --users 2100 \\
        --uri mongodb://127.0.0.1:27218/          # ~100k messages

Two shapes of change, each at every rate of ``--rates`` (shares of the messages collection):
``appends`` - chat traffic: new messages answering their conversation's newest one, the
conversation's lastUpdated and messageCount following (what a chat database mostly sees) - and
``scattered`` - edits of messages chosen at random over the whole collection (the worst case for
parts: every part is touched long before every document is). After each change, a --changes run
and a full run of the same state: seconds, documents read from the server, parts evaluated and
reused, and whether their findings are identical. Prints one JSON document; progress to stderr.

The dev server's oplog keeps 20,000 entries: a change bigger than that between two runs has
left the oplog before the second one reads it, and --changes then reads everything again (it
says so; the row's ``fell_back``). Keep ``rate x messages x 2`` under it (``--users 700`` for
10%), or run the oplog archiver beside it as `serve` does.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mb  # noqa: E402

from fluxa_integrity.checks.runner import RunOptions, run_checks  # noqa: E402
from fluxa_integrity.config import resolve_target  # noqa: E402
from fluxa_integrity.fluxa.generator import GenerateOptions, generate  # noqa: E402
from fluxa_integrity.mongo.connection import connect  # noqa: E402
from fluxa_integrity.policy import default_policy  # noqa: E402
from fluxa_integrity.store import open_store  # noqa: E402


CHUNK = 5000


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def key(report) -> list:
    return sorted((f.rule_id, f.variant, f.count, f.affected_users, sorted(map(str, f.ids))) for f in report.findings)


def replace_all(coll, docs: list[dict]) -> None:
    """New versions of documents, written as a delete and an insert of each: FerretDB 1.24 runs
    an update by _id as a scan of the collection (~130 ms each at 30k documents; an update
    command of 100 statements hangs it, restore/replay.py), so thousands of updates would take
    the benchmark hours. What --changes sees is the same: these ids were written."""
    for i in range(0, len(docs), CHUNK):
        part = docs[i:i + CHUNK]
        coll.delete_many({"_id": {"$in": [d["_id"] for d in part]}})
        coll.insert_many(part)


def appends(db, n: int, rng: random.Random) -> int:
    """Chat traffic: new messages answering their conversation's newest one, the conversation's
    lastUpdated and messageCount following."""
    newest: dict = {}
    for m in db.messages.find({}, {"conversationId": 1, "timestamp": 1}):
        c = m.get("conversationId")
        if c is not None and (c not in newest or m["timestamp"] > newest[c][0]):
            newest[c] = (m["timestamp"], m["_id"])
    picked = rng.sample(sorted(newest), min(n, len(newest)))
    convs = {c["_id"]: c for c in db.conversations.find({"_id": {"$in": picked}})}
    template = {m["_id"]: m for m in db.messages.find({"_id": {"$in": [newest[c][1] for c in convs]}})}
    msgs, updated = [], []
    for c, conv in convs.items():
        last = template[newest[c][1]]
        when = max(conv["lastUpdated"], last["timestamp"]) + timedelta(minutes=1)
        msgs.append({**{k: v for k, v in last.items() if k != "_id"}, "timestamp": when, "parentId": last["_id"]})
        updated.append({**conv, "lastUpdated": when, "messageCount": conv.get("messageCount", 0) + 1})
    for i in range(0, len(msgs), 1000):
        db.messages.insert_many(msgs[i:i + 1000])
    replace_all(db.conversations, updated)
    return len(msgs) + len(updated)


def scattered(db, n: int, rng: random.Random) -> int:
    """Edits of messages chosen at random over the whole collection."""
    ids = [m["_id"] for m in db.messages.find({}, {"_id": 1})]
    picked = rng.sample(ids, min(n, len(ids)))
    docs = list(db.messages.find({"_id": {"$in": picked}}))
    for d in docs:
        d["text"] = f"edited {rng.random():.6f}"
    replace_all(db.messages, docs)
    return len(docs)


def timed(uri, db_name, policy, store, changes: bool):
    t0, c0 = time.perf_counter(), time.process_time()
    rep = run_checks(uri, db_name, policy, RunOptions(keep_ids=True, changes=changes), store=store)
    return rep, round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2100)
    ap.add_argument("--rates", default="0.01,0.1")
    ap.add_argument("--shapes", default="appends,scattered")
    ap.add_argument("--db", default="bench_changes")
    ap.add_argument("--uri")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    target = resolve_target(args.uri, args.db)
    client = connect(target.uri)
    db = client[target.db]
    policy, store = default_policy(), open_store()
    rng = random.Random(args.seed)
    log(f"generating {args.users} users into {target.db}")
    t0 = time.perf_counter()
    generate(db, GenerateOptions(users=args.users, seed=args.seed), drop=True)
    out: dict = {"users": args.users, "generate_s": round(time.perf_counter() - t0, 1), "runs": []}
    rep, secs, cpu = timed(target.uri, target.db, policy, store, True)
    out["first_changes_run"] = {"seconds": secs, "cpu_s": cpu, "docs": rep.docs,
                                "read": sum(c["read"] for c in rep.changes.values())}
    log(f"first --changes run (copies the database): {secs}s")
    for shape in args.shapes.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            messages = db.messages.estimated_document_count()
            n = max(1, round(messages * rate))  # an append also moves its conversation
            t0 = time.perf_counter()
            writes = appends(db, n, rng) if shape == "appends" else scattered(db, n, rng)
            log(f"{shape} {rate:.0%}: {writes} documents written in {time.perf_counter() - t0:.1f}s")
            ch, ch_s, ch_cpu = timed(target.uri, target.db, policy, store, True)
            fu, fu_s, fu_cpu = timed(target.uri, target.db, policy, store, False)
            per = defaultdict(dict)
            for c, st in ch.changes.items():
                per[c] = {k: st[k] for k in ("parts", "evaluated", "reused", "read", "evaluated_docs")}
            row = {"shape": shape, "rate": rate, "written": writes, "total_docs": fu.total_docs,
                   "changes_s": ch_s, "changes_cpu_s": ch_cpu, "full_s": fu_s, "full_cpu_s": fu_cpu,
                   "time_ratio": round(ch_s / fu_s, 3),
                   "read": sum(c["read"] for c in ch.changes.values()),
                   "read_ratio": round(sum(c["read"] for c in ch.changes.values()) / fu.total_docs, 4),
                   "evaluated_docs": sum(c["evaluated_docs"] for c in ch.changes.values()),
                   "identical_findings": key(ch) == key(fu), "findings": len(fu.findings), "per_collection": per,
                   # an oplog that no longer reaches back to the last run makes --changes read everything again
                   "fell_back": [w for w in ch.warnings if "read whole again" in w]}
            out["runs"].append(row)
            log(f"  --changes {ch_s}s ({row['read']} read) vs full {fu_s}s: ratio {row['time_ratio']}, "
                f"identical {row['identical_findings']}")
    out["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(out, default=str))
    client.close()


if __name__ == "__main__":
    main()
