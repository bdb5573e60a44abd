"""``fluxa-integrity monitor run|baseline|status``: the anomaly monitors (S10, S11) and the log
validation monitor (S12) by hand - the same monitors/runner.py functions ``serve`` runs on the
policy's interval. docs/monitors.md."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from pymongo.errors import PyMongoError
from sqlalchemy import func, select

from ..errors import FluxaError
from ..mongo.connection import connect, first_line
from ..store import open_store
from .common import (EXIT_PROBLEMS, DbOpt, JsonOpt, PolicyOpt, UriOpt, console, emit_json, policy_from,
                     target_option_values)
from .render import Col, print_table, when

app = typer.Typer(help="Anomaly monitors over the oplog and application logs: volume, field statistics, "
                  "type drift and validation errors against a learned baseline.", no_args_is_help=True)
UTC = timezone.utc


def _utc(t: Optional[datetime]) -> Optional[datetime]:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _finding_row(f) -> dict:
    return {"rule_id": f.rule_id, "variant": f.variant, "collection": f.collection, "category": f.category,
            "count": f.count, "message": f.message, "data_class": f.data_class,
            "first_doc_time": f.first_doc_time, "last_doc_time": f.last_doc_time, "samples": f.samples[:3]}


@app.command("run")
def run(start: Optional[datetime] = typer.Option(None, "--start", help="Measure only the window from this time, UTC "
                                                  "(with --end); default: every closed interval not measured yet."),
        end: Optional[datetime] = typer.Option(None, "--end", help="End of the --start window (exclusive), UTC."),
        log_file: Optional[list[Path]] = typer.Option(None, "--log-file", help="A JSON-lines application log to read "
                                                      "besides the policy's (repeatable)."),
        policy: Optional[Path] = PolicyOpt, uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt,
        json_out: bool = JsonOpt) -> None:
    """Measure and judge intervals; findings go to the findings store. Exit 1 when this run found anomalies."""
    from ..monitors.runner import run_monitors

    pol = policy_from(policy)
    if (start is None) != (end is None):
        raise FluxaError("--start and --end go together", "give both, or neither for the due intervals")
    start, end = _utc(start), _utc(end)
    if start is not None and end <= start:
        raise FluxaError("--end must be after --start", "the window is [start, end)")
    target = target_option_values(uri, db)
    store = open_store()
    client = connect(target.uri)
    try:
        rep = run_monitors(client, store, target.db, pol, intervals=[(start, end)] if start else None,
                           log_files=list(log_file or []))
    except PyMongoError as exc:
        raise FluxaError(f"monitor run failed: {first_line(exc)}", "is the server up? the run recorded nothing") from exc
    finally:
        client.close()
    if json_out:
        emit_json({"db": target.db, "run_id": rep.run_id, "intervals": rep.intervals,
                   "findings": [_finding_row(f) for f in rep.findings], "judged": len(rep.judged),
                   "summary": rep.summary, "warnings": rep.warnings, "seconds": round(rep.seconds, 3)})
    else:
        for w in rep.warnings:
            console.print(f"[yellow]warning[/]: {w}", highlight=False)
        if not rep.intervals:
            console.print(f"no closed {pol.monitors.interval} interval to measure yet")
        for i in rep.intervals:
            vol = ", ".join(f"{c} +{v['inserts']}/~{v['updates']}/-{v['deletes']}" for c, v in i["collections"].items()
                            if v["inserts"] or v["updates"] or v["deletes"])
            console.print(f"{i['start'][:19]}Z..{i['end'][11:19]}Z {'' if i['complete'] else '[red]incomplete[/] '}"
                          f"{i['entries']} oplog entries; {vol or 'no writes'}"
                          + (f"; log errors {i['logs']['errors']}" if i.get("logs", {}).get("errors") else ""),
                          highlight=False)
        if rep.findings:
            print_table(console, f"monitor findings (run {rep.run_id})",
                        [Col("rule", id=True), Col("variant"), Col("count", justify="right"), Col("message")],
                        [[f.rule_id, f.variant, str(f.count), f.message] for f in rep.findings])
        else:
            console.print(f"no anomalies; {len(rep.judged)} metrics judged")
    raise typer.Exit(EXIT_PROBLEMS if rep.findings else 0)


@app.command("baseline")
def baseline(learn: bool = typer.Option(False, "--learn", help="Learn the field profile of each monitored collection "
                                        "again from its current documents (`schema infer`)."),
             collection: Optional[str] = typer.Option(None, "--collection", help="Only this collection."),
             policy: Optional[Path] = PolicyOpt, uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt,
             json_out: bool = JsonOpt) -> None:
    """The baseline the next interval will be judged against, per collection and volume metric, and the learned profiles."""
    from ..monitors.runner import (LOGS, VOLUME, Judge, floor, learn_profiles, load_history, load_profiles,
                                   monitored, unexplained)

    pol = policy_from(policy)
    target = target_option_values(uri, db)
    store = open_store()
    if collection is not None and collection not in pol.collections:
        raise FluxaError(f"unknown collection {collection!r}", f"the policy's collections: {', '.join(pol.collections)}")
    learned = {}
    if learn:
        client = connect(target.uri)
        try:
            learned = learn_profiles(client[target.db], store, pol, [collection] if collection else None)
        finally:
            client.close()
    m = pol.monitors
    at = floor(datetime.now(UTC), m.interval_delta)
    history = load_history(store, target.db, at - m.training_delta, at)
    profiles = load_profiles(store, target.db)
    judge = Judge(pol, target.db, profiles)
    rows = []
    for coll in [collection] if collection else monitored(pol):
        for metric in VOLUME + ("count",):
            get = (lambda mt, k=metric: mt.get(k, 0)) if metric in VOLUME else unexplained
            b = judge._baseline(history.get(coll, []), at, get)
            rows.append({"collection": coll, "metric": metric, "history": len(history.get(coll, [])),
                         **({"median": b.median, "scale": b.scale, "seasonal": b.seasonal, "points": b.n,
                             "band": [b.median - max(m.z * b.scale, m.min_volume_change),
                                      b.median + max(m.z * b.scale, m.min_volume_change)]} if b else
                            {"median": None, "learning": f"{m.min_history} complete intervals needed"})})
    prof = {c: {"fields": len(p)} for c, p in profiles.items() if not collection or c == collection}
    if json_out:
        emit_json({"db": target.db, "next_interval": at, "z": m.z, "learned": learned, "baselines": rows,
                   "profiles": {c: profiles[c] for c in prof}, "log_rows": len(history.get(LOGS, []))})
    else:
        if learned:
            console.print("learned profiles: " + ", ".join(f"{c} ({n} documents)" for c, n in learned.items()))
        print_table(console, f"baselines for the interval from {at:%Y-%m-%d %H:%M}Z (z {m.z:g})",
                    [Col("collection", id=True), Col("metric"), Col("history", justify="right"), Col("expected"),
                     Col("band"), Col("by hour")],
                    [[r["collection"], r["metric"], str(r["history"]),
                      "-" if r["median"] is None else f"{r['median']:g}",
                      r.get("learning") or f"{r['band'][0]:.1f}..{r['band'][1]:.1f}",
                      "yes" if r.get("seasonal") else "no"] for r in rows])
        console.print("field profiles: " + (", ".join(f"{c} ({v['fields']} fields)" for c, v in prof.items())
                                           or "none yet (`monitor baseline --learn`, or the first `monitor run`)"))


@app.command("status")
def status(db: Optional[str] = DbOpt, json_out: bool = JsonOpt) -> None:
    """The newest interval of each collection, profiles and open monitor findings. Exit 1 when any is open."""
    from ..checks.history import list_findings
    from ..store.monitor_models import MonitorInterval, MonitorProfile

    import os

    from ..config import DEFAULT_DB, load_config_file

    name = db or os.environ.get("FLUXA_DB") or load_config_file().get("db") or DEFAULT_DB
    store = open_store()
    with store.session() as s:
        newest = (select(MonitorInterval.collection, func.max(MonitorInterval.start).label("start"))
                  .where(MonitorInterval.database == name).group_by(MonitorInterval.collection).subquery())
        rows = s.scalars(select(MonitorInterval).join(newest, (MonitorInterval.collection == newest.c.collection)
                                                      & (MonitorInterval.start == newest.c.start))
                         .where(MonitorInterval.database == name).order_by(MonitorInterval.collection)).all()
        total = s.scalar(select(func.count(MonitorInterval.id)).where(MonitorInterval.database == name))
        profiles = s.scalars(select(MonitorProfile).where(MonitorProfile.database == name)).all()
    found = [f for f in list_findings(store, name) if f.rule_id.startswith("monitor.")]
    out = {"db": name, "interval_rows": total,
           "collections": [{"collection": r.collection, "start": r.start, "complete": r.complete,
                            **{k: r.metrics.get(k) for k in ("inserts", "updates", "deletes", "count", "entries")},
                            "findings": r.findings} for r in rows],
           "profiles": [{"collection": p.collection, "learned_at": p.learned_at, "docs": p.docs,
                         "fields": len(p.fields)} for p in profiles],
           "open_findings": [{"id": f.id, "rule_id": f.rule_id, "variant": f.variant, "count": f.count,
                              "opened_at": f.opened_at, "message": f.message} for f in found]}
    if json_out:
        emit_json(out)
    else:
        print_table(console, f"monitors of {name}: newest interval per collection ({total} rows)",
                    [Col("collection", id=True), Col("interval"), Col("complete"), Col("ins/upd/del"), Col("findings")],
                    [[c["collection"], when(c["start"]), "yes" if c["complete"] else "no",
                      "-" if c["inserts"] is None else f"{c['inserts']}/{c['updates']}/{c['deletes']}",
                      ", ".join(c["findings"]) or "-"] for c in out["collections"]])
        print_table(console, "learned field profiles", [Col("collection", id=True), Col("learned"), Col("documents")],
                    [[p["collection"], when(p["learned_at"]), str(p["docs"])] for p in out["profiles"]])
        print_table(console, "open monitor findings", [Col("id", id=True), Col("rule", id=True), Col("variant"),
                                                       Col("message")],
                    [[str(f["id"]), f["rule_id"], f["variant"], f["message"]] for f in out["open_findings"]])
    raise typer.Exit(EXIT_PROBLEMS if found else 0)
