"""The check engine at the Python client's limit: the full default suite evaluated over the raw
BSON of a backup's files with no server, against decoding the same bytes in the same run.

    .venv/bin/python benchmarks/bench_engine.py                 # ~1M messages (--users 21000)
    .venv/bin/python benchmarks/bench_engine.py --users 2100    # ~100k messages, a quick run
    .venv/bin/python benchmarks/bench_engine.py --profile messages   # cProfile of one pass

The data is the generator's (fluxa/generator.py, seed 1), built once without a server and cached
as a backup with compression ``none`` would hold it: ``<dir>/<db>/<collection>.bson``, documents
back to back (mongodump's format), plus the secondary system's users in ``<dir>/<db>_secondary``.
A ``complete`` marker is written last, so an interrupted build is rebuilt.

Every mode reads the same files in the same 2,000-document batches (the scan's batch size) and
runs in a fresh process, so peak RSS is its own:
- ``raw``: split into documents and wrap them as RawBSONDocument (``decode_all`` with a raw
  codec) - iterating raw BSON, the fastest a Python client can hand documents over;
- ``decode``: ``bson.decode_all`` to dicts with the client's codec options (tz-aware dates, as
  mongo/connection.connect decodes and as the engine must) - what a cursor's documents cost;
  ``decode-naive`` (with ``--modes``): bson's default options, for reference;
- ``engine``: ``decode_all`` plus every rule of the default policy, passes in dependency order
  (users, auditLog -> conversations -> analytics, logs, messages), key sets, facts and counters
  handed from pass to pass, per-collection counters decided at the end. Rules that need a server
  (validate, indexes, the audit-log query, count baselines) are not per-document work and are
  left out.
Prints one JSON line per mode and run and a summary: docs/s on wall and CPU clocks, the engine's
ratio to ``decode`` (the goal: >= 0.5 on one core) and peak RSS. On a shared machine the CPU
clock is the one to read (other processes stretch the wall clock, not a process's CPU time), and
``--repeat 3`` keeps each mode's best of three interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

BATCH = 2000
READ = 8 << 20
DB = "bench"
RAW = CodecOptions(document_class=RawBSONDocument)
DECODE = CodecOptions(tz_aware=True)  # as mongo/connection.connect's client decodes
PLAIN = CodecOptions()  # bson's defaults: naive dates, a little cheaper to build


# -- the cached dataset ---------------------------------------------------------------------------

def build(root: Path, users: int) -> None:
    """Generate the dataset once and write it as raw BSON files; a rerun reuses it."""
    from fluxa_integrity.fluxa import model as m
    from fluxa_integrity.fluxa.generator import BLOCK_USERS, GenerateOptions, _Builder, plan_sizes

    if (root / "complete").exists():
        return
    t0 = time.perf_counter()
    (root / DB).mkdir(parents=True, exist_ok=True)
    (root / (DB + m.SECONDARY_SUFFIX)).mkdir(parents=True, exist_ok=True)
    opts = GenerateOptions(users=users)
    convs, msgs = plan_sizes(opts)
    builder = _Builder(opts)
    files = {c: open(root / DB / f"{c}.bson", "wb") for c in m.COLLECTIONS}
    secondary = open(root / (DB + m.SECONDARY_SUFFIX) / f"{m.USERS}.bson", "wb")
    counts: Counter = Counter()
    for b, first in enumerate(range(0, users, BLOCK_USERS)):
        for name, docs in builder.block(b, min(BLOCK_USERS, users - first), convs, msgs).items():
            files[name].write(b"".join(bson.encode(d) for d in docs))
            counts[name] += len(docs)
            if name == m.USERS:  # the secondary system: a copy of users as of the last sync
                secondary.write(b"".join(bson.encode({"_id": u["_id"], "email": u["email"],
                                                      "lastUpdated": u["lastUpdated"]}) for u in docs))
    for f in (*files.values(), secondary):
        f.close()
    sync = {"_id": m.USERS, "lastSyncAt": opts.start + timedelta(days=opts.days + 1)}
    (root / (DB + m.SECONDARY_SUFFIX) / f"{m.SYNC_STATE}.bson").write_bytes(bson.encode(sync))
    (root / "complete").write_text(json.dumps({"users": users, "counts": counts,
                                               "seconds": round(time.perf_counter() - t0, 1)}))


def index(path: Path) -> list[tuple[int, int]]:
    """(bytes, documents) of each batch of up to BATCH whole documents, found before any clock
    starts: splitting the stream on length prefixes is a loop in Python here, where a cursor or
    a file source does it in C or I/O, and it would flatter every mode's ratio."""
    out = []
    with open(path, "rb") as f:
        buf = b""
        while True:
            chunk = f.read(READ)
            buf = buf + chunk if buf else chunk
            pos, start, n, size = 0, 0, 0, len(buf)
            while size - pos >= 4:
                length = int.from_bytes(buf[pos:pos + 4], "little")
                if size - pos < length:
                    break
                pos += length
                n += 1
                if n == BATCH:
                    out.append((pos - start, n))
                    start, n = pos, 0
            if n:
                out.append((pos - start, n))
            buf = buf[pos:]
            if not chunk:
                if buf:
                    raise SystemExit(f"{path}: {len(buf)} trailing bytes - delete the cache and rebuild")
                return out


INDEX: dict[Path, list] = {}


def batches(path: Path):
    """The raw bytes of each batch, read from the file in order."""
    with open(path, "rb") as f:
        for size, n in INDEX[path]:
            yield f.read(size), n


# -- the engine over files ------------------------------------------------------------------------

def run_engine(root: Path, profile: str | None = None, passes: dict | None = None) -> tuple[int, int]:
    """The full default suite over the files: (documents evaluated, findings); ``passes`` gets
    each pass's CPU seconds, decoding included."""
    from fluxa_integrity.checks.collection_rules import counter_findings
    from fluxa_integrity.checks.findings import Findings
    from fluxa_integrity.checks.runner import _levels, plan, RunOptions
    from fluxa_integrity.checks.scan import PassSpec, _Scanner
    try:
        from fluxa_integrity.checks.scan import _consume
    except ImportError:
        _consume = None
    from fluxa_integrity.fluxa import model as m
    from fluxa_integrity.policy import default_policy
    from fluxa_integrity.policy.rules import (CopiedFieldRule, CounterRule, ReferenceRule, SyncRule,
                                              TimestampOrderRule)

    policy = default_policy()
    existing = {p.name[:-5] for p in (root / DB).glob("*.bson")}
    active, _, _ = plan(policy, existing, RunOptions(), DB)
    keys, facts, counts = {}, {}, {}
    deps = {c: set() for c in active}
    for coll, rules in active.items():  # what runner.run_checks plans, minus the server's parts
        for r in rules:
            if isinstance(r, ReferenceRule) and r.to != coll:
                keys.setdefault(r.to, set()).add(r.to_field)
                deps[coll].add(r.to)
            elif isinstance(r, (TimestampOrderRule, CopiedFieldRule)) and r.parent_collection != coll:
                facts.setdefault(r.parent_collection, set()).add(r.parent_field)
                deps[coll].add(r.parent_collection)
            elif isinstance(r, CounterRule):
                facts.setdefault(coll, set()).add(r.field)
                counts.setdefault(r.child_collection, set()).add(r.child_field)
            elif isinstance(r, SyncRule):
                keys.setdefault(coll, set()).add("_id")
    sync_state = bson.decode_all((root / (DB + m.SECONDARY_SUFFIX) / f"{m.SYNC_STATE}.bson").read_bytes(), DECODE)[0]
    sync_rules = [r for rules in active.values() for r in rules if isinstance(r, SyncRule)]

    def scan(spec: PassSpec, path: Path):  # what scan.scan does with a cursor's batches
        docs = (bson.decode_all(raw, DECODE) for raw, _ in batches(path))
        if _consume is None:  # an engine from before the source seam (for before/after numbers)
            scanner = _Scanner(spec)
            for batch in docs:
                scanner.batch(batch)
            return scanner.finish(0.0)
        return _consume(spec, docs, None).finish(0.0)

    imports: dict = {}
    for r in sync_rules:
        res = scan(PassSpec(uri="", db=DB, collection=m.USERS, export_keys=["_id"], user_field=None),
                   root / (DB + m.SECONDARY_SUFFIX) / f"{m.USERS}.bson")
        imports[("keys", "secondary:" + r.id, "_id")] = res.keys["_id"]
    results, docs, findings = {}, 0, 0
    for level in _levels(deps):
        for coll in level:
            needs = {k: v for k, v in imports.items() if k[0] == "keys" and k[1].startswith("secondary:")}
            for r in active[coll]:
                if isinstance(r, ReferenceRule) and r.to != coll:
                    needs[("keys", r.to, r.to_field)] = imports[("keys", r.to, r.to_field)]
                elif isinstance(r, (TimestampOrderRule, CopiedFieldRule)) and r.parent_collection != coll:
                    needs[("facts", r.parent_collection)] = imports[("facts", r.parent_collection)]
            cp = policy.collections[coll]
            spec = PassSpec(uri="", db=DB, collection=coll, rules=active[coll], imports=needs,
                            export_keys=sorted(keys.get(coll, ())), export_facts=sorted(facts.get(coll, ())),
                            count_children=sorted(counts.get(coll, ())), user_field=cp.user_field,
                            watermark_field=cp.watermark_field,
                            sync_cutoffs={r.id: sync_state["lastSyncAt"] for r in sync_rules})
            if profile == coll:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                res = prof.runcall(scan, spec, root / DB / f"{coll}.bson")
                pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            else:
                c0 = time.process_time()
                res = scan(spec, root / DB / f"{coll}.bson")
                if passes is not None:
                    passes[coll] = round(time.process_time() - c0, 2)
            results[coll] = res
            for f, ks in res.keys.items():
                imports[("keys", coll, f)] = ks
            if res.facts is not None:
                imports[("facts", coll)] = res.facts
            docs += res.docs
            findings += len(res.findings)
    for coll, rules in active.items():
        extra = Findings(coll, 20, False)
        for r in rules:
            if isinstance(r, CounterRule):
                counter_findings(r, coll, results[coll].facts,
                                 results[r.child_collection].child_counts.get(r.child_field, Counter()), extra)
        findings += len(extra.results())
    return docs, findings


# -- modes ----------------------------------------------------------------------------------------

def one(mode: str, root: Path, profile: str | None) -> dict:
    files = sorted((root / DB).glob("*.bson"))
    for path in [*files, *(root / (DB + "_secondary")).glob("*.bson")]:
        INDEX[path] = index(path)
    if mode == "engine":  # imports and the policy are not the engine's per-document cost
        import fluxa_integrity.checks.runner  # noqa: F401
        from fluxa_integrity.policy import default_policy

        default_policy()
    w0, c0 = time.perf_counter(), time.process_time()
    findings, passes = None, {}
    if mode == "engine":
        docs, findings = run_engine(root, profile, passes)
    else:
        try:
            from fluxa_integrity.checks.scan import relaxed_gc
        except ImportError:  # an older engine: its own collector settings
            from contextlib import nullcontext as relaxed_gc

        docs = 0
        opts = RAW if mode == "raw" else PLAIN if mode == "decode-naive" else DECODE
        with relaxed_gc():  # the engine's collector settings, so the ratio compares like with like
            for path in files:
                for raw, n in batches(path):
                    docs += len(bson.decode_all(raw, opts))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"mode": mode, "docs": docs, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "docs_per_s": round(docs / wall), "docs_per_cpu_s": round(docs / cpu), "findings": findings,
            **({"pass_cpu_s": passes} if passes else {}), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=21000, help="users to generate (21000 ~ 1M messages)")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("FLUXA_BENCH_DIR", "/tmp/fluxa-bench")),
                    help="where the generated files are cached")
    ap.add_argument("--one", help="run one mode in this process (raw, decode, decode-naive, engine)")
    ap.add_argument("--profile", help="cProfile this collection's pass (engine mode), to stderr")
    ap.add_argument("--modes", default="raw,decode,engine", help="comma-separated: raw, decode, decode-naive, engine")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the modes this many times, interleaved, and keep each one's best CPU time "
                         "(a shared machine's load comes and goes)")
    args = ap.parse_args()
    root = args.dir / f"engine-{args.users}"
    if args.one:
        print(json.dumps(one(args.one, root, args.profile)))
        return
    build(root, args.users)
    meta = json.loads((root / "complete").read_text())
    rows: dict[str, dict] = {}
    for _ in range(args.repeat):  # modes interleaved, the best CPU time of each kept
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--users", str(args.users), "--dir", str(args.dir), "--one", mode]
            if args.profile and mode == "engine":
                cmd += ["--profile", args.profile]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout  # stderr: profiles
            row = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            if mode not in rows or row["cpu_s"] < rows[mode]["cpu_s"]:
                rows[mode] = row
    summary = {"users": args.users, "counts": meta["counts"],
               "mb": round(sum(p.stat().st_size for p in (root / DB).glob("*.bson")) / 1e6, 1)}
    if "engine" in rows and "decode" in rows:
        summary["engine_to_decode_wall"] = round(rows["engine"]["docs_per_s"] / rows["decode"]["docs_per_s"], 3)
        summary["engine_to_decode_cpu"] = round(rows["engine"]["docs_per_cpu_s"] / rows["decode"]["docs_per_cpu_s"], 3)
    if "raw" in rows and "decode" in rows:
        summary["decode_to_raw_cpu"] = round(rows["decode"]["docs_per_cpu_s"] / rows["raw"]["docs_per_cpu_s"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
