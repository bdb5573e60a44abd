"""``fluxa-integrity schema infer``: start a policy for a database nobody documented."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import FluxaError
from ..mongo.connection import connect
from ..schema.infer import infer as run_infer
from ..schema.policy import policy_document, render_policy
from .common import DbOpt, JsonOpt, UriOpt, console, csv_list, emit_json, target_option_values

app = typer.Typer(help="Discover the schema of existing collections.", no_args_is_help=True)


@app.command()
def infer(
    collections: Optional[List[str]] = typer.Option(
        None, "--collection", help="Collection to read (repeat, or comma-separate, for several); every collection when omitted."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Read only the first N documents of each collection."),
    uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt,
) -> None:
    """Field presence and types, candidate unique keys, enums and references, printed as a
    policy file (YAML on stdout) that `policy validate` accepts: review it, classify the
    collections under `data_classes`, and keep what holds."""
    target = target_option_values(uri, db)
    names = [n for value in collections or [] for n in csv_list(value) or []]
    client = connect(target.uri)
    try:
        database = client[target.db]
        existing = sorted(c for c in database.list_collection_names() if not c.startswith("system."))
        unknown = [n for n in names if n not in existing]
        if unknown or not existing:
            what = f"collection {unknown[0]!r} does not exist" if unknown else "there are no collections"
            raise FluxaError(f"{what} in database {target.db!r}",
                             "existing collections: " + (", ".join(existing) or "(none)"))
        inferences = [run_infer(database, name, limit) for name in (names or existing)]
    finally:
        client.close()
    doc = policy_document(inferences, application=target.db)
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    text = render_policy(doc, unicode=encoding == "utf8")
    if json_out:
        emit_json({"collections": [inf.as_dict() for inf in inferences], "policy": doc})
        return
    for inf in inferences:
        _print_table(target.db, inf)
    print(f"# inferred by `fluxa-integrity schema infer` from database {target.db!r}: review before use", flush=True)
    sys.stdout.write(text)


def _print_table(db: str, inf) -> None:
    table = Table(title=f"{db}.{inf.collection}: {inf.docs:,} documents")
    for col in ("field", "presence", "types", "unique?", "enum?", "references"):
        table.add_column(col, overflow="fold")
    near = []
    for path, f in inf.as_dict()["fields"].items():
        types = ", ".join(f"{t} {share:.0%}" for t, share in f["types"].items())
        ref = f["reference"]
        ref_text = f"{ref['collection']}.{ref['field']} ({ref['share']:.0%})" if ref else ""
        unique = "yes" if f["unique_candidate"] else ("likely" if f["near_unique"] else "")
        if f["map"]:
            types += f" (map{', keys ' + f['map']['key_pattern'] if f['map']['key_pattern'] else ''})"
        table.add_row(Text(path), f"{f['presence']:.1%}", Text(types), unique,
                      Text(", ".join(f["enum_candidate"])) if f["enum_candidate"] else "", Text(ref_text))
        if f["near_unique"]:
            dups = ", ".join(f"{d['value']!r} x{d['count']}" for d in f["near_unique"]["duplicates"])
            near.append(f"{inf.collection}.{path} is likely a unique key but repeats: {dups}")
    console.print(table)
    for line in near:
        console.print(Text(line, style="yellow"))
