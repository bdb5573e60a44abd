"""Generation throughput and the server's raw scan rate.

    FLUXA_HOME=/tmp/bench .venv/bin/fluxa-integrity devdb start
    .venv/bin/python benchmarks/bench_generate.py --users 21000      # about 1M messages

Prints one JSON line: documents loaded, seconds, docs/s; then the plain cursor-drain rate of
`messages` (raw BSON and decoded to dicts), docs/s and MB/s, and peak RSS of this process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import drain, peak_rss_mb  # noqa: E402

from fluxa_integrity.config import resolve_target  # noqa: E402
from fluxa_integrity.fluxa.generator import GenerateOptions, generate  # noqa: E402
from fluxa_integrity.mongo.connection import connect  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=21000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", default="bench_generate")
    ap.add_argument("--uri")
    ap.add_argument("--skip-generate", action="store_true", help="only measure the drain of an existing db")
    args = ap.parse_args()
    target = resolve_target(args.uri, args.db)
    client = connect(target.uri)
    db = client[target.db]
    out: dict = {"server": client.server_info().get("version"), "uri_source": target.source}
    if not args.skip_generate:
        res = generate(db, GenerateOptions(users=args.users, seed=args.seed), drop=True)
        out["generate"] = {"documents": res.documents, "messages": res.counts["messages"],
                           "seconds": round(res.seconds, 1), "docs_per_s": round(res.documents / res.seconds)}
    out["drain_raw"] = drain(db, "messages", raw=True)
    out["drain_dicts"] = drain(db, "messages", raw=False)
    out["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
