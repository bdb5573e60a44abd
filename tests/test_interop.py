"""mongodump/mongorestore format interop, checked with the official Go driver's BSON library (the
one mongo-tools is built on) through tools/dumpcheck: mongo-tools itself cannot be fetched here
(the Go module proxy refuses github.com/mongodb/mongo-tools; docs/backup.md).

Both ways: our dumps parse the way mongorestore parses them (metadata as canonical Extended JSON
into its struct shape, documents validated) with the same counts, content hashes and indexes;
a dump written the way mongodump writes one imports (`backup import`), verifies and restores
to a database equal to its source.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from backup_helpers import hashes, indexes, make_data
from fluxa_integrity.backup import catalog
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.policy import default_policy
from fluxa_integrity.restore.executor import restore_snapshot
from fluxa_integrity.restore.verification import verify_backup
from fluxa_integrity.store import open_store

SRC = Path(__file__).resolve().parents[1] / "tools" / "dumpcheck"


@pytest.fixture(scope="session")
def dumpcheck() -> Path:
    digest = hashlib.sha256(b"".join((SRC / f).read_bytes() for f in ("main.go", "go.mod", "go.sum"))).hexdigest()[:12]
    target = SRC / "bin" / f"dumpcheck-{digest}"
    if not target.exists():
        go = shutil.which("go")
        if not go:
            pytest.fail("Go is needed to build tools/dumpcheck (the interop check)")
        target.parent.mkdir(exist_ok=True)
        proc = subprocess.run([go, "build", "-o", str(target.with_suffix(".tmp")), "."], cwd=SRC,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        target.with_suffix(".tmp").replace(target)
    return target


def shaped(db) -> None:
    """Generated Fluxa data plus what a dump must carry beyond documents: a compound unique
    index, a sparse one, and a capped collection's options."""
    make_data(db, users=12)
    db.users.create_index([("email", 1), ("createdAt", -1)], unique=True, name="email_created")
    db.messages.create_index("editedAt", sparse=True)
    db.create_collection("events", capped=True, size=1 << 20)
    db.events.insert_many([{"_id": i, "kind": "tick", "n": i * 1.5} for i in range(50)])


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_our_dump_parses_as_mongorestore_parses_it(mongo_uri, db, dumpcheck, compression):
    shaped(db)
    res = run_backup(mongo_uri, db.name, open_store(), BackupOptions(compression=compression, schema=False))
    proc = subprocess.run([str(dumpcheck), "read", str(res.directory / db.name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    seen = {s["collection"]: s for s in map(json.loads, proc.stdout.splitlines())}
    assert set(seen) == set(res.manifest["collections"])
    for name, entry in res.manifest["collections"].items():
        assert (seen[name]["count"], seen[name]["content_sha256"]) == (entry["count"], entry["content_sha256"]), name
        live = {i["name"]: i["key"] for i in db[name].list_indexes()}
        assert set(seen[name]["indexes"]) == set(live), name
        for iname, key in live.items():  # field order matters in a key: compare as ordered pairs
            assert [k for k in json.loads(seen[name]["indexes"][iname])] == list(key), (name, iname)
    assert "capped" in seen["events"]["options"] and seen["users"]["type"] == "collection"


@pytest.mark.parametrize("gzip", [False, True])
def test_a_mongodump_style_dump_imports_verifies_and_restores(mongo_uri, client, db, dumpcheck, tmp_path, cli, gzip):
    shaped(db)
    out = tmp_path / "dump"
    proc = subprocess.run([str(dumpcheck), "write", mongo_uri, db.name, str(out)] + (["-gzip"] if gzip else []),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.endswith(".bson.gz" if gzip else ".bson") for p in (out / db.name).iterdir())
    imported = cli("backup", "import", str(out), "--json")
    assert imported.code == 0, imported.stderr
    got = imported.json()
    assert got["db"] == db.name and got["compression"] == ("gzip" if gzip else "none")
    assert got["collections"] == {n: v["count"] for n, v in hashes(db).items() if n != "*"}
    store = open_store()
    assert verify_backup(mongo_uri, store, got["id"], default_policy(), run_integrity_checks=False)["verdict"] == "pass"
    target = f"{db.name}_imp"
    try:
        restore_snapshot(mongo_uri, store, got["id"], target)
        assert hashes(client[target]) == hashes(db) and indexes(client[target]) == indexes(db)
    finally:
        client.drop_database(target)


def test_import_refuses_what_is_not_a_whole_dump(mongo_uri, db, dumpcheck, tmp_path, cli):
    make_data(db, users=3)
    nothing = cli("backup", "import", str(tmp_path), "--json")
    assert nothing.code == 2 and "no <coll>.metadata.json" in nothing.stderr
    out = tmp_path / "dump"
    subprocess.run([str(dumpcheck), "write", mongo_uri, db.name, str(out)], check=True)
    data = out / db.name / "messages.bson"
    data.write_bytes(data.read_bytes()[:-7])  # a cut-off last document
    cut = cli("backup", "import", str(out), "--json")
    assert cut.code == 2 and "messages.bson" in cut.stderr
    rows = catalog.list_backups(open_store(), db.name)
    assert [r.status for r in rows] == ["failed"]  # recorded, never offered for restore
    gz = out / db.name / "users.metadata.json"
    gz.rename(gz.with_name(gz.name + ".gz"))
    mixed = cli("backup", "import", str(out), "--json")
    assert mixed.code == 2 and "mixes gzip and plain" in mixed.stderr
