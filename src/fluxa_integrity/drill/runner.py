"""Running one drill scenario end to end, phase by phase, on a scratch database.

Phases (the playbook's order; each timed, each shown by the progress sink):
  prepare      drop and regenerate the scratch database (refused when it holds data the Fluxa
               generator did not make), run the checks once: the clean baseline
  backup       full snapshot, then the oplog archived up to now (point-in-time recovery works);
               the pre-fault copy (content hash of every document the scenario can touch)
  inject       the scenario's faults, ground truth in the drill's own manifest
  detect       the checks, findings recorded as `check run` records them; scored against the
               ground truth (every injected document found by its rule)
  open         intake (drill=True: notifications say DRILL) opens the incident; more than one
               incident is merged into the first; acknowledged, investigating
  contain      read-only on the scenario's collections (when containment exists)
  recover      per recipe step: plan (the dry run), apply under the incident, verify
  verify       the checks again: every one clean
  compare      live against the pre-fault copy, document by document: the drill's verdict
  restore      containment lifted, incident resolved, reviewed and closed; postmortem written

Shape: ``run_scenario`` returns a ``ScenarioResult`` (report.py renders it); it never raises for
a failure of the drill itself: a phase that fails is recorded as failed with its error, the
incident (if any) is closed with that as its root cause so no live drill incident is left behind,
and the result says ``ok: false``. Only bad input (unknown scenario, a database the drill may
not drop) raises FluxaError before anything is written.
A recipe or engine that is not installed is a ``missing`` step: said, and the drill fails.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pymongo.database import Database

from ..errors import FluxaError
from ..fluxa import model as m
from ..fluxa.manifest import Injection, Manifest
from ..home import fluxa_home
from . import groundtruth
from .scenarios import DROPPED_INDEX, SCENARIOS, Facts, Scenario

UTC = timezone.utc
ACTOR = "drill"
PHASES = ("prepare", "backup", "inject", "detect", "open", "contain", "recover", "verify", "compare", "restore")


@dataclass
class DrillOptions:
    users: int = 40  # small: a few thousand documents
    seed: int = 7
    repo: Path | None = None  # backup repository (default: the configured one)
    contain: bool = True


class Sink:
    """What a face shows while a drill runs; the default shows nothing."""

    def phase(self, scenario: str, phase: str, label: str) -> None: ...
    def done(self, scenario: str, phase: str, seconds: float, status: str, note: str) -> None: ...
    def tick(self, label: str, done: int, total: int | None) -> None: ...


@dataclass
class PhaseResult:
    name: str
    seconds: float = 0.0
    status: str = "ok"  # ok, failed, missing, skipped
    note: str = ""

    def as_dict(self) -> dict:
        return {"phase": self.name, "seconds": round(self.seconds, 3), "status": self.status, "note": self.note}


@dataclass
class ScenarioResult:
    scenario: str
    title: str
    database: str
    phases: list[PhaseResult] = field(default_factory=list)
    dataset: dict = field(default_factory=dict)
    backup_id: str | None = None
    faults: list[dict] = field(default_factory=list)  # kind, collection, documents, detected
    notes: list[str] = field(default_factory=list)
    incident_id: int | None = None
    merged: list[int] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)  # recipe, plan id, counts, apply status, verify
    checks_before: int | None = None  # findings of the baseline run (0: a clean dataset)
    checks_after: list[dict] | None = None  # findings left by the final run
    comparison: dict | None = None
    time_to_detect: float | None = None
    time_to_recover: float | None = None
    rto: dict = field(default_factory=dict)
    rpo: dict = field(default_factory=dict)
    postmortem: str | None = None
    error: str | None = None

    @property
    def documents_lost(self) -> int | None:
        return None if self.comparison is None else self.comparison["lost"]

    @property
    def ok(self) -> bool:
        return (self.error is None and all(p.status in ("ok", "skipped") for p in self.phases)
                and self.comparison is not None and self.comparison["ok"] and self.checks_after == [])


class _Failed(Exception):
    """A phase failed: stop the scenario, keep what was measured."""


class Drill:
    """One scenario's run. The faces build it with handles resolved once (client, store, policy,
    incidents); ``run()`` drives the phases."""

    def __init__(self, uri: str, client, db_name: str, scenario: Scenario, policy, store, incidents,
                 opts: DrillOptions | None = None, sink: Sink | None = None):
        self.uri, self.client, self.db_name = uri, client, db_name
        self.db: Database = client[db_name]
        self.sc, self.policy, self.store, self.incidents = scenario, policy, store, incidents
        self.opts = opts or DrillOptions()
        self.sink = sink or Sink()
        self.res = ScenarioResult(scenario.name, scenario.title, db_name)
        self.dir = fluxa_home() / "drills"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.dir / f"{db_name}-{scenario.name}.faults.json", db_name)
        self.copy: groundtruth.Copy | None = None
        self.expect: dict = {}
        self.facts: Facts | None = None
        self.marks: dict[str, datetime] = {}
        self.contained = False

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> ScenarioResult:
        check_scratch(self.db)
        steps = [("prepare", "generate the scratch dataset, baseline checks", self.prepare),
                 ("backup", "full backup, oplog archived, pre-fault copy", self.backup),
                 ("inject", "inject the scenario's faults", self.inject),
                 ("detect", "run the checks, record findings", self.detect),
                 ("open", "intake: open the drill incident", self.open_incident),
                 ("contain", "read-only on the affected collections", self.contain),
                 ("recover", "plan, apply and verify each recipe", self.recover),
                 ("verify", "run every check again", self.verify),
                 ("compare", "live against the pre-fault copy", self.compare),
                 ("restore", "lift, resolve, review, close, postmortem", self.restore)]
        for name, label, fn in steps:
            phase = PhaseResult(name)
            self.res.phases.append(phase)
            self.sink.phase(self.sc.name, name, label)
            began = time.perf_counter()
            try:
                note = fn(phase)
                phase.note = note or phase.note
            except _Failed as exc:
                phase.status = "missing" if phase.status == "missing" else "failed"
                phase.note = str(exc)
            except FluxaError as exc:
                phase.status = "failed"
                phase.note = exc.message + (f" ({exc.hint})" if exc.hint else "")
            except Exception as exc:  # noqa: BLE001 - a drill reports every failure, never a traceback
                phase.status, phase.note = "failed", f"{type(exc).__name__}: {exc}"
                self.res.error = traceback.format_exc(limit=6)
            phase.seconds = time.perf_counter() - began
            self.sink.done(self.sc.name, name, phase.seconds, phase.status, phase.note)
            if phase.status in ("failed", "missing"):
                self._abandon(f"{name} failed: {phase.note}")
                break
        return self.res

    # -- phases -----------------------------------------------------------------------------

    def prepare(self, phase: PhaseResult) -> str:
        from ..checks.history import record_run
        from ..fluxa.generator import GenerateOptions, generate

        self._close_leftovers()
        gen = generate(self.db, GenerateOptions(users=self.opts.users, seed=self.opts.seed), drop=True,
                       on_batch=lambda name, n: None)
        self.res.dataset = {"users": self.opts.users, "seed": self.opts.seed, "counts": gen.counts,
                            "seconds": round(gen.seconds, 3)}
        self.manifest.reset({"seed": self.opts.seed, "users": self.opts.users, "counts": gen.counts,
                             "drill": self.sc.name})
        report = self._check_run()
        record_run(self.store, report)
        self.res.checks_before = len(report.findings)
        if report.findings:
            self.res.notes.append("the freshly generated dataset already had findings: "
                                  + ", ".join(sorted({f.rule_id for f in report.findings})))
        return f"{sum(gen.counts.values()):,} documents ({self.opts.users} users), baseline: " \
               f"{len(report.findings)} findings"

    def backup(self, phase: PhaseResult) -> str:
        from ..backup.snapshot import BackupOptions, run_backup

        # the clock probe: FerretDB scans the whole capped oplog for the newest entry (seconds per
        # probe); server-clock bounds are safe for replay (backup/oplog.py) and cost nothing
        result = run_backup(self.uri, self.db_name, self.store, BackupOptions(repo=self.opts.repo, oplog_probe="clock"))
        self.res.backup_id = result.id
        archived = self._archive_oplog()
        self.copy = groundtruth.take(self.db, self.sc.places(self.db_name),
                                     lambda n: self.sink.tick("pre-fault copy", n, None))
        self.marks["before_fault"] = datetime.now(UTC)
        return f"backup {result.id}, {archived}; pre-fault copy of {self.copy.documents:,} documents"

    def inject(self, phase: PhaseResult) -> str:
        from ..fluxa.faults import KINDS, inject

        time.sleep(max(0.0, 1.05 - (datetime.now(UTC) - self.marks["before_fault"]).total_seconds()))
        started = datetime.now(UTC)
        self.marks["fault"] = started.replace(microsecond=0)
        done = []
        for fault in self.sc.faults:
            if fault.kind == DROPPED_INDEX:
                done.append(self._drop_index(started))
            elif fault.kind not in KINDS:
                if not fault.optional:
                    raise _Failed(f"fault kind {fault.kind!r} does not exist in fluxa/faults.py")
                self.res.notes.append(f"fault kind {fault.kind!r} is not available yet: not drilled")
                continue
            else:
                done += inject(self.db, self.manifest, fault.kind, fault.count, seed=self.opts.seed, now=started)
        self.marks["injected"] = datetime.now(UTC)
        self.facts = Facts(db=self.db_name, backup_id=self.res.backup_id, fault_time=self.marks["fault"],
                           before_fault=self.marks["before_fault"], manifest=self.manifest,
                           restored_db=f"{self.db_name}_restored")
        if self.sc.expect is not None:
            self.expect = self.sc.expect(self.facts, self.db)
        self.res.faults = [{"kind": i.kind, "collection": i.collection, "documents": len(i.ids),
                            "variants": sorted(set(i.variants or []))} for i in done]
        return ", ".join(f"{i.kind} {len(i.ids) or 1}" for i in done)

    def _drop_index(self, at: datetime) -> Injection:
        """The drill's own fault: the first index the policy's corruption rule expects on users."""
        ix = next(ix for ix in self.db[m.USERS].list_indexes() if ix["name"] != "_id_")
        self.db[m.USERS].drop_index(ix["name"])
        inj = Injection(DROPPED_INDEX, m.USERS, [], at,
                        details={"index": ix["name"], "keys": [list(kv) for kv in ix["key"].items()]})
        self.manifest.append(inj)
        return inj

    def detect(self, phase: PhaseResult) -> str:
        from ..checks.history import record_run
        from ..fluxa.expectations import EXPECTED, score

        report = self._check_run()
        summary = record_run(self.store, report)
        self.marks["detected"] = datetime.now(UTC)
        for f in report.findings:
            self.facts.found.setdefault(f.rule_id, []).extend(f.ids or [])
        self.res.time_to_detect = (self.marks["detected"] - self.marks["injected"]).total_seconds()
        graded = score(Manifest_only(self.manifest, EXPECTED), report.findings)
        rules = {f.rule_id for f in report.findings}
        missed = []
        for row in self.res.faults:
            if row["kind"] == DROPPED_INDEX:  # an index, not documents: one fault, found by the corruption rule
                row["documents"] = 1
                row["detected"] = 1 if f"{m.USERS}.corruption" in rules else 0
            else:
                g = graded.get(row["kind"], {})
                row["detected"] = g.get("detected", 0)
                if g.get("missed"):
                    missed.append(f"{row['kind']}: {len(g['missed'])} of {g['injected']} not found")
            if not row["detected"]:
                missed.append(f"{row['kind']}: not detected")
        if missed:
            raise _Failed("detection missed injected faults: " + "; ".join(sorted(set(missed))))
        if not report.findings:
            raise _Failed("the checks found nothing after the faults")
        return (f"run {summary['run_id']}: {len(report.findings)} findings ({summary['opened']} new), "
                f"every injected fault found")

    def open_incident(self, phase: PhaseResult) -> str:
        inc = self.incidents
        got = inc.intake(database=self.db_name, drill=True)
        ids = sorted(set(got["opened"]) | {int(i) for i in got["attached"]})
        if not ids:
            raise _Failed("intake opened no incident for the findings"
                          + (f" (skipped {got['skipped']}: already on other incidents)" if got["skipped"] else ""))
        main, others = ids[0], ids[1:]
        if others:
            inc.merge(main, others, actor=ACTOR, reason=f"one drill, one incident ({self.sc.name})")
            self.res.merged = others
        self.res.incident_id = main
        self.marks["opened"] = datetime.now(UTC)
        inc.acknowledge(main, by=ACTOR)
        inc.set_status(main, "investigating", note=f"drill {self.sc.name}: {self.sc.title}", actor=ACTOR)
        inc.link(main, backups=[self.res.backup_id], issue_started_at=self.marks["fault"], actor=ACTOR)
        got = inc.get(main)
        return (f"incident {main} ({got['severity']}, {', '.join(got['data_classes'] or [])})"
                + (f", merged {', '.join(map(str, others))}" if others else ""))

    def contain(self, phase: PhaseResult) -> str:
        contain = getattr(self.incidents, "contain", None)
        if not self.opts.contain:
            phase.status = "skipped"
            return "--no-contain"
        if contain is None:
            phase.status = "skipped"
            self.res.notes.append("containment (incident contain) is not available yet: the drill did not contain")
            return "containment not available yet"
        contain(self.res.incident_id, self.db, read_only=True, collections=list(self.sc.contain), actor=ACTOR)
        self.contained = True
        return f"read-only: {', '.join(self.sc.contain)}"

    def recover(self, phase: PhaseResult) -> str:
        inc = self.incidents
        inc.set_status(self.res.incident_id, "recovering", note="recovery plan approved (drill)", actor=ACTOR)
        try:
            engine = importlib.import_module("fluxa_integrity.recovery.engine")
        except ModuleNotFoundError as exc:
            if exc.name != "fluxa_integrity.recovery.engine":
                raise  # the engine is there but something it imports is not: a failure, with its message
            engine = None
        from ..recovery import registry
        from ..recovery.model import RecipeContext

        known = registry.recipes()
        missing = sorted({s.recipe for s in self.sc.steps if s.recipe not in known})
        if engine is None or missing:
            what = (["the recovery engine (recovery/engine.py)"] if engine is None else []) + \
                   [f"recipe {r!r}" for r in missing]
            phase.status = "missing"
            for s in self.sc.steps:
                self.res.steps.append({"recipe": s.recipe, "why": s.why, "status": "missing"
                                       if engine is None or s.recipe in missing else "not run"})
            raise _Failed("not installed: " + ", ".join(what) + "; the drill cannot recover this scenario")
        changed = 0
        runs = []
        for n, step in enumerate(self.sc.steps):
            if step.restore:
                restored = self._restore_copy(list(step.restore))
            sets = step.params(self.facts)
            for params in (sets if isinstance(sets, list) else [sets]):
                runs.append((n, step, params, restored if step.restore else None))
        pending: list[tuple[dict, Any, Any]] = []  # applied plans of the current step, verified together
        for i, (n, step, params, restored) in enumerate(runs):
            row: dict[str, Any] = {"recipe": step.recipe, "why": step.why}
            self.res.steps.append(row)
            if restored:
                row["restored"] = restored
            row["params"] = params
            label = f"{step.recipe}"
            self.sink.tick(f"plan {label}", 0, None)
            ctx = RecipeContext(db=self.db, policy=self.policy, store=self.store, now=datetime.now(UTC),
                                progress=lambda lbl, d, t: self.sink.tick(f"{label}: {lbl}", d, t))
            t0 = time.perf_counter()
            plan = engine.make_plan(ctx, step.recipe, params)
            row["seconds"] = {"plan": round(time.perf_counter() - t0, 3)}
            index_changes = plan.params.get("index_changes") or []
            row.update(plan=plan.id, counts=plan.counts(), changes=len(plan.changes) + len(index_changes),
                       unresolved=list(plan.unresolved))
            extra = known[step.recipe].apply_extra is not None  # work that is not documents (indexes)
            if not plan.changes and not extra:
                row["status"] = "nothing to change"
                continue
            t0 = time.perf_counter()
            dry = engine.dry_run(self.db, plan)
            conflicts = list(getattr(dry, "conflicts", []) or [])
            if conflicts:
                row["conflicts"] = len(conflicts)
            self.sink.tick(f"apply {label}", 0, len(plan.changes))
            applied = engine.apply_plan(self.db, self.store, inc, plan.id, self.res.incident_id, actor=ACTOR,
                                        progress=_Bar(self.sink, f"apply {label}", len(plan.changes)))
            row["seconds"]["apply"] = round(time.perf_counter() - t0, 3)  # dry run included
            row["status"] = getattr(applied, "status", "applied")
            row["applied"] = getattr(applied, "counts", None)
            if row["status"] not in ("applied", "complete", "ok"):
                raise _Failed(f"{step.recipe} plan {plan.id}: apply {row['status']}")
            changed += row["changes"]
            pending.append((row, plan.id, step))
            if i + 1 == len(runs) or runs[i + 1][0] != n:
                # a step split into several plans (one per conversation) is verified once all
                # of them are applied: each plan's rules see the others' documents too
                self._verify(engine, pending)
                pending = []
        self.marks["recovered"] = datetime.now(UTC)
        return f"{len(runs)} recipe plans, {changed} changes applied and verified"

    def _verify(self, engine, applied: list[tuple[dict, Any, Any]]) -> None:
        for row, plan_id, step in applied:
            t0 = time.perf_counter()
            verified = engine.verify_plan(self.db, self.store, self.incidents, self.policy, plan_id, uri=self.uri)
            row["seconds"]["verify"] = round(time.perf_counter() - t0, 3)
            row["verified"] = bool(verified.closed)
            row["still_open"] = list(verified.still_open or [])
            if not verified.closed:
                raise _Failed(f"{step.recipe} plan {plan_id}: verification still open: {row['still_open']}")

    def verify(self, phase: PhaseResult) -> str:
        """Every check, with the deletions rules' window starting when the recovery ended: the
        audited deletions before it are history (the audit log keeps them, and a deletions rule
        reports them for its whole lookback), and what they deleted is back - the comparison with
        the pre-fault copy proves it document by document. A deletion after the recovery would
        still be reported."""
        from ..checks.history import record_run

        report = self._check_run(since=self.marks["recovered"])
        summary = record_run(self.store, report)
        self.marks["verified"] = datetime.now(UTC)
        self.res.checks_after = [{"rule": f.rule_id, "variant": f.variant, "count": f.count} for f in report.findings]
        self.res.time_to_recover = (self.marks["verified"] - self.marks["opened"]).total_seconds()
        if report.findings:
            raise _Failed(f"run {summary['run_id']}: {len(report.findings)} findings left: "
                          + ", ".join(sorted({f.rule_id for f in report.findings})))
        return f"run {summary['run_id']}: every check clean ({summary['closed']} findings closed)"

    def compare(self, phase: PhaseResult) -> str:
        from ..recovery.provenance import provenance_field

        strip = {p: f for p in self.copy.docs if "." not in p and (f := provenance_field(self.policy, p))}
        cmp = groundtruth.compare(self.db, self.copy, self.expect,
                                  lambda n: self.sink.tick("compare", n, None), strip)
        if strip:
            self.res.notes.append("compared without the provenance mark of rebuilt documents: "
                                  + ", ".join(f"{p}.{f}" for p, f in strip.items()))
        self.res.comparison = cmp.as_dict()
        self._objectives(cmp)
        if not cmp.ok:
            raise _Failed(f"{cmp.lost} documents not back as they were; "
                          + "; ".join(f"{p}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v)
                                      for p, c in cmp.counts.items() if any(c.values()))
                          + (f"; indexes missing: {cmp.missing_indexes}" if cmp.missing_indexes else ""))
        return f"{cmp.equal:,} of {cmp.compared:,} documents equal the pre-fault copy (content hash)"

    def restore(self, phase: PhaseResult) -> str:
        inc, iid = self.incidents, self.res.incident_id
        self._lift()
        point = self.marks["fault"] if self.res.rpo.get("achieved_seconds") == 0 else None
        inc.link(iid, recovery_point=point or self.res.rpo.get("recoverable_point"), actor=ACTOR)
        inc.resolve(iid, resolution=f"drill {self.sc.name}: every affected document equals its pre-fault copy; "
                    "every check clean", actor=ACTOR)
        inc.review(iid, root_cause=self.sc.root_cause, factors=list(self.sc.factors), lessons=list(self.sc.lessons),
                   action_items=list(self.sc.action_items), actor=ACTOR)
        self.marks["resolved"] = datetime.now(UTC)
        inc.close(iid, actor=ACTOR)
        self._postmortem()
        self._rto()
        broken = [t for t in inc.verify_timeline(iid) if not t.get("ok", True)]
        if broken:
            raise _Failed(f"incident {iid}: the timeline does not verify: {broken}")
        return f"incident {iid} closed; postmortem {self.res.postmortem}"

    # -- helpers ----------------------------------------------------------------------------

    def _check_run(self, since: datetime | None = None):
        from ..checks.history import baselines
        from ..checks.runner import RunOptions, run_checks

        return run_checks(self.uri, self.db_name, self.policy, RunOptions(keep_ids=True, since=since),
                          baselines=baselines(self.store, self.db_name))

    def _restore_copy(self, collections: list[str]) -> dict:
        """S25: the backup restored into a separate target first (tied to the incident), which the
        restore-and-promote recipe then diffs against live."""
        from ..restore.authority import Authority
        from ..restore.executor import restore_snapshot

        self.sink.tick(f"restore backup into {self.facts.restored_db}", 0, None)
        res = restore_snapshot(self.uri, self.store, self.res.backup_id, self.facts.restored_db,
                               collections=collections, drop_target=True,
                               authority=Authority.for_incident(self.incidents, self.res.incident_id))
        return {"restore_id": res.run_id, "target_db": res.target_db, "seconds": round(res.seconds, 3)}

    def _archive_oplog(self) -> str:
        from ..backup.archive_lock import ArchiverBusy
        from ..backup.archiver import ArchiveOptions, archive_oplog

        try:
            rep = archive_oplog(self.uri, self.store, self.opts.repo, ArchiveOptions(once=True, poll_ms=200))
        except ArchiverBusy:
            return "oplog: the running archiver keeps the position"
        if rep.gaps:
            self.res.notes.append(f"the oplog archive has a gap: {rep.gaps[0]}")
        return f"oplog archived ({rep.entries:,} entries)"

    def _objectives(self, cmp: groundtruth.Comparison) -> None:
        """RPO achieved: 0 when every document came back; else the age, at the fault, of the newest
        recoverable point of the affected classes. Targets: the strictest affected class."""
        from ..backup.objectives import rpo_status

        classes = self._classes()
        targets = [self.policy.data_class(c) for c in classes]
        target = min((d.rpo_delta.total_seconds() for d in targets), default=None)
        if cmp.lost == 0:
            achieved, point = 0.0, None
        else:
            rows = [r for r in rpo_status(self.store, self.policy, self.db_name, now=self.marks["fault"])
                    if r["data_class"] in classes]
            points = [r["recoverable_point"] for r in rows if r["recoverable_point"]]
            point = min(points) if points else None
            achieved = (self.marks["fault"] - point).total_seconds() if point else None
        self.res.rpo = {"achieved_seconds": achieved, "target_seconds": target, "classes": classes,
                        "recoverable_point": point,
                        "met": None if achieved is None or target is None else achieved <= target}

    def _rto(self) -> None:
        """RTO achieved: from detection (findings recorded) to service restored (containment
        lifted, incident resolved), measured by the drill's own clock marks: the incident's
        detected_at may be an earlier drill's, as a finding seen again keeps its opening time."""
        classes = self._classes()
        target = min((self.policy.data_class(c).rto_delta.total_seconds() for c in classes), default=None)
        achieved = (self.marks["resolved"] - self.marks["detected"]).total_seconds()
        self.res.rto = {"achieved_seconds": round(achieved, 3), "target_seconds": target, "classes": classes,
                        "met": None if target is None else achieved <= target,
                        "detect_to_verified_seconds": round((self.marks["verified"] - self.marks["detected"])
                                                            .total_seconds(), 3)}

    def _classes(self) -> list[str]:
        if self.res.incident_id is None:
            return []
        names = {d.name for d in self.policy.data_classes}
        return [c for c in self.incidents.get(self.res.incident_id)["data_classes"] or [] if c in names]

    def _postmortem(self) -> None:
        pm = self.incidents.postmortem(self.res.incident_id)
        path = self.dir / f"{self.db_name}-{self.sc.name}-incident-{self.res.incident_id}.md"
        path.write_text(pm["markdown"])
        self.res.postmortem = str(path)

    def _lift(self) -> None:
        if self.contained:
            self.incidents.lift(self.res.incident_id, self.db, actor=ACTOR)
            self.contained = False

    def _close_leftovers(self) -> None:
        """A drill killed midway (its process gone) could not close its incident; the regenerated
        scratch data has the same findings, which would join that incident instead of opening
        this drill's. Drill incidents of this scratch database still open are closed first, said
        in the notes (only ``drill`` incidents of this database: nothing real is touched)."""
        for old in self.incidents.list():
            if old.get("drill") and old.get("database") == self.db_name and old["status"] != "closed":
                if old.get("read_only") or old.get("paused_features") or old.get("containment"):
                    self.incidents.lift(old["id"], self.db, actor=ACTOR)
                self._close(old["id"], "an earlier drill on this scratch database was interrupted before it "
                                       "closed its incident; superseded by a new drill run")
                self.res.notes.append(f"closed drill incident {old['id']} left open by an interrupted drill")

    def _abandon(self, why: str) -> None:
        """A failed drill leaves no live drill incident and no contained collection behind: the
        incident is closed with the failure as its root cause (its timeline keeps everything)."""
        iid = self.res.incident_id
        if iid is None:
            return
        try:
            self._lift()
            self._close(iid, f"drill failed: {why}")
            self._postmortem()
        except Exception as exc:  # noqa: BLE001 - keep the first failure as the story
            self.res.notes.append(f"could not close drill incident {iid}: {exc}")

    def _close(self, iid: int, why: str) -> None:
        inc = self.incidents
        inc.note(iid, why, actor=ACTOR)
        status = inc.get(iid)["status"]
        if status == "open":
            inc.acknowledge(iid, by=ACTOR)
            status = "acknowledged"
        if status not in ("resolved", "closed"):
            inc.resolve(iid, resolution=why[:500], actor=ACTOR)
        if status != "closed":
            inc.review(iid, root_cause=why[:2000], actor=ACTOR)
            inc.close(iid, actor=ACTOR)


class Manifest_only:
    """The manifest as expectations.score sees it: only kinds it knows (the drill's own
    dropped-index and kinds added later are graded by the runner)."""

    def __init__(self, manifest: Manifest, known: dict):
        self.injections = [i for i in manifest.injections if i.kind in known]


class _Bar:
    """The engine's per-collection progress (start/advance/done) as ticks of the drill's sink."""

    def __init__(self, sink: Sink, label: str, total: int):
        self.sink, self.label, self.total, self.n = sink, label, total, 0

    def start(self, collection: str, total: int | None) -> None:
        self.sink.tick(self.label, self.n, self.total)

    def advance(self, collection: str, n: int) -> None:
        self.n += n
        self.sink.tick(self.label, self.n, self.total)

    def done(self, collection: str) -> None:
        pass


def check_scratch(db: Database) -> None:
    """The drill drops its database: refuse one holding data the Fluxa generator did not make."""
    names = [c for c in db.list_collection_names() if not c.startswith("system.")]
    if not names:
        return
    meta = db[m.META_COLLECTION].find_one({"_id": "generation"})
    if meta is None and any(db[c].estimated_document_count() for c in names):
        raise FluxaError(f"database {db.name!r} holds data the Fluxa generator did not make; the drill drops "
                         "its database first",
                         "run the drill on a scratch database: leave --db out (fluxa_drill) or name a new one")


def run_scenario(uri: str, client, db_name: str, name: str, policy, store, incidents,
                 opts: DrillOptions | None = None, sink: Sink | None = None) -> ScenarioResult:
    if name not in SCENARIOS:
        raise FluxaError(f"unknown drill scenario {name!r}", "one of: " + ", ".join(SCENARIOS) + ", or all")
    return Drill(uri, client, db_name, SCENARIOS[name], policy, store, incidents, opts, sink).run()

