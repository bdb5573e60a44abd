"""``fluxa-integrity devdb``: the local MongoDB-compatible server (FerretDB, SQLite backend)."""

from __future__ import annotations

import typer

from ..mongo.devserver import DEFAULT_OPLOG_ENTRIES, DEFAULT_OPLOG_MB, DevServer
from .common import JsonOpt, console, emit_json, out

app = typer.Typer(help="Start, stop and inspect the local MongoDB-compatible dev server "
                  "(FerretDB built from tools/ferretdb; data under $FLUXA_HOME/devdb).",
                  no_args_is_help=True)


@app.command()
def start(
    port: int = typer.Option(None, "--port", help="TCP port on 127.0.0.1 (default: the last one used, else 27217)."),
    oplog_mb: int = typer.Option(DEFAULT_OPLOG_MB, "--oplog-mb", min=1,
                                 help="Size cap of local.oplog.rs when it is created."),
    oplog_entries: int = typer.Option(DEFAULT_OPLOG_ENTRIES, "--oplog-entries", min=100,
                                      help="Entry cap of local.oplog.rs when it is created: every tail poll "
                                           "re-reads the whole oplog on FerretDB, so a longer one slows the archiver."),
    oplog_keep: int = typer.Option(0, "--oplog-keep", min=0,
                                   help="Entries kept once the archiver and continuous validation have read them "
                                        "(0: as many as the entry cap); a few thousand keep every tail poll cheap."),
    json_out: bool = JsonOpt,
) -> None:
    """Build the server if needed, start it in the background, wait for ping, print the URI."""
    status = DevServer.default().start(port=port, oplog_mb=oplog_mb, oplog_entries=oplog_entries,
                                        oplog_keep=oplog_keep or None, progress=lambda m: console.print(m))
    if json_out:
        emit_json(status.as_dict())
    else:
        console.print(f"dev server running (pid {status.pid}), data in {status.data_dir}")
        out.print(status.uri, highlight=False)


@app.command()
def stop(json_out: bool = JsonOpt) -> None:
    """Stop the background server (its data is kept)."""
    was = DevServer.default().stop()
    if json_out:
        emit_json({"stopped": was})
    else:
        console.print("dev server stopped" if was else "dev server was not running")


@app.command()
def status(json_out: bool = JsonOpt) -> None:
    """Say whether the server runs, its URI, PID, data and log paths. Exit 1 when stopped."""
    st = DevServer.default().status()
    if json_out:
        emit_json(st.as_dict())
    elif st.running:
        console.print(f"running  pid {st.pid}  {st.uri}\n  data {st.data_dir}\n  log  {st.log_file}")
    else:
        console.print(f"not running (data dir {st.data_dir})")
    raise typer.Exit(0 if st.running else 1)
