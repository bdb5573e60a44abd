"""``fluxa-integrity policy``: show the playbook-as-data, validate a policy file, print its JSON Schema."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..errors import FluxaError
from ..policy.json_schema import policy_json_schema
from ..policy.loader import PolicyError, load_policy
from ..policy.models import Policy
from .common import EXIT_ERROR, JsonOpt, console, emit_json

app = typer.Typer(help="The data-integrity policy: criticality classes, schedules, severity, clocks, "
                       "escalation, response phases, templates and rules.", no_args_is_help=True)


class Section(str, Enum):
    data_classes = "data-classes"
    checks = "checks"
    backup = "backup"
    severity = "severity"
    escalation = "escalation"
    phases = "phases"
    templates = "templates"
    rules = "rules"


# Policy fields each section shows (severity includes the SLA clocks, escalation the roles).
SECTION_FIELDS = {
    Section.data_classes: ["data_classes"], Section.checks: ["check_schedule"], Section.backup: ["backup"],
    Section.severity: ["severity", "clocks"], Section.escalation: ["escalation", "roles"],
    Section.phases: ["phases"], Section.templates: ["templates"], Section.rules: ["collections"],
}

FileOpt = typer.Option(None, "--file", "-f", help="Policy file (default: the packaged Chatbot Fluxa policy).")


@app.command()
def show(
    file: Optional[Path] = FileOpt,
    section: Optional[Section] = typer.Option(None, "--section", "-s", help="Show one section only."),
    json_out: bool = JsonOpt,
) -> None:
    """Show the policy as tables (or as JSON, which is also a valid policy file)."""
    policy = load_policy(file)
    sections = [section] if section else list(Section)
    if json_out:
        dump = policy.model_dump(mode="json")
        if section:
            dump = {f: dump[f] for f in SECTION_FIELDS[section]}
        emit_json(dump)
        return
    for sec in sections:
        RENDER[sec](policy)


@app.command()
def validate(
    file: Path = typer.Argument(..., help="The policy file (YAML) to check."),
    json_out: bool = JsonOpt,
) -> None:
    """Check a policy file: exit 0 when valid, 2 with every problem located by file:line:column."""
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        if json_out:
            emit_json({"valid": False, "file": str(file), "error": exc.message, "hint": exc.hint,
                       "problems": [p.as_dict() for p in exc.problems]})
        console.print(Text("error: ", style="bold red") + Text(exc.message))
        console.print(Text("hint: ", style="yellow") + Text(exc.hint or ""))
        raise typer.Exit(EXIT_ERROR)
    counts = {"data_classes": len(policy.data_classes), "collections": len(policy.collections),
              "rules": sum(1 for _ in policy.iter_rules())}
    if json_out:
        emit_json({"valid": True, "file": str(file), **counts})
        return
    console.print(Text(f"{file}: valid - {counts['data_classes']} data classes, "
                       f"{counts['collections']} collections, {counts['rules']} rules", style="green"))


@app.command()
def schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the schema to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of a policy file, for editors to validate and complete it (docs/policy.md)."""
    text = json.dumps(policy_json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(f".{output.name}.writing")
    try:  # whole or nothing: an editor may be watching the file
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FluxaError(f"cannot write {output}: {exc.strerror or exc}",
                         "choose a writable path, or print to stdout and redirect") from exc
    console.print(Text(f"wrote {output}", style="green"))


# --- renderers (rich markup off for data: templates are full of [BRACKETS]) ---------------------

def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    return table


def _row(table: Table, *values) -> None:
    table.add_row(*(Text("" if v is None else str(v)) for v in values))


def _data_classes(p: Policy) -> None:
    t = _table("data classes (criticality, recovery objectives)", "class", "title", "criticality", "priority",
               "backup", "retention", "RTO", "RPO", "covers")
    for dc in p.data_classes:
        covers = ", ".join(", ".join(f"{c.collection}.{f}" for f in c.fields) if c.fields else c.collection
                           for c in dc.covers)
        _row(t, dc.name, dc.title, dc.criticality, dc.recovery_priority, dc.backup_frequency, dc.retention,
             dc.rto, dc.rpo, covers)
    console.print(t)


def _checks(p: Policy) -> None:
    t = _table("check schedule", "category", "check", "frequency", "description", "action on failure")
    for cat, s in p.check_schedule.items():
        _row(t, cat, s.title, s.frequency, s.description, s.action_on_failure)
    console.print(t)


def _backup(p: Policy) -> None:
    t = _table("backup schedule and retention", "type", "backup", "frequency", "retention", "verification")
    for kind, b in p.backup.items():
        _row(t, kind, b.title, b.frequency, b.retention or "indefinite", b.verification)
    console.print(t)


def _severity(p: Policy) -> None:
    t = _table("severity", "level", "label", "when")
    for level, label in p.severity.levels.items():
        whens = [f"affected data is {', '.join(r.when_criticality_in)}" for r in p.severity.rules if r.level == level]
        if level == p.severity.default:
            whens.append("default")
        _row(t, level, label, "; ".join(whens))
    console.print(t)
    c = p.clocks
    console.print(Text(f"clocks: acknowledge within {c.acknowledge}, resolve within {c.resolve}, "
                       f"warn {c.warn_before} before a clock runs out"))


def _escalation(p: Policy) -> None:
    console.print(Text("escalation path: " + " -> ".join(p.escalation.path)))
    t = _table("escalation triggers", "when", "severity", "notify")
    for trig in p.escalation.triggers:
        _row(t, trig.when, ", ".join(trig.severity) if trig.severity else "any", trig.notify)
    console.print(t)
    console.print(Text("roles: " + ", ".join(p.roles)))


def _phases(p: Policy) -> None:
    for n, phase in enumerate(p.phases, 1):
        t = _table(f"phase {n}: {phase.name} ({phase.start}-{phase.end})", "step", "item", "text", "owner", "action")
        for step in phase.steps:
            for i, item in enumerate(step.items):
                _row(t, step.title if i == 0 else "", item.id, item.text, item.owner, item.action)
        console.print(t)


def _templates(p: Policy) -> None:
    for name in ("initial", "progress", "resolution"):
        tpl = getattr(p.templates, name)
        console.print(Panel(Text(tpl.text), title=Text(f"{name}: {tpl.title}"), title_align="left"))


_SKIP = {"id", "kind", "category", "description", "enabled"}


def _rules(p: Policy) -> None:
    t = _table("rules", "collection", "id", "kind", "category", "settings")
    for coll, rule in p.iter_rules():
        settings = rule.model_dump(mode="json", exclude=_SKIP, exclude_defaults=True)
        text = ", ".join(f"{k}={v}" for k, v in settings.items())
        _row(t, coll, rule.id + ("" if rule.enabled else " (disabled)"), rule.kind, rule.category, text)
    console.print(t)


RENDER = {Section.data_classes: _data_classes, Section.checks: _checks, Section.backup: _backup,
          Section.severity: _severity, Section.escalation: _escalation, Section.phases: _phases,
          Section.templates: _templates, Section.rules: _rules}
