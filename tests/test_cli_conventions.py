"""Every command as its --help shows it: each option and argument explained in a sentence that
Rich's markup leaves whole, and the --uri/--db/--json conventions the README promises.

Walks the real click tree (typer.main.get_command), so a command added later is checked too.
"""

from __future__ import annotations

import re

import pytest
import typer
from rich.text import Text

from fluxa_integrity.cli.main import cli

# Commands that read or write the application's MongoDB server: they take --uri and --db.
TOUCHES_APP_DB = {
    "fluxa generate", "fluxa inject", "fluxa summary", "check run", "backup run", "backup verify",
    "backup archive-oplog", "backup oplog-status", "restore run", "restore diff", "restore promote", "restore undo", "schema infer",
    "drill", "incident contain", "incident lift", "incident containment",
    "recover show", "recover apply", "recover verify", "recover undo",
    "serve", "jobs run-now", "monitor run", "monitor baseline",
}
# ... and the reasons some of them cannot honour --db.
NO_DB = {
    "backup archive-oplog": "the oplog (local.oplog.rs) is server-wide: one archive covers every database",
    "backup oplog-status": "the archive and the live oplog it is compared with are server-wide",
    "restore undo": "a promotion id names the database it wrote to; undo restores exactly that one",
    **{f"recover {c}": "a recovery plan names the database it was made for" for c in ("show", "apply", "verify", "undo")},
}
# Commands without --uri although they might look like they need one.
NO_URI_REASON = {
    "devdb start": "it starts the server whose URI it prints",
    "devdb stop": "it stops the local dev server only",
    "devdb status": "it reports on the local dev server only",
}
NO_JSON = {
    "policy schema": "its output is already one JSON document on stdout (the schema), or a file with --output",
}


def _commands():
    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return dict(walk(typer.main.get_command(cli), []))


COMMANDS = _commands()
# one `recover plan RECIPE` per registered recipe: each reads the application database
TOUCHES_APP_DB |= {p for p in COMMANDS if p.startswith("recover plan ")}


def test_the_tree_is_walked():
    assert {"check run", "backup verify", "restore diff", "incident open", "devdb start"} <= set(COMMANDS)
    assert set(NO_DB) | set(NO_URI_REASON) <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_and_argument_has_a_sentence(path):
    cmd = COMMANDS[path]
    assert (cmd.help or "").strip(), f"{path}: the command has no help"
    bad = []
    for p in cmd.params:
        if p.name == "help":
            continue
        raw = getattr(p, "help", None) or ""
        shown = Text.from_markup(raw).plain  # what --help prints: Rich eats "[default: x]" as markup
        problems = [why for why, failed in (
            ("empty", not shown.strip()),
            ("markup ate part of it", shown != raw.replace("\\[", "[")),
            ("stray ' .'", re.search(r" \.(?!\.)", shown)),  # an ellipsis " ..." is fine
            ("double space", "  " in shown),
            ("not a sentence (no final '.')", not shown.rstrip().endswith(".")),
        ) if failed]
        if problems:
            bad.append(f"{'/'.join(p.opts) or p.name}: {', '.join(problems)}: {raw!r}")
    assert not bad, f"{path}:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_uri_db_json_conventions(path):
    opts = {o for p in COMMANDS[path].params for o in p.opts}
    if path not in NO_JSON:
        assert "--json" in opts, f"{path} lacks --json"
    if path in TOUCHES_APP_DB:
        assert "--uri" in opts, f"{path} touches the application database but lacks --uri"
        if path not in NO_DB:
            assert "--db" in opts, f"{path} touches the application database but lacks --db"
    elif "--uri" in opts:
        pytest.fail(f"{path} takes --uri: list it in TOUCHES_APP_DB")
    assert path not in NO_DB or "--db" not in opts, f"{path} has --db now: drop it from NO_DB"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_a_database_is_named_with_db(path):
    opts = {o for p in COMMANDS[path].params for o in p.opts}
    assert "--database" not in opts, f"{path}: the house option for a database is --db, not --database"
