"""The command line read by a person at 200, 80 and 40 columns: every id whole on one line,
values rendered readably (no Extended-JSON or Python dicts), a next step after findings."""

from __future__ import annotations

import re

from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest

RAW = re.compile(r"\$oid|\$date|'value'|\{'|datetime\.datetime|ObjectId\(")


def _lines_with(text: str, needle: str) -> list[str]:
    return [ln for ln in text.splitlines() if needle in ln]


def _row(text: str, finding: dict) -> list[str]:
    return [ln for ln in _lines_with(text, finding["rule_id"]) if re.search(rf"(^|\s|id: ){finding['id']}\s", ln)]


def test_check_run_findings_table_has_whole_ids_and_a_next_step(cli, db, mongo_uri, tmp_path):
    generate(db, GenerateOptions(users=40, seed=3))
    man = Manifest(tmp_path / "m.json", db.name)
    for kind in ("orphan-conversations", "wrong-type-createdat", "malformed-email", "broken-counter"):
        inject(db, man, kind, 2)
    target = ("--uri", mongo_uri, "--db", db.name)
    first = cli("check", "run", *target)
    assert first.code == 1, first.stderr
    found = cli("check", "findings", "--json").json()
    assert len(found) >= 4
    for width in ("80", "40"):
        res = cli("check", "run", *target, env={"COLUMNS": width})
        assert res.code == 1, res.stderr
        for f in found:  # the finding id and its rule id, each whole, on one line (a table row or a block's head)
            assert _row(res.stderr, f), (width, f, res.stderr)
        assert "check show " in res.stderr and "incident intake" in res.stderr and "restore run" in res.stderr
        listed = cli("check", "findings", env={"COLUMNS": width})
        for f in found:
            assert _row(listed.stderr, f), (width, f, listed.stderr)
        history = cli("check", "history", "--json").json()
        shown = cli("check", "history", env={"COLUMNS": width}).stderr
        assert all(re.search(rf"(^|run: ){r['id']}\s", shown, re.M) for r in history), shown
    clean = cli("check", "run", *target, "--collections", "analytics")
    assert "next:" not in clean.stderr  # no findings, no next step


def test_check_show_renders_evidence_readably(cli, db, mongo_uri, tmp_path):
    generate(db, GenerateOptions(users=40, seed=4))
    done = inject(db, Manifest(tmp_path / "m.json", db.name), "wrong-type-createdat", 3)
    res = cli("check", "run", "--uri", mongo_uri, "--db", db.name, "--json")
    assert res.code == 1, res.stderr
    hit = next(f for f in res.json()["findings"] if f["collection"] == done[0].collection and f["count"] == 3)
    for width in ("200", "80", "40"):
        shown = cli("check", "show", str(hit["finding_id"]), env={"COLUMNS": width})
        assert shown.code == 0, shown.stderr
        assert not RAW.search(shown.stderr), shown.stderr
        for _id in done[0].ids:  # every sample's _id, whole, on one line
            assert _lines_with(shown.stderr, str(_id)), (width, shown.stderr)
        assert re.search(r"dated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z \.\. \d{4}", shown.stderr), shown.stderr


def test_backup_ids_are_whole_in_lists_at_any_width(cli, db, mongo_uri):
    generate(db, GenerateOptions(users=20, seed=5))
    res = cli("backup", "run", "--uri", mongo_uri, "--db", db.name, "--json")
    assert res.code == 0, res.stderr
    backup_id = res.json()["id"]
    for width in ("200", "80", "40"):
        for args in (("backup", "list"), ("rpo", "status", "--db", db.name)):
            shown = cli(*args, env={"COLUMNS": width})
            assert _lines_with(shown.stderr, backup_id), (width, args, shown.stderr)
    wrong = cli("backup", "verify", backup_id, "--db", "someotherdb", "--uri", mongo_uri, "--json")
    assert wrong.code == 2 and db.name in wrong.json()["error"] and "someotherdb" in wrong.json()["error"]


def test_incident_list_reads_at_any_width(cli):
    opened = cli("incident", "open", "--title", "[bold]emails[/] broken", "--source", "report", "--json")
    assert opened.code == 0, opened.stderr
    inc_id = str(opened.json()["id"])
    for width in ("200", "40"):
        listed = cli("incident", "list", env={"COLUMNS": width})
        assert listed.code == 0, listed.stderr
        assert re.search(rf"(^|id: ){inc_id}\s", listed.stderr, re.M) and "[bold]emails[/]" in listed.stderr
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", listed.stderr)  # ISO-8601 UTC, not raw
