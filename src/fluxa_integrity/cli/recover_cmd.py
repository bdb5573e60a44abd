"""``fluxa-integrity recover``: the playbook's recovery recipes as plans - dry run, apply, verify, undo.

A thin face over recovery/engine.py. ``recover plan`` has one subcommand per registered recipe,
built from the recipe's ``Param`` list (str, int, float, bool, datetime as ISO-8601 text, and
``multiple`` as a repeatable option), so a recipe module never touches cli/. Every command takes
``--json``; apply and undo show progress bars. A plan names the database it was made for, so the
commands that take a plan id take ``--uri`` but no ``--db``. ``recover apply --apply`` runs the
plan's verify right after an apply that left no conflict (``--no-verify`` skips it), with the URI
it resolved, shown and on the timeline as `recover verify` would; ``--force-id`` text is passed as
typed and the engine matches it against the plan's ids (an unmatched one is exit 2).
"""

from __future__ import annotations

import inspect
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FluxaError
from ..mongo.connection import connect
from ..restore.authority import parse_incident_id
from ..store import open_store
from .common import EXIT_PROBLEMS, DbOpt, JsonOpt, PolicyOpt, UriOpt, console, emit_json, incidents_api, policy_from
from .common import target_option_values
from .progress_bars import BarSink, bars
from .render import Col, field_changes, literal, print_table, value, when

UTC = timezone.utc
PlanArg = typer.Argument(..., help="Plan id (printed by `recover plan`; see `recover list`).")
SamplesOpt = typer.Option(5, "--samples", min=0, help="How many changes to show per collection and change kind.")
ByOpt = typer.Option(None, "--by", help="Who does it (recorded with the plan and on the incident's timeline).")

app = typer.Typer(help="Recover with the playbook's recipes: plan (a dry run), apply with an incident, verify, "
                  "undo.", no_args_is_help=True)
plan_app = typer.Typer(help="Make a recovery plan with a recipe and show its dry run (nothing is written to "
                       "the application database).", no_args_is_help=True)
app.add_typer(plan_app, name="plan")


def _engine():
    from ..recovery import engine

    return engine


def timeline_line(timeline: dict | None) -> None:
    """Says whether a run reached its incident's timeline (restore promote/undo use it too)."""
    if timeline and timeline.get("recorded"):
        console.print(f"recorded on incident {timeline['incident']}'s timeline", highlight=False)
    elif timeline:
        console.print(f"[yellow]warning:[/] not recorded on incident {timeline['incident']}'s timeline: "
                      f"{timeline['error']}", highlight=False)


def _plan_db(plan_id: str, uri: Optional[str]):
    """The live database a plan was made for, on the server --uri names."""
    from ..recovery.plans_store import get_row

    store = open_store()
    row = get_row(store, plan_id)
    target = target_option_values(uri, row["database"])
    return store, row, connect(target.uri)[row["database"]], target.uri


def show_dry_run(dry, plan_id: str | None, next_step: bool = True) -> None:
    title = f"plan [bold]{plan_id}[/]" if plan_id else "unsaved plan"
    console.print(f"{title} ({dry.recipe}) for database {dry.database}, read at "
                  f"{when(dry.source_point)}" + (f": {dry.summary}" if dry.summary else ""), highlight=False)
    rows = []
    for name, per in dry.counts.items():
        st = dry.states.get(name, {})
        rows.append([name, *(str(per.get(op, 0)) for op in ("insert", "replace", "update", "delete")),
                     str(st.get("todo", 0)), str(st.get("done", 0)), str(st.get("conflict", 0))])
    print_table(console, None, [Col("collection"), Col("insert", justify="right"), Col("replace", justify="right"),
                                Col("update", justify="right"), Col("delete", justify="right"),
                                Col("to write", justify="right"), Col("already done", justify="right"),
                                Col("conflicts", justify="right")], rows)
    for s in dry.samples:
        console.print(f"  {s['op']} {s['collection']} _id {literal(s['id'])}: {s['reason']}"
                      + (f" [{s['data_class']}]" if s.get("data_class") else ""), highlight=False, markup=False)
        for line in field_changes(s["fields"]):
            console.print(f"      {line}", highlight=False, markup=False)
    if dry.conflicts_total:
        console.print(f"[yellow]{dry.conflicts_total} conflict(s)[/]: changed in live since the plan read them; "
                      "apply skips them unless forced with --force-id", highlight=False)
        for c in dry.conflicts:
            console.print(f"  {c['op']} {c['collection']} _id {literal(c['id'])}"
                          + ("" if c["live_exists"] or c["op"] == "insert" else " (deleted in live)")
                          + (f": held - {c['held']}" if c.get("held") else ": planned -> live now"),
                          highlight=False, markup=False)
            for line in field_changes(c["fields"]):
                console.print(f"      {line}", highlight=False, markup=False)
        if dry.conflicts_total > len(dry.conflicts):
            console.print(f"  ... and {dry.conflicts_total - len(dry.conflicts)} more (--json lists the first "
                          f"{len(dry.conflicts)})", highlight=False)
    for u in dry.unresolved:
        console.print(f"[yellow]not fixed by this plan[/]: {u}", highlight=False, markup=False)
    if dry.verify:
        console.print("verify runs: " + ", ".join(dry.verify), highlight=False)
    if next_step and plan_id:
        console.print(f"dry run: nothing written; apply with `fluxa-integrity recover apply {plan_id} "
                      "--incident ID --apply`", highlight=False)


def _dry_json(dry) -> dict:
    return dry.as_dict()


# -- recover plan <recipe> --------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = " ".join((text or "").split()).replace("[", "(").replace("]", ")")
    return text if text.endswith(".") else text + "."


def _option_for(p) -> inspect.Parameter:
    from ..recovery.model import Param  # noqa: F401 - the shape read here

    key = p.name.replace("-", "_")
    help_text = _sentence(p.help)
    if p.type is datetime:
        help_text = help_text[:-1] + " (ISO-8601, UTC unless an offset is given, e.g. 2026-11-25T21:40:00Z)."
    if p.type is bool and not p.multiple:
        opt = typer.Option(bool(p.default), f"--{p.name}/--no-{p.name}", help=help_text)
        return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=bool)
    base = str if p.type is datetime else p.type
    if p.multiple:
        ann = Optional[List[base]]
        default = list(p.default) if p.default else None
        help_text = help_text[:-1] + " (repeat the option for several)."
    else:
        ann = Optional[base]
        default = p.default.isoformat() if isinstance(p.default, datetime) else p.default
    opt = typer.Option(... if p.required else default, f"--{p.name}", help=help_text)
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)


_COMMON = {"uri": UriOpt, "db": DbOpt, "policy": PolicyOpt, "samples": SamplesOpt, "by": ByOpt, "json_out": JsonOpt}
_COMMON_ANN = {"uri": Optional[str], "db": Optional[str], "policy": Optional[Path], "samples": int,
               "by": Optional[str], "json_out": bool}


def _make_plan_command(spec) -> None:
    reserved = {p.name.replace("-", "_") for p in spec.params} & set(_COMMON)
    if reserved:
        raise RuntimeError(f"recipe {spec.name}: parameter(s) {sorted(reserved)} clash with the command's own options")

    def command(**kw) -> None:
        common = {k: kw.pop(k) for k in list(_COMMON)}
        _run_plan(spec.name, kw, **common)

    params = [_option_for(p) for p in spec.params]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=_COMMON_ANN[k])
               for k, opt in _COMMON.items()]
    command.__signature__ = inspect.Signature(params)
    command.__name__ = spec.name.replace("-", "_")
    doc = _sentence(spec.summary) + f" ({spec.feature})"
    plan_app.command(spec.name, help=doc)(command)


def _run_plan(name: str, params: dict, uri, db, policy, samples, by, json_out) -> None:
    from ..recovery.model import RecipeContext

    engine = _engine()
    target = target_option_values(uri, db)
    store = open_store()
    live = connect(target.uri)[target.db]
    with bars(json_out) as progress:
        tasks: dict = {}

        def tick(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done, total=total)

        ctx = RecipeContext(db=live, policy=policy_from(policy), store=store, now=datetime.now(UTC), progress=tick)
        plan = engine.make_plan(ctx, name, params, actor=by)
        dry = engine.dry_run(live, plan, samples=samples)
    if json_out:
        emit_json({"plan_id": plan.id, **_dry_json(dry)})
        return
    show_dry_run(dry, plan.id)


def _register_recipes() -> None:
    from ..recovery.registry import recipes

    for spec in sorted(recipes().values(), key=lambda s: s.name):
        _make_plan_command(spec)


_register_recipes()


# -- the other commands ------------------------------------------------------------------------------


@app.command("recipes")
def list_recipes(json_out: bool = JsonOpt) -> None:
    """The recipes `recover plan` knows, with the playbook feature each implements and its options."""
    from ..recovery.registry import recipes

    specs = sorted(recipes().values(), key=lambda s: s.name)
    data = [{"name": s.name, "feature": s.feature, "summary": s.summary,
             "params": [{"name": p.name, "type": p.type.__name__, "multiple": p.multiple, "required": p.required,
                         "default": p.default, "help": p.help} for p in s.params]} for s in specs]
    if json_out:
        emit_json(data)
        return
    print_table(console, None, [Col("recipe", id=True), Col("feature"), Col("summary"), Col("options")],
                [[d["name"], d["feature"], d["summary"],
                  " ".join(f"--{p['name']}" + ("*" if p["required"] else "") for p in d["params"])] for d in data])
    console.print("* required; `fluxa-integrity recover plan RECIPE --help` explains each option", highlight=False)


@app.command("show")
def show(plan_id: str = PlanArg, samples: int = SamplesOpt, uri: Optional[str] = UriOpt,
         json_out: bool = JsonOpt) -> None:
    """A saved plan, its status and history, and its dry run against the live data now."""
    engine = _engine()
    store, row, live, _ = _plan_db(plan_id, uri)
    plan = engine.load_plan(store, plan_id)
    dry = engine.dry_run(live, plan, samples=samples)
    if json_out:
        emit_json({"plan": row, "dry_run": _dry_json(dry)})
        return
    console.print(f"status: [bold]{row['status']}[/]; made {when(row['created_at'])}"
                  + (f" by {row['actor']}" if row["actor"] else "")
                  + (f"; incident {row['incident_id']}" if row["incident_id"] else "")
                  + (f"; applied {when(row['applied_at'])}" if row["applied_at"] else "")
                  + (f"; verified {when(row['verified_at'])}" if row["verified_at"] else "")
                  + (f"; undone {when(row['undone_at'])}" if row["undone_at"] else ""), highlight=False)
    if row["error"]:
        console.print(f"[red]last error[/]: {row['error']}", highlight=False, markup=False)
    console.print("params: " + ", ".join(f"{k}={value(v)}" for k, v in row["params"].items()), highlight=False,
                  markup=False)
    show_dry_run(dry, plan_id, next_step=row["status"] in ("planned", "applying", "failed"))


def _show_verify(res) -> None:
    if res.note:
        console.print(res.note, highlight=False)
    for f in res.still_open:
        console.print(f"[yellow]still open[/]: {f['rule_id']} ({f['variant']}) on {f['collection']}: "
                      f"{f['count']} document(s), {f['on_plan_documents']} of them changed by the plan - "
                      f"{f['message']}", highlight=False)
    if res.run:
        console.print(f"check run {res.run['id']}: {res.run['closed']} finding(s) closed", highlight=False)
    console.print(f"[green]closed[/]: {', '.join(res.rules) or 'nothing to check'}" if res.closed else
                  "[yellow]still open[/]: the plan did not clear every finding of " + ", ".join(res.rules),
                  highlight=False)
    timeline_line(res.timeline)


@app.command("apply")
def apply(plan_id: str = PlanArg,
          incident: Optional[str] = typer.Option(None, "--incident", help="Open incident authorising the write: "
                                                 "checked first, and the change set goes on its timeline."),
          do_apply: bool = typer.Option(False, "--apply", help="Write. Without it: the dry run against live data now."),
          force_id: Optional[List[str]] = typer.Option(None, "--force-id", help="Write this conflicting document "
                                                       "anyway; it must be a change of the plan (of an applied plan: "
                                                       "a conflict it skipped). Type the _id as the plan shows it: 42, "
                                                       "'\"42\"' for a string, an ObjectId as its 24 hex digits or "
                                                       "'{\"$oid\": \"...\"}'; repeat for several."),
          batch_size: int = typer.Option(200, "--batch-size", min=1, help="Changes journaled and written per batch."),
          verify_after: bool = typer.Option(True, "--verify/--no-verify", help="After an apply that left no "
                                            "conflict, run the plan's checks again (as `recover verify`) and "
                                            "record the result on the timeline; --no-verify skips it."),
          policy: Optional[Path] = PolicyOpt,
          by: Optional[str] = ByOpt, uri: Optional[str] = UriOpt, json_out: bool = JsonOpt) -> None:
    """Apply a plan to the live database: an undo journal is written before each batch; a conflict
    is skipped unless forced. If an apply was interrupted, rerunning it resumes it. Then verify runs.
    Exit 1 when conflicts were left unwritten or verify finds the problem still open."""
    engine = _engine()
    if incident is None:
        raise FluxaError("applying a plan writes to the live database: it needs an open incident",
                         "add --incident ID (`fluxa-integrity incident list`; open one with `incident open`)")
    iid = parse_incident_id(incident)
    incidents = incidents_api()
    incidents.require_open(iid)  # an unknown or closed incident stops here, before anything else
    store, row, live, target_uri = _plan_db(plan_id, uri)
    if not do_apply:
        dry = engine.dry_run(live, engine.load_plan(store, plan_id))
        if json_out:
            emit_json({"dry_run": True, "plan_id": plan_id, "status": row["status"], **_dry_json(dry)})
            return
        show_dry_run(dry, plan_id, next_step=False)
        console.print(f"dry run: nothing written; add --apply to write (incident {iid})", highlight=False)
        return
    pol = policy_from(policy) if verify_after else None  # a bad --policy is refused before anything is written
    with bars(json_out) as progress:
        # --force-id text goes as typed: the engine reads it the way the plan stores its ids
        res = engine.apply_plan(live, store, incidents, plan_id, iid, actor=by, force_ids=list(force_id or []),
                                batch_size=batch_size, progress=BarSink(progress))
    ver = None
    if verify_after and not res.conflicts:
        ver = engine.verify_plan(live, store, incidents, pol, plan_id, uri=target_uri, actor=by)
    if json_out:
        emit_json({**res.as_dict(), "verify": ver.as_dict() if ver is not None else None})
    else:
        for name, c in res.counts.items():
            console.print(f"{name}: {c['written']} written, {c['already']} already done, {c['forced']} forced, "
                          f"{c['conflicts']} conflicts skipped", highlight=False)
        for c in res.conflicts[:20]:
            console.print(f"  conflict: {c['op']} {c['collection']} _id {literal(c['id'])} (changed in live since "
                          "the plan; --force-id writes it)", highlight=False, markup=False)
        console.print(f"[green]plan {plan_id} applied[/]" + (" (resumed)" if res.resumed else "")
                      + (f" [yellow]with {len(res.conflicts)} conflict(s) left unwritten[/]" if res.conflicts else "")
                      + ("" if ver is not None else f"; verify with `fluxa-integrity recover verify {plan_id}`")
                      + f"; undo with `recover undo {plan_id}`", highlight=False)
        timeline_line(res.timeline)
        if ver is not None:
            _show_verify(ver)
    if res.conflicts or (ver is not None and not ver.closed):
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("verify")
def verify(plan_id: str = PlanArg, policy: Optional[Path] = PolicyOpt,
           workers: int = typer.Option(1, "--workers", min=1, help="Processes for the check passes."),
           by: Optional[str] = ByOpt, uri: Optional[str] = UriOpt, json_out: bool = JsonOpt) -> None:
    """Run again the checks whose findings an applied plan should close; record the result on the
    incident's timeline. Exit 0: closed; 1: still open."""
    engine = _engine()
    store, row, live, target_uri = _plan_db(plan_id, uri)
    res = engine.verify_plan(live, store, incidents_api(), policy_from(policy), plan_id, uri=target_uri,
                             actor=by, workers=workers)
    if json_out:
        emit_json(res.as_dict())
    else:
        _show_verify(res)
    if not res.closed:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("undo")
def undo(plan_id: str = PlanArg,
         incident: Optional[str] = typer.Option(None, "--incident", help="Open incident authorising the undo: "
                                                "checked first, and the undo goes on its timeline."),
         yes: bool = typer.Option(False, "--yes", help="Explicit operator confirmation instead of an incident."),
         force: bool = typer.Option(False, "--force", help="Also put back documents changed since the apply "
                                    "(the newer versions are kept in the plan's journal)."),
         by: Optional[str] = ByOpt, uri: Optional[str] = UriOpt, json_out: bool = JsonOpt) -> None:
    """Put back exactly what an applied plan changed (the journaled pre-apply documents). Refused
    when a document changed since the apply, unless --force. If an undo was interrupted, rerunning
    it resumes it."""
    engine = _engine()
    if not (incident or yes):
        raise FluxaError("an undo writes to the live database: tie it to an incident or confirm it",
                         "add --incident ID (preferred) or --yes")
    incidents = incidents_api()
    iid = parse_incident_id(incident) if incident is not None else None
    if iid is not None:
        incidents.require_open(iid)
    store, row, live, _ = _plan_db(plan_id, uri)
    with bars(json_out) as progress:
        res = engine.undo_plan(live, store, incidents, plan_id, incident_id=iid, force=force,
                               progress=BarSink(progress), actor=by)
    if json_out:
        emit_json(res.as_dict())
    else:
        console.print(f"[green]plan {plan_id} undone[/]: " + "; ".join(
            f"{n}: {c['restored']} put back, {c['deleted']} deleted, {c['already']} already as before"
            + (f", {c['superseded']} newer kept in the journal" if c["superseded"] else "")
            for n, c in res.counts.items()), highlight=False)
        timeline_line(res.timeline)
    if not res.finished:
        console.print(f"[yellow]not finished[/]: {len(res.changed)} document(s) changed while the undo ran; rerun "
                      "to finish (--force to put them back too)", highlight=False)
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("list")
def list_plans(database: Optional[str] = typer.Option(None, "--db", help="Only plans for this application "
                                                      "database."),
               limit: int = typer.Option(50, "--limit", min=1, help="How many plans, newest first."),
               json_out: bool = JsonOpt) -> None:
    """Recovery plans, newest first: recipe, database, status, planned changes, incident."""
    rows = _engine().list_plans(open_store(), database, limit)
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no recovery plans yet: make one with `fluxa-integrity recover plan RECIPE`", highlight=False)
        return
    print_table(console, None, [Col("plan", id=True), Col("recipe"), Col("database"), Col("status"),
                                Col("changes"), Col("incident"), Col("made", whole=True)],
                [[r["id"], r["recipe"], r["database"], r["status"],
                  "; ".join(f"{n} " + ", ".join(f"{v} {k}" for k, v in c.items()) for n, c in r["counts"].items())
                  or "none", str(r["incident_id"] or "-"), when(r["created_at"])] for r in rows])
