"""``fluxa-integrity drill SCENARIO``: rehearse one of the playbook's four scenarios end to end
on a scratch database (or all four), and report detection and recovery against the policy.

A thin face over drill/runner.py: resolves the server, store, policy and incident engine once,
shows each phase as it runs (stderr), prints the report (a table, or one JSON document with
--json). Exit 0 only when every scenario brought every affected document back to its pre-fault
copy with every check clean; 1 otherwise (the differing ids are in the report); 2 on bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..drill.report import seconds_text, summary
from ..drill.runner import DrillOptions, Sink, run_scenario
from ..drill.scenarios import SCENARIOS, scenario_names
from .common import EXIT_PROBLEMS, JsonOpt, PolicyOpt, UriOpt, console, emit_json, incidents_api, policy_from
from .render import Col, print_table

DEFAULT_DB = "fluxa_drill"
STATUS = {"ok": "[green]ok[/]", "failed": "[red]FAILED[/]", "missing": "[red]MISSING[/]",
          "skipped": "[yellow]skipped[/]"}


class _Phases(Sink):
    """One line per phase when it ends; a spinner with the current step while it runs."""

    def __init__(self, show: bool):
        self.show = show
        self.status = None
        self.label = ""
        self.last = 0.0

    def phase(self, scenario: str, phase: str, label: str) -> None:
        if not self.show:
            return
        self.label = f"[bold]{scenario}[/] {phase}: {escape(label)}"
        if self.status is None:
            self.status = console.status(self.label)
            self.status.start()
        else:
            self.status.update(self.label)

    def tick(self, label: str, done: int, total: int | None) -> None:
        if not self.show or self.status is None or time.monotonic() - self.last < 0.2:
            return
        self.last = time.monotonic()
        count = f"{done:,}/{total:,}" if total else (f"{done:,}" if done else "")
        self.status.update(f"{self.label} - {escape(label)} {count}")

    def done(self, scenario: str, phase: str, seconds: float, status: str, note: str) -> None:
        if not self.show:
            return
        console.print(f"{scenario:>17} {phase:<8} {seconds:7.1f}s {STATUS.get(status, status)}  {escape(note)}",
                      highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def drill(
    scenario: str = typer.Argument(..., help="The playbook scenario: " + ", ".join(SCENARIOS)
                                   + ", or all (the four in turn)."),
    users: int = typer.Option(40, "--users", min=20, help="Users in the scratch dataset, at least 20 (the faults "
                              "need that many distinct documents); about 50 messages each, the default is small."),
    seed: int = typer.Option(7, "--seed", help="Seeds the dataset and the choice of broken documents."),
    contain: bool = typer.Option(True, "--contain/--no-contain", help="Make the affected collections read-only "
                                 "while recovering (the playbook's containment)."),
    repo: Optional[Path] = typer.Option(None, "--repo", help="Backup repository for the drill's backup and oplog "
                                        "archive (default: backup_repo in config.yaml, else $FLUXA_HOME/backups)."),
    policy: Optional[Path] = PolicyOpt,
    uri: Optional[str] = UriOpt,
    db: Optional[str] = typer.Option(None, "--db", help=f"Scratch database the drill drops and fills (default: "
                                     f"{DEFAULT_DB}); a database holding data the generator did not make is refused."),
    json_out: bool = JsonOpt,
) -> None:
    """Run a data-integrity drill: back up, break, detect, contain, recover, verify, close.

    On a scratch database it generates a dataset, takes a full backup, keeps a pre-fault copy,
    injects the scenario's faults (ground truth kept), detects them, opens a drill incident,
    contains, plans and applies the recovery recipes under it, verifies, lifts, closes it with a
    postmortem and reports time to detect, time to recover, documents lost, RTO and RPO.
    Exit 0 when every affected document equals its pre-fault copy and every check is clean,
    1 otherwise, 2 on bad input."""
    from ..config import resolve_target
    from ..mongo.connection import connect

    names = scenario_names(scenario)  # bad input fails here, before anything is touched
    target = resolve_target(uri, db or DEFAULT_DB)
    pol = policy_from(policy)
    incidents = incidents_api()
    client = connect(target.uri)
    opts = DrillOptions(users=users, seed=seed, repo=repo, contain=contain)
    sink = _Phases(show=not json_out)
    results = []
    try:
        for name in names:
            results.append(run_scenario(target.uri, client, target.db, name, pol, incidents.store, incidents,
                                        opts, sink))
    finally:
        sink.stop()
        client.close()
    out = summary(results)
    if json_out:
        emit_json(out if scenario == "all" else {**out["scenarios"][0], "total": out["total"]})
    else:
        _print(out)
    raise typer.Exit(0 if out["ok"] else EXIT_PROBLEMS)


def _objective(o: dict) -> str:
    if o.get("achieved_seconds") is None:
        return "-"
    met = {True: " met", False: " MISSED"}.get(o.get("met"), "")
    return f"{seconds_text(o['achieved_seconds'])} / {seconds_text(o.get('target_seconds'))}{met}"


def _print(out: dict) -> None:
    for x in out["scenarios"]:
        if x["steps"]:
            print_table(console, f"{x['scenario']}: recovery (incident {x['incident']})",
                        [Col("recipe"), Col("plan", id=True), Col("changes", justify="right"), Col("status"),
                         Col("verified"), Col("seconds", justify="right")],
                        [[s["recipe"], s.get("plan") or "-", str(s.get("changes", "-")), s.get("status", "-"),
                          {True: "closed", False: "OPEN"}.get(s.get("verified"), "-"),
                          f"{sum((s.get('seconds') or {}).values()):.1f}"] for s in x["steps"]])
        for label, ids in (x["differing_ids"] or {}).items():
            for place, some in ids.items():
                console.print(f"[red]{label}[/] in {place}: " + ", ".join(map(str, some)), highlight=False,
                              soft_wrap=True)
        for note in x["notes"]:
            console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    cols = [Col("scenario", whole=True), Col("detect", justify="right"), Col("recover", justify="right"),
            Col("lost", justify="right"), Col("RTO achieved / target"), Col("RPO achieved / target"),
            Col("checks"), Col("result")]
    rows = [[x["scenario"], seconds_text(x["time_to_detect_seconds"]), seconds_text(x["time_to_recover_seconds"]),
             "-" if x["documents_lost"] is None else str(x["documents_lost"]), _objective(x["rto"]),
             _objective(x["rpo"]), "clean" if x["checks_clean"] else "NOT CLEAN", "pass" if x["ok"] else "FAIL"]
            for x in out["scenarios"]]
    print_table(console, "drill report", cols, rows)
    t = out["total"]
    verdict = "[green]drill passed[/]" if out["ok"] else f"[red]drill failed[/]: {', '.join(t['failed'])}"
    console.print(f"{verdict} - {t['passed']}/{t['scenarios']} scenarios, "
                  f"{'-' if t['documents_lost'] is None else t['documents_lost']} documents lost, "
                  f"{t['seconds']:.1f}s", highlight=False)
