"""The full default check suite against the physical limit: a plain cursor drain of the same
collections, in the same run, on the same server.

    FLUXA_HOME=/tmp/bench .venv/bin/fluxa-integrity devdb start
    .venv/bin/fluxa-integrity fluxa generate --users 21000 --db bench_1m    # ~1M messages
    .venv/bin/python benchmarks/bench_checks.py --db bench_1m

Each measurement runs in a fresh subprocess so its peak RSS is its own. Prints one JSON line:
drain docs/s, check docs/s with 1 and 2 workers, ratio check/drain, speed-up 1 -> 2 workers,
peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def one(mode: str, uri: str, db: str) -> dict:
    from _common import drain

    from fluxa_integrity.checks.runner import RunOptions, run_checks
    from fluxa_integrity.policy import default_policy

    policy = default_policy()
    t0 = time.perf_counter()
    if mode == "drain":
        import pymongo

        client = pymongo.MongoClient(uri)
        docs = sum(drain(client[db], c)["docs"] for c in policy.collections)
        findings = None
    else:
        report = run_checks(uri, db, policy, RunOptions(workers=int(mode[-1])))
        docs, findings = report.total_docs, len(report.findings)
    secs = time.perf_counter() - t0
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mode": mode, "docs": docs, "seconds": round(secs, 1), "docs_per_s": round(docs / secs),
            "findings": findings, "peak_rss_mb": round(max(rss_self, rss_children))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--uri")
    ap.add_argument("--one")
    args = ap.parse_args()
    from fluxa_integrity.config import resolve_target

    target = resolve_target(args.uri, args.db)
    if args.one:
        print(json.dumps(one(args.one, target.uri, target.db)))
        return
    rows = {}
    for mode in ("drain", "workers1", "workers2"):
        out = subprocess.run([sys.executable, __file__, "--db", target.db, "--uri", target.uri, "--one", mode],
                             capture_output=True, text=True, check=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({
        "db": target.db, "docs": rows["drain"]["docs"], **{m: r for m, r in rows.items()},
        "ratio_check_to_drain": round(rows["workers1"]["docs_per_s"] / rows["drain"]["docs_per_s"], 3),
        "speedup_1_to_2_workers": round(rows["workers1"]["seconds"] / rows["workers2"]["seconds"], 2),
    }))


if __name__ == "__main__":
    main()
