"""A soak of issue 11's acceptance item 2: with `fluxa-integrity serve` up for --minutes, a chat-like
write load and, once, a `fluxa generate` of more documents than the dev server's oplog cap, a
point-in-time restore to each of K moments equals a copy taken at that moment.

    .venv/bin/python benchmarks/soak_serve_pitr.py --minutes 10 --moments 6

Shape of a run (everything on a FerretDB and a $FLUXA_HOME of its own, in a temporary directory):
1. the dev server starts with a small oplog cap (--oplog-entries) and --oplog-keep (docs/local-server.md,
   "Oplog guards"); database ``app`` gets a small Fluxa dataset; database ``bulk`` gets a marker
   collection and a full backup (taken by this script: serve backs up ``app`` only, and a backup of
   ``bulk`` before the generate is what lets the generate's every entry be checked through the archive);
2. ``serve --db app --time-scale S --slice-seconds 1`` starts (all the policy's jobs unless --only);
   the run begins when its first full backup of ``app`` is cataloged;
3. a writer thread sends chat traffic to ``app`` (a message, its log, the conversation's counter and
   date; every 7th write a user's preferences with a field removed, every 11th a log deleted);
4. at K moments spread over the run (each at least 2 s of chat writes after the previous one, whatever
   the time a copy took) the writers are paused (the chat writer between two writes, the
   generate between two commands, see below), the moment is read from the clock, and a copy is taken:
   a SHA-256 of every document's raw BSON, per collection, of ``app`` and ``bulk``; then both resume.
   One moment falls inside the generate: it pauses itself once it has inserted more documents than
   the oplog cap;
5. at the end serve gets SIGTERM (it must exit 0: its archiver closes its last slice), and each moment is
   restored with ``restore_to_point`` (the function `restore run --at` calls) into fresh databases
   and compared, document by document, with its copy.

The point: `--at` is an ISO time compared with each oplog entry's ``wall`` (ms), inclusive
(restore/pitr.py). A moment is read after every writer has had its last write acknowledged and
before any writes again, so the writes before it are exactly those with ``wall <= moment``.

Pausing the generate: it runs as the real CLI (`fluxa-integrity fluxa generate --db bulk`) in a child
process that first registers a pymongo command listener (this file, ``generate-child``). The listener
holds every command before it is sent while paused, and counts those in flight; the child says
``soak-generate: paused`` on stderr once none is in flight (every write sent has been answered) and
resumes on a line ``resume`` on its stdin. The generator writes with several threads at once; none
of them passes the gate while paused.

Prints one JSON document: per moment equal or not (with differing collections and sample ids),
restore seconds and entries replayed; the archiver's lag as each slice closed (median, p95, p99,
max); gaps (the catalog's, `backup oplog-status`, ``GAP`` lines of serve); job outcomes; load
average. Exit 1 when a moment differs, there is a gap, or serve did not stop cleanly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc
READY = r"serving: \d+ jobs scheduled"
PAUSED = "soak-generate: paused"
RESUMED = "soak-generate: resumed"


# -- the generate child: the real CLI behind a pause gate --------------------------------------------

def generate_child(argv: list[str], pause_after: int) -> None:
    """Run `fluxa-integrity <argv>` with every pymongo command behind a gate (see the module doc)."""
    from pymongo import monitoring

    cond = threading.Condition()
    state = {"paused": False, "inflight": 0, "docs": 0, "acked": False, "paused_once": False}

    def say(text: str) -> None:
        sys.stderr.write(f"\n{text}\n")
        sys.stderr.flush()

    def settled() -> None:  # called under cond
        if state["paused"] and state["inflight"] == 0 and not state["acked"]:
            state["acked"] = True
            say(f"{PAUSED} after {state['docs']} documents")

    class Gate(monitoring.CommandListener):
        def started(self, event):
            with cond:
                while state["paused"]:
                    cond.wait(0.1)
                state["inflight"] += 1

        def _done(self, event, reply):
            with cond:
                state["inflight"] -= 1
                if event.command_name == "insert" and reply is not None:
                    state["docs"] += int(reply.get("n", 0))
                if pause_after and not state["paused_once"] and state["docs"] >= pause_after:
                    state["paused"] = state["paused_once"] = True
                settled()
                cond.notify_all()

        def succeeded(self, event):
            self._done(event, event.reply)

        def failed(self, event):
            self._done(event, None)

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "resume":
                with cond:
                    state["paused"], state["acked"] = False, False
                    cond.notify_all()
                say(RESUMED)

    monitoring.register(Gate())
    threading.Thread(target=control, daemon=True).start()
    from fluxa_integrity.cli.main import app

    sys.argv = ["fluxa-integrity", *argv]
    app()


# -- small pieces the test imports too -----------------------------------------------------------------

class LineWatch:
    """Collect a child's stderr as it comes; wait for a regex in it (a readiness line)."""

    def __init__(self, proc: subprocess.Popen, tee: Path | None = None):
        self.proc, self._chunks, self._closed = proc, [], False
        self._cond = threading.Condition()
        self._tee = open(tee, "a") if tee else None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            chunk = self.proc.stderr.read1(65536)
            with self._cond:
                if not chunk:
                    self._closed = True
                    self._cond.notify_all()
                    return
                text = chunk.decode(errors="replace")
                self._chunks.append(text)
                if self._tee:
                    self._tee.write(text)
                    self._tee.flush()
                self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(self._chunks)

    def wait_for(self, pattern: str, timeout: float = 300.0, start: int = 0) -> re.Match:
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search("".join(self._chunks), start)
                if found:
                    return found
                if self._closed:
                    raise RuntimeError(f"the process ended before printing {pattern!r}:\n{self.text[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no {pattern!r} within {timeout:.0f}s:\n{''.join(self._chunks)[-3000:]}")
                self._cond.wait(1.0)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._thread.join(timeout)
        return code


def wait_until(predicate, what: str, timeout: float = 300.0, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def document_hashes(db) -> dict[str, dict[str, str]]:
    """``{collection: {repr(_id): sha256 of the raw BSON}}`` for every collection of ``db``."""
    from bson import decode
    from bson.raw_bson import RawBSONDocument

    raw = db.codec_options.with_options(document_class=RawBSONDocument)
    out: dict[str, dict[str, str]] = {}
    for name in sorted(db.list_collection_names()):
        if name.startswith("system."):
            continue
        docs = {}
        for doc in db.get_collection(name, codec_options=raw).find({}, batch_size=5000):
            docs[repr(decode(doc.raw)["_id"])] = hashlib.sha256(doc.raw).hexdigest()
        out[name] = docs
    return out


def compare(copy: dict, got: dict) -> dict:
    """Per collection: documents missing from the restore, extra in it, and changed; empty = equal."""
    diff = {}
    for name in sorted(set(copy) | set(got)):
        a, b = copy.get(name, {}), got.get(name, {})
        missing = [k for k in a if k not in b]
        extra = [k for k in b if k not in a]
        changed = [k for k in a if k in b and a[k] != b[k]]
        if missing or extra or changed:
            diff[name] = {"missing": len(missing), "extra": len(extra), "changed": len(changed),
                          "samples": (missing + extra + changed)[:5]}
    return diff


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(q * len(s))) - 1))], 3)


# -- the chat load ---------------------------------------------------------------------------------------

class ChatWriter:
    """Chat-like writes to ``app`` at about ``rate`` writes/s, one at a time, acknowledged.

    ``pause()`` returns once the writer is between two writes and holds it there until ``resume()``."""

    def __init__(self, db, rate: float, seed: int = 11):
        self.db, self.rate, self.rng = db, rate, random.Random(seed)
        self.gate, self.stop, self.writes, self.error = threading.Lock(), threading.Event(), 0, None
        self.convs = list(db.conversations.find({}, {"_id": 1, "userId": 1}))
        self.users = [u["_id"] for u in db.users.find({}, {"_id": 1})]
        self.logs: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def pause(self) -> None:
        self.gate.acquire()

    def resume(self) -> None:
        self.gate.release()

    def _one(self) -> int:
        from bson import ObjectId

        db, rng, now = self.db, self.rng, datetime.now(UTC)
        conv = rng.choice(self.convs)
        mid = ObjectId()
        db.messages.insert_one({"_id": mid, "conversationId": conv["_id"], "userId": conv["userId"],
                                "text": f"soak message {self.writes}", "sender": rng.choice(["user", "bot"]),
                                "timestamp": now})
        lid = ObjectId()
        db.logs.insert_one({"_id": lid, "userId": conv["userId"], "conversationId": conv["_id"], "messageId": mid,
                            "timestamp": now, "operation": "message_sent", "messageContent": "soak"})
        self.logs.append(lid)
        db.conversations.update_one({"_id": conv["_id"]}, {"$inc": {"messageCount": 1}, "$set": {"lastUpdated": now}})
        n = 3
        if self.writes % 7 == 0 and self.users:
            uid = rng.choice(self.users)
            db.users.update_one({"_id": uid}, {"$set": {"preferences.theme": rng.choice(["light", "dark", "system"]),
                                                        "lastUpdated": now}, "$unset": {"lastLogin": ""}})
            n += 1
        if self.writes % 11 == 0 and len(self.logs) > 20:
            db.logs.delete_one({"_id": self.logs.pop(rng.randrange(len(self.logs) - 10))})
            n += 1
        return n

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            while not self.stop.is_set():
                with self.gate:
                    self.writes += self._one()
                time.sleep(max(0.0, t0 + self.writes / self.rate - time.perf_counter()))
        except Exception as exc:  # reported, and the run fails
            self.error = repr(exc)


# -- the run ---------------------------------------------------------------------------------------------

@dataclass
class Config:
    minutes: float = 10.0
    moments: int = 6
    rate: float = 30.0
    users: int = 20
    oplog_entries: int = 5000
    oplog_keep: int = 100
    generate_users: int = 150
    time_scale: float = 720.0
    slice_seconds: float = 1.0
    only: str | None = None
    keep: bool = False
    workdir: Path | None = None
    log: object = None


@dataclass
class Moment:
    index: int
    at: str
    during_generate: bool
    copy: dict = field(repr=False, default_factory=dict)
    copy_seconds: float = 0.0


def _copy(client) -> dict:
    return {"app": document_hashes(client.app), "bulk": document_hashes(client.bulk)}


def _take(client, writer: ChatWriter, index: int, during_generate: bool) -> Moment:
    """Writers are paused by the caller: read the moment, copy, keep the clock past the moment."""
    at = datetime.now(UTC)
    t0 = time.perf_counter()
    copy = _copy(client)
    secs = time.perf_counter() - t0
    while datetime.now(UTC) < at + timedelta(milliseconds=3):  # walls are ms: the next write is past it
        time.sleep(0.001)
    return Moment(index, at.isoformat(), during_generate, copy, round(secs, 2))


def run(cfg: Config) -> dict:
    import pymongo
    from sqlalchemy import select

    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="soak-serve-pitr-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    os.environ["FLUXA_HOME"] = str(home)
    log = cfg.log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    from fluxa_integrity.backup import archive_catalog as ac
    from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.mongo.devserver import DevServer, free_port
    from fluxa_integrity.restore.pitr import restore_to_point
    from fluxa_integrity.service import history
    from fluxa_integrity.store import open_store
    from fluxa_integrity.store.backup_models import RESTORABLE, Backup

    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    wall0 = time.perf_counter()
    server = DevServer(work / "devdb")
    uri = server.start(port=free_port(), progress=lambda m: None, oplog_entries=cfg.oplog_entries,
                       oplog_keep=cfg.oplog_keep, exit_with_pid=os.getpid()).uri
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "FLUXA_HOME": str(home)}
    result: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()
                               if k not in ("log", "workdir")}, "workdir": str(work)}
    try:
        client = pymongo.MongoClient(uri, tz_aware=True)
        generate(client.app, GenerateOptions(users=cfg.users, seed=5, secondary=False))
        client.bulk["_soak"].insert_one({"_id": "bulk", "note": "the generate below writes this database"})
        store = open_store()
        repo = home / "backups"
        run_backup(uri, "bulk", store, BackupOptions(repo=repo))  # bulk's snapshot before the generate

        serve_args = [sys.executable, "-m", "fluxa_integrity", "serve", "--uri", uri, "--db", "app",
                      "--repo", str(repo), "--time-scale", str(cfg.time_scale), "--slice-seconds", str(cfg.slice_seconds),
                      "--grace-seconds", "120"] + (["--only", cfg.only] if cfg.only else [])
        serve = subprocess.Popen(serve_args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL)
        procs.append(serve)
        swatch = LineWatch(serve, tee=work / "serve.stderr")
        swatch.wait_for(READY)
        log(f"serve is up (pid {serve.pid}); waiting for its first full backup of app")

        def full_backups() -> int:
            with store.session() as s:
                return len(list(s.scalars(select(Backup.id).where(Backup.db == "app", Backup.kind == "full",
                                                                  Backup.status.in_(RESTORABLE)))))

        wait_until(full_backups, "serve's first full backup of app")
        writer = ChatWriter(client.app, cfg.rate)
        started = datetime.now(UTC)
        t0 = time.monotonic()
        writer.start()
        total = cfg.minutes * 60
        k_gen = cfg.moments // 2
        marks = [(k + 1) * total / (cfg.moments + 1) for k in range(cfg.moments)]
        moments: list[Moment] = []
        gen: subprocess.Popen | None = None
        gwatch: LineWatch | None = None
        gen_info: dict = {}
        writes_at_last = 0
        for k, mark in enumerate(marks):
            while time.monotonic() - t0 < mark:  # the run's own schedule, not a wait for readiness
                loads.append(os.getloadavg())
                if writer.error:
                    raise RuntimeError(f"the chat writer failed: {writer.error}")
                if serve.poll() is not None:
                    raise RuntimeError(f"serve exited early ({serve.returncode}):\n{swatch.text[-3000:]}")
                time.sleep(min(1.0, max(0.0, mark - (time.monotonic() - t0))))
            if moments:  # a long copy may use up the time to the next mark: some chat writes come between
                need = writes_at_last + max(10, int(cfg.rate * 2))
                wait_until(lambda: writer.writes >= need or writer.error, f"{need} chat writes before moment {k + 1}")
            if k == k_gen:
                gen_args = [sys.executable, str(Path(__file__).resolve()), "generate-child",
                            "--pause-after", str(cfg.oplog_entries * 3 // 2), "--", "fluxa", "generate",
                            "--uri", uri, "--db", "bulk", "--users", str(cfg.generate_users), "--seed", "9",
                            "--no-secondary"]
                gen = subprocess.Popen(gen_args, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=False)
                procs.append(gen)
                gwatch = LineWatch(gen, tee=work / "generate.stderr")
                gen_info["started_s"] = round(time.monotonic() - t0, 1)
                log("generate started; waiting for it to pause past 1.5x the oplog cap")
                gwatch.wait_for(PAUSED)  # every command it sent is answered; it holds the next ones
                writer.pause()
                moments.append(_take(client, writer, k, True))
                writer.resume()
                gen.stdin.write(b"resume\n")
                gen.stdin.flush()
                gwatch.wait_for(RESUMED)
            else:
                gen_paused = gen is not None and gen.poll() is None
                if gen_paused:  # still running after its own pause: not the moment meant for it, wait for it
                    code = gen.wait(600)
                    if code != 0:
                        raise RuntimeError(f"the generate failed ({code}):\n{gwatch.text[-3000:]}")
                writer.pause()
                moments.append(_take(client, writer, k, False))
                writer.resume()
            m = moments[-1]
            writes_at_last = writer.writes
            log(f"moment {k + 1}/{cfg.moments} at {m.at} (t+{time.monotonic() - t0:.0f}s, copy "
                f"{m.copy_seconds}s{', during the generate' if m.during_generate else ''}): "
                f"app {sum(len(v) for v in m.copy['app'].values())} docs, bulk {sum(len(v) for v in m.copy['bulk'].values())}")
        while time.monotonic() - t0 < total:
            loads.append(os.getloadavg())
            time.sleep(min(1.0, max(0.0, total - (time.monotonic() - t0))))
        writer.stop.set()
        writer.thread.join()
        if writer.error:
            raise RuntimeError(f"the chat writer failed: {writer.error}")
        if gen is not None:
            gen_code = gen.wait(600)
            gen_info.update(exit=gen_code, documents=sum(client.bulk[c].estimated_document_count()
                                                         for c in client.bulk.list_collection_names()))
            if gen_code != 0:
                raise RuntimeError(f"the generate failed ({gen_code}):\n{gwatch.text[-3000:]}")
        ended = datetime.now(UTC)

        # stop serve cleanly: its archiver closes its slice, the exit code is 0
        t_stop = time.perf_counter()
        serve.send_signal(signal.SIGTERM)
        serve_code = swatch.finish(300)
        serve_err = swatch.text
        result["serve"] = {"exit": serve_code, "stop_seconds": round(time.perf_counter() - t_stop, 1),
                           "tracebacks": serve_err.count("Traceback"), "gap_lines": [
                               ln for ln in serve_err.splitlines() if "GAP" in ln][:5]}
        runs = history.runs(store, None, limit=100_000)
        outcomes = Counter(f"{r.job}:{r.outcome}" for r in runs)
        result["jobs"] = dict(sorted(outcomes.items()))

        # gaps: the catalog, and oplog-status against the live oplog
        status = subprocess.run([sys.executable, "-m", "fluxa_integrity", "backup", "oplog-status", "--uri", uri,
                                 "--repo", str(repo), "--json"], env=env, capture_output=True, text=True, timeout=300)
        try:
            status_json = json.loads(status.stdout)
        except ValueError:
            status_json = {"unparsed": status.stdout[-500:], "stderr": status.stderr[-500:]}
        result["gaps"] = {"catalog": [{"after": ac.ts_text(ac.ts_of(g.after_t, g.after_i)), "reason": g.reason}
                                      for g in ac.gaps(store)],
                          "oplog_status_exit": status.returncode,
                          "oplog_status_gaps": status_json.get("gaps") if isinstance(status_json, dict) else None}
        lags = [x["lag_seconds"] for x in ac.slice_lags(store, started, ended)]
        result["archiver_lag_s"] = {"slices": len(lags), "median": round(statistics.median(lags), 3) if lags else None,
                                    "p95": pct(lags, 0.95), "p99": pct(lags, 0.99), "max": max(lags) if lags else None}
        result["load"] = {"writes": writer.writes, "writes_per_s": round(writer.writes / total, 1),
                          "generate": gen_info, "oplog_cap": cfg.oplog_entries}

        # restore each moment into fresh databases and compare with its copy
        per = []
        for m in moments:
            row = {"moment": m.index + 1, "at": m.at, "during_generate": m.during_generate,
                   "copy_seconds": m.copy_seconds}
            diffs = {}
            for src in ("app", "bulk"):
                target = f"pitr{m.index + 1}_{src}"
                t1 = time.perf_counter()
                res = restore_to_point(uri, store, src, target, m.at)
                row[f"{src}_restore_s"] = round(time.perf_counter() - t1, 2)
                row[f"{src}_replayed"] = res["replay"]["entries"]
                row[f"{src}_documents"] = sum(len(v) for v in m.copy[src].values())
                d = compare(m.copy[src], document_hashes(client[target]))
                if d:
                    diffs[src] = d
                client.drop_database(target)
            row["equal"] = not diffs
            if diffs:
                row["differences"] = diffs
            per.append(row)
            log(f"moment {m.index + 1}: {'equal' if row['equal'] else 'DIFFERS'} (app {row['app_restore_s']}s, "
                f"bulk {row['bulk_restore_s']}s)")
        result["moments"] = per
        loads.append(os.getloadavg())
        one = [x[0] for x in loads]
        result["load_average"] = {"start": loads[0], "end": loads[-1], "mean_1min": round(statistics.mean(one), 2),
                                  "max_1min": round(max(one), 2), "cores": os.cpu_count()}
        gapless = not result["gaps"]["catalog"] and status.returncode == 0 and not result["serve"]["gap_lines"]
        result["wall_seconds"] = round(time.perf_counter() - wall0, 1)
        result["ok"] = (all(r["equal"] for r in per) and gapless and serve_code == 0
                        and result["serve"]["tracebacks"] == 0)
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.stop()
        if not cfg.keep and cfg.workdir is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "generate-child":
        rest = sys.argv[2:]
        pause_after = 0
        if rest[:1] == ["--pause-after"]:
            pause_after, rest = int(rest[1]), rest[2:]
        generate_child(rest[1:] if rest[:1] == ["--"] else rest, pause_after)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--moments", type=int, default=6)
    ap.add_argument("--rate", type=float, default=30.0, help="chat writes per second (target)")
    ap.add_argument("--users", type=int, default=20, help="users of the small dataset in app")
    ap.add_argument("--oplog-entries", type=int, default=5000, help="the dev server's oplog cap")
    ap.add_argument("--oplog-keep", type=int, default=100, help="devdb start --oplog-keep")
    ap.add_argument("--generate-users", type=int, default=150, help="users of the generate (about 110 documents each)")
    ap.add_argument("--time-scale", type=float, default=720.0, help="serve --time-scale (720: daily jobs every 2 min)")
    ap.add_argument("--slice-seconds", type=float, default=1.0)
    ap.add_argument("--only", default=None, help="serve --only JOBS (default: every job of the policy)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, backups)")
    a = ap.parse_args()
    cfg = Config(minutes=a.minutes, moments=a.moments, rate=a.rate, users=a.users, oplog_entries=a.oplog_entries,
                 oplog_keep=a.oplog_keep, generate_users=a.generate_users, time_scale=a.time_scale,
                 slice_seconds=a.slice_seconds, only=a.only, keep=a.keep)
    res = run(cfg)
    print(json.dumps(res, indent=2, default=str))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()
