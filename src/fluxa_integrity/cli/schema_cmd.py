"""``fluxa-integrity schema infer``: start a policy for a database nobody documented."""

from __future__ import annotations

from typing import Optional

import typer
import yaml
from rich.table import Table

from ..errors import FluxaError
from ..mongo.connection import connect
from ..schema.infer import infer as run_infer, policy_snippet
from .common import DbOpt, JsonOpt, UriOpt, console, emit_json, target_option_values

app = typer.Typer(help="Discover the schema of existing collections.", no_args_is_help=True)


@app.command()
def infer(
    collection: str = typer.Option(..., "--collection", help="Collection to read."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Read only the first N documents."),
    uri: Optional[str] = UriOpt, db: Optional[str] = DbOpt, json_out: bool = JsonOpt,
) -> None:
    """Field presence and types, candidate unique keys, enums and references, printed as a
    policy snippet (YAML on stdout) to paste under `collections:` and edit."""
    target = target_option_values(uri, db)
    client = connect(target.uri)
    database = client[target.db]
    if collection not in database.list_collection_names():
        raise FluxaError(f"collection {collection!r} does not exist in database {target.db!r}",
                         "existing collections: " + (", ".join(sorted(database.list_collection_names())) or "(none)"))
    inf = run_infer(database, collection, limit)
    client.close()
    snippet = policy_snippet(inf)
    if json_out:
        emit_json({**inf.as_dict(), "policy_snippet": snippet})
        return
    table = Table(title=f"{target.db}.{collection}: {inf.docs:,} documents")
    for col in ("field", "presence", "types", "unique?", "enum?", "references"):
        table.add_column(col, overflow="fold")
    for path, f in inf.as_dict()["fields"].items():
        types = ", ".join(f"{t} {share:.0%}" for t, share in f["types"].items())
        ref = f"{f['reference'][0]} ({f['reference'][1]:.0%})" if f["reference"] else ""
        table.add_row(path, f"{f['presence']:.1%}", types, "yes" if f["unique_candidate"] else "",
                      ", ".join(f["enum_candidate"]) if f["enum_candidate"] else "", ref)
    console.print(table)
    print(yaml.safe_dump({"collections": snippet}, sort_keys=False, width=110), end="")
