"""``fluxa-integrity incident``: the playbook's incident process (docs/incidents.md).

Every command takes ``--json`` (one document on stdout) and most take ``--at TIME|+DURATION`` to
record the action at another time than now (replaying a log, scripted drills, tests).
"""

from __future__ import annotations

from datetime import timedelta
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import FluxaError
from ..incidents.api import Incidents
from ..incidents.timeutil import fmt_delta, parse_when
from .common import EXIT_PROBLEMS, DbOpt, JsonOpt, UriOpt, console, csv_list, emit_json, incidents_api
from .render import Col, print_table, when

app = typer.Typer(help="Data-integrity incidents: intake, severity, clocks, escalation, phases, communications, "
                  "postmortem.", no_args_is_help=True)

AtOpt = typer.Option(None, "--at", help="When it happened: ISO 8601 (UTC if no zone) or +DURATION from now "
                     "(default: now).")
ByOpt = typer.Option(None, "--by", help="Who did it (recorded in the timeline).")
IdArg = typer.Argument(..., help="Incident id.")


def _api() -> Incidents:
    return incidents_api()


def _when(value: Optional[str]):
    return parse_when(value) if value else None


def _pairs(values: List[str], what: str = "--set") -> dict:
    out_ = {}
    for v in values or []:
        if "=" not in v:
            raise FluxaError(f"{what} {v!r}: expected NAME=VALUE")
        k, val = v.split("=", 1)
        out_[k.strip().strip("[]")] = val
    return out_


def _show(inc: dict, json_out: bool, extra: str | None = None) -> None:
    if json_out:
        emit_json(inc)
        return
    colour = {"P1": "red", "P2": "yellow"}.get(inc["severity"], "white")
    tags = (" [magenta]DRILL[/]" if inc.get("drill") else "") + \
        (f" (duplicate of {inc['duplicate_of']})" if inc.get("duplicate_of") else "")
    console.print(f"[bold]incident {inc['id']}[/]{tags} [{colour}]{inc['severity']}[/] {inc['status']}: "
                  f"{escape(inc['title'])}", highlight=False)
    console.print(f"  classes: {', '.join(inc['data_classes']) or '-'}; collections: "
                  f"{', '.join(inc.get('places') or inc['collections']) or '-'}; "
                  f"findings: {', '.join(map(str, inc['findings'])) or '-'}",
                  highlight=False)
    if inc.get("scope"):
        sc = inc["scope"]
        console.print(f"  scope: {sc.get('documents')} documents, {sc.get('users')} users, {sc.get('extent')}, "
                      f"{sc.get('trend')}", highlight=False)
    if inc["roles"]:
        console.print("  roles: " + ", ".join(f"{r}: {p}" for r, p in inc["roles"].items()), highlight=False)
    if inc["escalated_to"]:
        console.print(f"  escalated to: {', '.join(inc['escalated_to'])}", highlight=False)
    if inc["read_only"] or inc["paused_features"]:
        console.print(f"  [red]read-only: {inc['read_only']}; paused: {', '.join(inc['paused_features']) or '-'}[/]",
                      highlight=False)
    times = ", ".join(f"{k} {v[:19]}" for k, v in inc["times"].items() if v)
    console.print(f"  {times}", highlight=False)
    if extra:
        console.print(extra, highlight=False)


CollectionsOpt = typer.Option(None, "--collections", help="Comma-separated affected collections, or "
                              "collection.field where the policy classes a field on its own (users.preferences).")
DrillOpt = typer.Option(False, "--drill", help="A drill, not a real incident: it takes future --at times and its "
                        "notifications say [DRILL].")
FindingOpt = typer.Option([], "--finding", help="Link a check finding (repeatable).")


@app.command("open")
def open_(title: str = typer.Option(..., "--title", help="What is wrong, in a line."),
          collections: Optional[str] = CollectionsOpt,
          source: str = typer.Option("manual", "--source", help="report, event, finding or manual."),
          kind: Optional[str] = typer.Option(None, "--kind", help="Report kind (user, support, internal, alert) or "
                                             "system event (failed_migration, incomplete_import, ...)."),
          finding: List[int] = FindingOpt,
          description: str = typer.Option("", "--description", help="What is known so far."),
          started_at: Optional[str] = typer.Option(None, "--started-at", help="When the problem began, if known."),
          db: Optional[str] = typer.Option(None, "--db", help="The application database affected, if known."),
          drill: bool = DrillOpt,
          at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Open an incident (severity from the policy: P1 when a critical data class is affected)."""
    if source not in ("report", "event", "finding", "manual"):
        raise FluxaError(f"unknown source {source!r}", "report, event, finding or manual")
    api = _api()
    places = csv_list(collections) or []
    if source == "report":
        inc = api.report(kind or "internal", title, description, places, by, _when(at), list(finding), db, drill)
    elif source == "event":
        if not kind:
            raise FluxaError("a system event needs --kind", "failed_migration, incomplete_import, incomplete_export, "
                             "storage_failure, replication_failure or sync_failure")
        inc = api.system_event(kind, title, description, places, _when(at), list(finding), db, drill)
    else:
        if source == "finding" and not finding:
            raise FluxaError("--source finding needs at least one --finding ID")
        inc = api.open(title, places, source, kind, description, list(finding), db,
                       issue_started_at=_when(started_at), at=_when(at), actor=by, drill=drill)
    _show(inc, json_out)


@app.command()
def report(kind: str = typer.Argument(..., help="user, support, internal or alert."),
           title: str = typer.Option(..., "--title", help="What is wrong, in a line."),
           description: str = typer.Option("", "--description", help="What the reporter said."),
           collections: Optional[str] = CollectionsOpt, finding: List[int] = FindingOpt,
           db: Optional[str] = typer.Option(None, "--db", help="The application database affected, if known."),
           drill: bool = DrillOpt,
           at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """A user, support or internal report opens an incident."""
    _show(_api().report(kind, title, description, csv_list(collections) or [], by, _when(at), list(finding), db,
                        drill), json_out)


@app.command()
def event(kind: str = typer.Argument(..., help="failed_migration, incomplete_import, incomplete_export, "
                                     "storage_failure, replication_failure or sync_failure."),
          title: Optional[str] = typer.Option(None, "--title", help="What is wrong (default: the event's name)."),
          description: str = typer.Option("", "--description", help="What is known so far."),
          collections: Optional[str] = CollectionsOpt, finding: List[int] = FindingOpt,
          db: Optional[str] = typer.Option(None, "--db", help="The application database affected, if known."),
          drill: bool = DrillOpt,
          at: Optional[str] = AtOpt, json_out: bool = JsonOpt) -> None:
    """A system event opens an incident."""
    _show(_api().system_event(kind, title, description, csv_list(collections) or [], _when(at), list(finding), db,
                              drill), json_out)


@app.command()
def intake(db: Optional[str] = typer.Option(None, "--db", help="Only the last run on this database."),
           drill: bool = typer.Option(False, "--drill", help="The incidents it opens are drills."),
           at: Optional[str] = AtOpt, json_out: bool = JsonOpt) -> None:
    """Open or join incidents for the open findings of the last check run (policy grouping, dedup)."""
    res = _api().intake(db, _when(at), drill)
    if json_out:
        emit_json(res)
    else:
        console.print(f"run {res['run_id']}: opened {res['opened'] or 'none'}, attached "
                      f"{ {k: v for k, v in res['attached'].items()} or 'none'}, already handled "
                      f"{res['skipped'] or 'none'}", highlight=False)


@app.command("list")
def list_(status: Optional[str] = typer.Option(None, "--status", help="A status, or 'live' (not resolved yet)."),
          json_out: bool = JsonOpt) -> None:
    """Incidents, newest first."""
    rows = _api().list(status)
    if json_out:
        emit_json(rows)
        return
    cells = []
    for r in rows:  # render.print_table shows cells as text: titles need no markup escaping
        state = r["status"] + (f" (duplicate of {r['duplicate_of']})" if r.get("duplicate_of") else "")
        cells.append([str(r["id"]), r["severity"], state, ("[DRILL] " if r.get("drill") else "") + r["title"],
                      ", ".join(r["data_classes"]), when(r["times"]["open"])])
    print_table(console, "incidents", [Col("id", id=True), Col("sev"), Col("status"), Col("title"), Col("classes"),
                                       Col("opened")], cells)


@app.command()
def show(incident: int = IdArg, json_out: bool = JsonOpt) -> None:
    """One incident with its timeline."""
    api = _api()
    inc = api.get(incident)
    tl = api.timeline(incident)
    if json_out:
        emit_json({**inc, "clocks": api.clocks(incident), "timeline": tl,
                   "notifications": api.notifications(incident), "publications": api.publications(incident)})
        return
    _show(inc, False)
    _print_clocks(api.clocks(incident))
    # details are whole (they name backups, restores, promotions to type next); cells are text, not markup
    print_table(console, "timeline", [Col("#", id=True), Col("time", whole=True), Col("event"), Col("by"), Col("details")],
                [[str(e["seq"]), when(e["at"]), e["kind"], e["actor"],
                  "; ".join(f"{k}: {_plain(v)}" for k, v in e["data"].items() if v not in (None, "", [], {}))]
                 for e in tl])


def _plain(v) -> str:
    """A timeline value as a person reads it: lists joined, mappings as key value pairs."""
    if isinstance(v, list):
        return ", ".join(_plain(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {_plain(x)}" for k, x in v.items())
    return str(v)


def _left(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return fmt_delta(timedelta(seconds=seconds)) + (" overdue" if seconds < 0 else " left")


def _print_clocks(view: dict) -> None:
    for c in view["clocks"]:
        colour = {"overdue": "red", "missed": "red", "running": "yellow", "met": "green"}.get(c["state"], "white")
        console.print(f"  {c['clock']} by {c['deadline'][:16]}Z: [{colour}]{c['state']}[/]"
                      + (f", {_left(c['left'])}" if c["left"] is not None else ""), highlight=False)
    nxt = view["next_escalation"]
    if nxt:
        when = "now (at the next tick)" if nxt["in"] <= 0 else f"in {fmt_delta(timedelta(seconds=nxt['in']))}"
        console.print(f"  next escalation: {', '.join(nxt['roles'])} at {nxt['at'][:16]}Z ({when}) if the "
                      f"{nxt['clock']} target is missed", highlight=False)
    else:
        console.print("  next escalation: none scheduled by the clocks", highlight=False)


@app.command()
def clocks(incident: int = IdArg, at: Optional[str] = typer.Option(None, "--at", help="Evaluate at this time "
                                                                     "(ISO 8601 or +DURATION; default: now)."),
           json_out: bool = JsonOpt) -> None:
    """Each deadline, time left, phase windows and the next escalation (reads only)."""
    view = _api().clocks(incident, _when(at))
    if json_out:
        emit_json(view)
        return
    console.print(f"[bold]incident {incident}[/] clocks at {view['at'][:16]}Z", highlight=False)
    _print_clocks(view)
    table = Table(title="phase windows")
    for col in ("phase", "ends (UTC)", "state"):
        table.add_column(col, overflow="fold")
    for p in view["phases"]:
        table.add_row(p["name"], p["ends_at"][:16], "done" if p["done"] else _left(p["left"]))
    console.print(table)


@app.command()
def ack(incident: int = IdArg, at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Acknowledge: the response has begun (stops the acknowledge clock)."""
    _show(_api().acknowledge(incident, by, _when(at)), json_out)


@app.command()
def assign(incident: int = IdArg, role: str = typer.Option(..., "--role", help="A role of the policy."),
           person: str = typer.Option(..., "--person", help="Who takes the role."),
           at: Optional[str] = AtOpt, by: Optional[str] = ByOpt,
           json_out: bool = JsonOpt) -> None:
    """Assign a person to a role (Incident Commander, Technical Lead, Database Administrator, ...)."""
    _show(_api().assign(incident, role, person, _when(at), by), json_out)


@app.command()
def escalate(incident: int = IdArg, reason: str = typer.Option(..., "--reason", help="Why (recorded and sent)."),
             severity: Optional[str] = typer.Option(None, "--severity", help="New level (higher or lower)."),
             notify: Optional[str] = typer.Option(None, "--notify", help="A role on the escalation path."),
             at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Escalate or de-escalate by hand, with a reason."""
    _show(_api().escalate(incident, reason, severity, notify, _when(at), by), json_out)


@app.command()
def note(incident: int = IdArg, text: str = typer.Argument(..., help="The note's text."), at: Optional[str] = AtOpt,
         by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Add a note to the timeline."""
    _show(_api().note(incident, text, _when(at), by), json_out)


@app.command()
def status(incident: int = IdArg, to: str = typer.Argument(..., help="investigating, recovering, resolved, ..."),
           note_: Optional[str] = typer.Option(None, "--note", help="Why, in a line (recorded and sent)."),
           recovery_point: Optional[str] = typer.Option(None, "--recovery-point", help="Time the data was restored to."),
           at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Move the incident along its lifecycle."""
    _show(_api().set_status(incident, to, note_, _when(at), by, recovery_point=_when(recovery_point)), json_out)


@app.command()
def resolve(incident: int = IdArg, resolution: Optional[str] = typer.Option(None, "--resolution",
                                                                             help="How it was resolved (brief)."),
            recovery_point: Optional[str] = typer.Option(None, "--recovery-point", help="Time the data was restored to."),
            at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Resolve (needs an acknowledged incident)."""
    _show(_api().resolve(incident, resolution, _when(at), by, _when(recovery_point)), json_out)


@app.command()
def close(incident: int = IdArg,
          duplicate_of: Optional[int] = typer.Option(None, "--duplicate-of", help="Close it as a duplicate of this "
                                                     "incident, moving its findings there (from any status)."),
          at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Close a resolved incident (needs the root cause: `incident postmortem ID --root-cause`), or a duplicate."""
    api = _api()
    if duplicate_of is not None:
        api.merge(duplicate_of, [incident], _when(at), by)
        _show(api.get(incident), json_out)
        return
    _show(api.close(incident, _when(at), by), json_out)


@app.command()
def attach(incident: int = IdArg, finding: List[int] = typer.Option([], "--finding", help="A check finding to "
                                                                      "link (repeatable)."),
           at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Attach check findings to an incident (scope, classes and severity follow)."""
    _show(_api().attach_findings(incident, list(finding), _when(at), by), json_out)


@app.command()
def merge(incident: int = typer.Argument(..., help="The incident that stays."),
          duplicates: List[int] = typer.Argument(..., help="Incidents to close as its duplicates."),
          reason: Optional[str] = typer.Option(None, "--reason", help="Why they are the same (recorded)."),
          at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Merge duplicates into one incident: their findings, backups and restores move over; they close."""
    _show(_api().merge(incident, list(duplicates), _when(at), by, reason), json_out)


@app.command()
def link(incident: int = IdArg,
         backup: List[str] = typer.Option([], "--backup", help="Backup id or unique prefix (repeatable)."),
         restore: List[str] = typer.Option([], "--restore", help="Restore run id or promotion id (repeatable)."),
         recovery_point: Optional[str] = typer.Option(None, "--recovery-point", help="Time the data was restored to."),
         started_at: Optional[str] = typer.Option(None, "--started-at", help="When the problem began."),
         at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Link backups and restores; set the recovery point and when the problem began."""
    _show(_api().link(incident, list(backup), list(restore), _when(recovery_point), _when(started_at), _when(at), by),
          json_out)


@app.command()
def phase(incident: int = IdArg, item: Optional[str] = typer.Argument(None, help="Checklist item id."),
          done: bool = typer.Option(False, "--done", help="Tick the item."),
          run: bool = typer.Option(False, "--run", help="Carry out the item's action, then tick it."),
          owner: Optional[str] = typer.Option(None, "--owner", help="Reassign the item to a role."),
          note_: Optional[str] = typer.Option(None, "--note", help="A note on the item."),
          param: List[str] = typer.Option([], "--param", help="Action parameter NAME=VALUE (pause_features: "
                                          "features=a,b)."),
          set_: List[str] = typer.Option([], "--set", help="Template value for communication actions."),
          at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """The five phases' checklists with elapsed time against their windows; tick or run an item."""
    api = _api()
    if item:
        if not (done or run or owner):
            raise FluxaError("say what to do with the item", "--done, --run or --owner ROLE")
        res = api.complete_item(incident, item, note_, owner, run, _pairs(param, "--param"), _pairs(set_),
                                _when(at), by)
        if json_out:
            emit_json(res)
            return
        ar = res.get("action_result")
        if ar:
            colour = "green" if ar.get("status") == "done" else "yellow"
            console.print(f"[{colour}]{item}: {ar.get('status')}[/] {escape(str(ar.get('message', '')))}",
                          highlight=False)
        if ar and ar.get("status") != "done":
            raise typer.Exit(EXIT_PROBLEMS)
    view = api.checklist(incident, _when(at))
    if json_out:
        emit_json(view)
        return
    for ph in view:
        rows = [[it["id"], it["text"], it["owner"],
                 (it["action"] + (" (manual)" if it["manual"] else "")) if it["action"] else "manual",
                 when(it["done_at"]), it["note"] or "-"] for it in ph["items"]]
        print_table(console, f"{ph['name']} ({ph['window'][0]}-{ph['window'][1]}): {ph['state']}, "
                    f"{ph['done']}/{ph['total']}",  # item ids are typed into `incident phase ID ITEM`: whole
                    [Col("item", id=True), Col("what"), Col("owner"), Col("action"), Col("done"), Col("note")], rows)


def _app_db(api: Incidents, incident: int, uri: Optional[str], db: Optional[str]):
    """The application database of a containment: --uri/--db, else the incident's database and
    the usual resolution; resolved once here and handed down connected."""
    from ..config import resolve_target
    from ..mongo.connection import connect

    target = resolve_target(uri, db or api.get(incident)["database"])  # an unknown incident stops here
    return connect(target.uri)[target.db]


def _show_containment(res: dict, json_out: bool, verb: str) -> None:
    if json_out:
        emit_json(res)
        return
    d = res["containment_result"]
    _show(res, False)
    if verb == "contained":
        if d.get("read_only") is not None:
            console.print(f"  [red]read-only[/] on {d['database']}: {', '.join(d['read_only_collections'])}",
                          highlight=False)
        if d.get("paused") is not None:
            console.print(f"  [red]paused[/]: {', '.join(d['paused_features'])}", highlight=False)
    else:
        if d.get("read_only_lifted"):
            console.print(f"  [green]writable again[/] on {d['database']}: {', '.join(d['read_only_lifted'])}",
                          highlight=False)
        if d.get("resumed"):
            console.print(f"  [green]resumed[/]: {', '.join(d['resumed'])}", highlight=False)
    um = d.get("user_management")
    if um:
        colour = "yellow" if um.startswith("not supported") else "green"
        user = d.get("app_user") or {}
        console.print(f"  application user{' ' + user['user'] if user.get('user') else ''}: [{colour}]{escape(um)}[/]"
                      + (" - the flags document is the enforcement" if colour == "yellow" else ""), highlight=False)
    console.print(f"  flags: {d.get('flags')}", highlight=False)


@app.command()
def contain(incident: int = IdArg,
            read_only: bool = typer.Option(False, "--read-only", help="Make collections read-only: the application's "
                                           "flags document says so and the tool's own writers refuse them."),
            collections: Optional[str] = typer.Option(None, "--collections", help="Comma-separated collections to "
                                                      "make read-only (default: the incident's; '*' for all)."),
            pause: List[str] = typer.Option([], "--pause", help="A feature to pause (repeatable, or comma-separated)."),
            app_user: Optional[str] = typer.Option(None, "--app-user", help="The application's MongoDB user: its "
                                                   "write roles are revoked until lift, where the server manages "
                                                   "users."),
            app_user_db: str = typer.Option("admin", "--app-user-db", help="The database the application user "
                                            "is defined in."),
            uri: Optional[str] = UriOpt,
            db: Optional[str] = typer.Option(None, "--db", help="Application database (default: the incident's, "
                                             "then $FLUXA_DB, config.yaml, 'fluxa')."),
            at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Contain (phase 1): read-only mode and paused features, enforced and on the timeline."""
    api = _api()
    features = [f for p in pause for f in (csv_list(p) or [])]
    if not read_only and not features:
        raise FluxaError("nothing to contain", "pass --read-only [--collections a,b] and/or --pause FEATURE")
    res = api.contain(incident, _app_db(api, incident, uri, db), read_only, csv_list(collections), features,
                      app_user, app_user_db, _when(at), by)
    _show_containment(res, json_out, "contained")


@app.command()
def lift(incident: int = IdArg,
         read_only: bool = typer.Option(False, "--read-only", help="Lift read-only mode (and give the application "
                                        "user its roles back)."),
         feature: List[str] = typer.Option([], "--feature", help="A paused feature to resume (repeatable)."),
         uri: Optional[str] = UriOpt,
         db: Optional[str] = typer.Option(None, "--db", help="Application database (default: the incident's, "
                                          "then $FLUXA_DB, config.yaml, 'fluxa')."),
         at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Lift containment (phase 5): everything, or only --read-only / --feature F; on the timeline."""
    api = _api()
    features = [f for p in feature for f in (csv_list(p) or [])]
    res = api.lift(incident, _app_db(api, incident, uri, db), read_only, features, _when(at), by)
    _show_containment(res, json_out, "lifted")


@app.command()
def containment(uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt,
                sync: bool = typer.Option(False, "--sync", help="Rewrite the application's flags document from the "
                                          "incidents (after a failed write or a merge)."),
                json_out: bool = JsonOpt) -> None:
    """What is contained on a database: the incidents' record and the flags document the app reads.
    Exit 1 when the two disagree."""
    from ..config import resolve_target
    from ..mongo.connection import connect

    api = _api()
    target = resolve_target(uri, db)
    app_db = connect(target.uri)[target.db]
    if sync:
        api.sync_flags(app_db)
    record = api.containment(target.db)
    mine = {**{"read_only_collections": [], "paused_features": [], "incidents": []},
            **record.get(target.db, {})}
    for k in ("read_only_collections", "paused_features"):  # incidents that name no database count everywhere
        mine[k] = sorted(set(mine[k]) | set(record.get("*", {}).get(k, [])))
    mine["incidents"] = mine["incidents"] + record.get("*", {}).get("incidents", [])
    flags = api.flags(app_db) or {}
    agree = all(sorted(flags.get(k) or []) == mine[k] for k in ("read_only_collections", "paused_features"))
    if json_out:
        emit_json({"database": target.db, "record": mine, "flags": flags or None, "agree": agree})
    else:
        console.print(f"[bold]{target.db}[/]: read-only {', '.join(mine['read_only_collections']) or 'none'}; "
                      f"paused {', '.join(mine['paused_features']) or 'none'}; incidents "
                      f"{', '.join(str(i['id']) for i in mine['incidents']) or 'none'}", highlight=False)
        state = "[green]agrees[/]" if agree else "[red]disagrees[/] (rerun with --sync)"
        console.print(f"  flags document ({'written ' + when(flags['updated_at']) if flags else 'never written'}): "
                      f"{state}", highlight=False)
    raise typer.Exit(0 if agree else EXIT_PROBLEMS)


@app.command()
def comms(incident: int = IdArg, template: str = typer.Argument(..., help="initial, progress or resolution."),
          set_: List[str] = typer.Option([], "--set", help="PLACEHOLDER=VALUE (repeatable), e.g. "
                                         "ESTIMATED_TIME='2 hours'."),
          publish: bool = typer.Option(False, "--publish", help="Record on the status page and notify."),
          at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Render a status-page template from the incident (refused while a placeholder is unfilled)."""
    api = _api()
    res = (api.publish(incident, template, _pairs(set_), _when(at), by) if publish
           else api.render(incident, template, _pairs(set_), _when(at)))
    if json_out:
        emit_json(res)
        return
    print(res["text"])  # verbatim: no wrapping, it is what the status page shows
    if publish:
        console.print(f"[green]published[/] (publication {res['publication']})")


@app.command()
def postmortem(incident: int = IdArg,
               root_cause: Optional[str] = typer.Option(None, "--root-cause", help="The root cause, in a sentence or two."),
               factor: List[str] = typer.Option([], "--factor", help="Contributing factor (repeatable)."),
               lesson: List[str] = typer.Option([], "--lesson", help="Lesson learned (repeatable)."),
               action_item: List[str] = typer.Option([], "--action-item", help="Action item (repeatable)."),
               at: Optional[str] = AtOpt, by: Optional[str] = ByOpt, json_out: bool = JsonOpt) -> None:
    """Fill the root-cause review and print the postmortem (Markdown on stdout)."""
    api = _api()
    if root_cause is not None or factor or lesson or action_item:
        api.review(incident, root_cause, list(factor), list(lesson), list(action_item), _when(at), by)
    res = api.postmortem(incident, _when(at))
    if json_out:
        emit_json(res)
    else:
        print(res["markdown"], end="")


@app.command()
def tick(at: Optional[str] = AtOpt,
         simulate: bool = typer.Option(False, "--simulate", help="Allow a future --at: only drill incidents move, "
                                       "and every row written says simulated."),
         json_out: bool = JsonOpt) -> None:
    """Evaluate every clock at a time (warnings, breaches, escalation; each once) and retry due notifications."""
    res = _api().tick(_when(at), simulate)
    if json_out:
        emit_json(res)
        return
    for e in res["events"]:
        console.print(f"incident {e['incident']}: {e['event']} ({e['clock']}, due {e['due_at'][:16]})", highlight=False)
    r = res["notifications_retried"]
    console.print(f"{len(res['events'])} clock events; notifications retried: {r['sent']} sent, {r['failed']} failed",
                  highlight=False)
    if res["simulated"]:
        console.print(f"simulated: drills only; real incidents left alone: {res['skipped_real_incidents'] or 'none'}",
                      highlight=False)


@app.command("notify-retry")
def notify_retry(incident: Optional[int] = typer.Argument(None, help="Only this incident (default: all)."), at: Optional[str] = AtOpt,
                 json_out: bool = JsonOpt) -> None:
    """Deliver every pending notification now. Exit 1 when some still fail."""
    res = _api().retry_notifications(_when(at), incident)
    if json_out:
        emit_json(res)
    else:
        console.print(f"{res['sent']} sent, {res['failed']} failed", highlight=False)
    raise typer.Exit(EXIT_PROBLEMS if res["failed"] else 0)


@app.command("verify-timeline")
def verify_timeline(incident: Optional[int] = typer.Argument(None, help="Only this incident (default: every incident)."),
                    json_out: bool = JsonOpt) -> None:
    """Check the hash chain of the timelines. Exit 1 when a row was edited or deleted."""
    res = _api().verify_timeline(incident)
    if json_out:
        emit_json(res)
    else:
        for r in res:
            mark = "[green]ok[/]" if r["ok"] else "[red]TAMPERED[/]"
            console.print(f"incident {r['incident']}: {r['rows']} rows {mark}", highlight=False)
            for p in r["problems"]:
                console.print(f"  {p}", highlight=False)
    raise typer.Exit(0 if all(r["ok"] for r in res) else EXIT_PROBLEMS)
