"""The backups API (/api/restores, /api/rpo, /api/rto, /api/archive/coverage, /api/drills) and the
console's /console/backups page, against a history seeded through the domain's own writers on the
session's FerretDB: a real full backup, a real restore of it, a failed verification with the
restore time it measured and a pin (catalog), two archived oplog slices with a hole between them
and the gap the archiver records for it (archive catalog), and the files a drill keeps (a passed
run's postmortem, a failed run's fault manifest written by the real injector). Each response
must equal what the domain functions return; the page must show the same ids, verdicts and gap.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

import pytest
from bson.timestamp import Timestamp
from fastapi.testclient import TestClient

from backup_helpers import make_data
from fluxa_integrity.access import tokens
from fluxa_integrity.backup import archive_catalog as ac
from fluxa_integrity.backup import catalog
from fluxa_integrity.backup.objectives import rpo_status, rto_status
from fluxa_integrity.backup.snapshot import BackupOptions, run_backup
from fluxa_integrity.drill.kept import kept_drills
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.restore.executor import restore_snapshot
from fluxa_integrity.restore.runs import get_restore, list_restores
from fluxa_integrity.store import open_store
from fluxa_integrity.web.app import create_app
from fluxa_integrity.web.pages import duration, when
from fluxa_integrity.web.shown import jsonable

UTC = timezone.utc
GAP_REASON = "the oplog rolled past the archive (test): entries between the slices are lost"
PROBLEM = "users: 3 documents differ from the source"
ROUTES = ["/api/restores", "/api/restores/1", "/api/rpo", "/api/rto", "/api/archive/coverage", "/api/drills"]


def _slice(store, repo, name: str, first: Timestamp, last: Timestamp, prev, count: int) -> None:
    """A slice as the archiver catalogs it: a file of the cataloged size under the repository."""
    path = repo / "oplog" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * (100 + count))
    ac.add_slice(store, repo, path, first=first, last=last, prev=prev,
                 first_wall=datetime.fromtimestamp(first.time, UTC), last_wall=datetime.fromtimestamp(last.time, UTC),
                 count=count, size=100 + count, raw_bytes=1000, sha256="0" * 64)


@pytest.fixture()
def seeded(mongo_uri, client, db, tmp_path, fluxa_home, monkeypatch):
    monkeypatch.setenv("FLUXA_DB", db.name)  # the dashboard's and this page's RPO rows are for it
    store, policy = open_store(), default_policy()
    make_data(db, users=20)
    repo = tmp_path / "repo"
    backup = run_backup(mongo_uri, db.name, store, BackupOptions(repo=repo, schema=False, oplog_probe="clock"))
    target = f"{db.name}_r"
    restored = restore_snapshot(mongo_uri, store, backup.id, target)
    cls = policy.data_classes[0].name
    catalog.record_verification(store, backup.id, "fail", {cls: 12.5}, {"problems": [PROBLEM]})
    catalog.set_pin(store, backup.id, "incident 7")
    # two archived slices with a hole between them, and the gap the archiver recorded for it
    t0 = int(datetime.now(UTC).timestamp()) - 7200
    a_last, b_first = Timestamp(t0 + 600, 1), Timestamp(t0 + 3600, 1)
    _slice(store, repo, "a.bson.zst", Timestamp(t0, 1), a_last, None, 40)
    _slice(store, repo, "b.bson.zst", b_first, Timestamp(t0 + 4200, 3), Timestamp(t0 + 3000, 1), 25)
    ac.add_gap(store, repo, a_last, b_first, GAP_REASON)
    # what drills keep: a passed run's postmortem (its manifest older), a failed run's manifest
    drills = fluxa_home / "drills"
    drills.mkdir(parents=True, exist_ok=True)
    old = Manifest(drills / "fluxa_drill-corruption.faults.json", "fluxa_drill")
    old.reset({"users": 5})
    (drills / "fluxa_drill-corruption-incident-4.md").write_text("# Postmortem\n")
    then = datetime.now(UTC).timestamp() - 3600
    os.utime(drills / "fluxa_drill-corruption.faults.json", (then - 60, then - 60))
    os.utime(drills / "fluxa_drill-corruption-incident-4.md", (then, then))
    inject(db, Manifest(drills / f"{db.name}-data-loss.faults.json", db.name), "orphan-messages", 3, seed=3)
    app = create_app(Incidents(store, policy))
    yield {"store": store, "policy": policy, "db": db, "backup": backup, "restored": restored, "target": target,
           "app": app, "class": cls, "gap": (a_last, b_first)}
    client.drop_database(target)
    store.dispose()


def _api(seeded, role="viewer") -> TestClient:
    token = tokens.create(seeded["store"], role, f"{role}-api")[1]
    return TestClient(seeded["app"], headers={"Authorization": f"Bearer {token}"})


def test_api_equals_the_domain(seeded):
    store, policy, db = seeded["store"], seeded["policy"], seeded["db"]
    c = _api(seeded)
    # restores: the real one, with what restore_snapshot reported
    got = c.get("/api/restores").json()
    assert got == jsonable(list_restores(store))
    assert [(r["id"], r["backup_id"], r["source_db"], r["target_db"], r["status"]) for r in got] == \
        [(seeded["restored"].run_id, seeded["backup"].id, db.name, seeded["target"], "complete")]
    assert sorted(got[0]["collections"]) == sorted(seeded["restored"].collections)
    assert c.get(f"/api/restores?backup={seeded['backup'].id}").json() == got
    assert c.get("/api/restores?target_db=elsewhere").json() == []
    one = c.get(f"/api/restores/{seeded['restored'].run_id}")
    assert one.status_code == 200 and one.json() == jsonable(get_restore(store, seeded["restored"].run_id))
    missing = c.get("/api/restores/424242")
    assert missing.status_code == 404 and missing.json()["error"] == "no restore 424242"
    assert "restore run" in missing.json()["hint"]
    assert c.get("/api/restores/0").status_code == 422
    # RPO: rpo_status's rows (the age moves with the clock) and the archive's gap
    rpo = c.get(f"/api/rpo?db={db.name}").json()
    truth = jsonable(rpo_status(store, policy, db.name))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "age_seconds"} for r in rows]  # noqa: E731
    assert rpo["db"] == db.name and strip(rpo["data_classes"]) == strip(truth)
    assert all(abs(a["age_seconds"] - b["age_seconds"]) < 30 for a, b in zip(rpo["data_classes"], truth))
    assert {r["backup_id"] for r in rpo["data_classes"]} == {seeded["backup"].id}  # every class is in the backup
    assert rpo["breached"] == any(r["status"] == "breached" for r in truth)
    # RTO: the restore time the (failed) verification measured for the class
    rto = c.get(f"/api/rto?db={db.name}").json()
    assert rto["data_classes"] == jsonable(rto_status(store, policy, db.name))
    row = next(r for r in rto["data_classes"] if r["data_class"] == seeded["class"])
    assert (row["measured_seconds"], row["backup_id"]) == (12.5, seeded["backup"].id)
    # coverage: two windows and the gap between them, with the recorded reason
    cov = c.get("/api/archive/coverage").json()
    windows, gaps = ac.coverage(store)
    assert cov["windows"] == jsonable([{**w.as_dict(), "caught_up_at": None} for w in windows])
    assert [(w["slices"], w["entries"]) for w in cov["windows"]] == [(1, 40), (1, 25)]
    a_last, b_first = seeded["gap"]
    assert cov["gaps"] == jsonable(gaps) and cov["broken"] is True
    assert [(g["after"], g["before"], g["reason"]) for g in cov["gaps"]] == \
        [(ac.ts_text(a_last), ac.ts_text(b_first), GAP_REASON)]
    assert rpo["oplog_gaps"] == cov["gaps"]
    # drills: the passed run by its postmortem, the failed run by its manifest (3 orphans injected)
    drills = c.get("/api/drills").json()
    assert drills == jsonable(kept_drills())
    assert [(d["scenario"], d["database"], d["ok"], d["incident"], d["faults"]) for d in drills] == \
        [("data-loss", db.name, False, None, {"orphan-messages": 3}), ("corruption", "fluxa_drill", True, 4, None)]


def test_roles_and_bad_input(seeded):
    anon = TestClient(seeded["app"])
    for path in ROUTES:
        r = anon.get(path)
        assert r.status_code == 401, path
        assert r.json()["error"] and r.json()["hint"]
    c = _api(seeded)
    for bad in ("/api/restores/99999999999", "/api/restores?limit=0", "/api/rpo?db=", "/api/rto?db=" + "x" * 201,
                "/api/restores?backup=" + "b" * 65):
        r = c.get(bad)
        assert r.status_code == 422, bad
        assert r.json()["hint"]
    assert TestClient(seeded["app"], follow_redirects=False).get("/console/backups").headers["location"] == "/login"
    assert c.post("/api/drills").status_code == 405  # a drill runs for minutes: the CLI's


def _row(html: str, row_id: str) -> str:
    m = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', html, re.S)
    assert m, f"no row {row_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(1))).strip()


def test_page_shows_what_the_domain_says(seeded):
    store, policy, db, b = seeded["store"], seeded["policy"], seeded["db"], seeded["backup"]
    token = tokens.create(store, "viewer", "night-viewer")[1]
    c = TestClient(seeded["app"], follow_redirects=False)
    assert c.post("/login", data={"token": token}).status_code == 303
    r = c.get("/console/backups")
    assert r.status_code == 200
    html = r.text
    assert '<a href="/console/backups">Backups</a>' in html  # the nav link
    assert html.count("<form") == 1 and 'action="/logout"' in html  # nothing to act on but signing out
    # the backup: kind, size, collections, the failed verdict with why, the pin
    row = catalog.as_dict(catalog.get_backup(store, b.id), catalog.latest_verifications(store)[b.id])
    text = _row(html, f"backup-{b.id}")
    assert text.startswith(f"{b.id} full {db.name} {when(row['started_at'])} {row['status']}")
    assert f"{len(row['collections'])}: " + ", ".join(row["collections"]) in text
    assert f"FAILED {when(row['verification']['at'])}: {PROBLEM}" in text and text.endswith("incident 7")
    # the restore
    rid = seeded["restored"].run_id
    assert _row(html, f"restore-{rid}").startswith(f"{rid} {b.id} {db.name} {seeded['target']} snapshot complete")
    # the gap in red, as times a person reads
    a_last, b_first = seeded["gap"]
    gap = re.search(r'<div class="gap" id="gap-1">(.*?)</div>\s*</div>', html, re.S)
    assert gap, "the gap is not drawn"
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", gap.group(1)))
    assert (f"no point-in-time restore between {when(datetime.fromtimestamp(a_last.time, UTC))} and "
            f"{when(datetime.fromtimestamp(b_first.time, UTC))}") in words
    assert GAP_REASON in words and ac.ts_text(a_last) in words
    assert html.count('<tr class="window">') == 2 and 'id="no-gap"' not in html
    # RPO per data class: rpo_status's verdicts and backup
    for t in rpo_status(store, policy, db.name):
        cells = _row(html, f"rpo-{t['data_class']}")
        assert t["backup_id"] in cells
        assert ("BREACHED" if t["status"] == "breached" else " ok ") in f" {cells} "
    assert duration(12.5) in _row(html, f"rpo-{seeded['class']}")  # the drill's restore time, as a person reads it
    # drills
    assert html.count('<tr class="drill">') == 2 and 'href="/incidents/4"' in html
