"""Recovery plans through the web (issue 12): web/recovery_routes.py over recovery/engine.py.

A real plan from a real recipe on an injected fault: 20 generated users, five of them
soft-deleted by the fault injector (`soft-deleted-users`); the `undelete` plan must bring the
users collection back to its pre-fault copy, document for document (content hashes). Through
FastAPI's TestClient against the session's FerretDB, the live database resolved as the CLI
resolves it (FLUXA_MONGODB_URI, FLUXA_DB).

Checked: each role is refused what it may not do and nothing is written (documents, plan
status, timeline); apply needs a live incident and the plan id typed back; an apply after an
apply (and while another writer holds the database's lock) is a 409 that writes nothing twice;
after the apply the documents equal the pre-fault copy and the timeline holds the approval, the
change set and the verification with the token's name; undo puts the post-fault state back.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from fluxa_integrity.access import tokens
from fluxa_integrity.fluxa import model as m
from fluxa_integrity.fluxa.faults import inject
from fluxa_integrity.fluxa.generator import GenerateOptions, generate
from fluxa_integrity.fluxa.manifest import Manifest
from fluxa_integrity.recovery.model import content_hash

SMALL = dict(conversations_per_user=1, messages_per_conversation=2)


def _hashes(db) -> dict:
    return {d["_id"]: content_hash(d) for d in db[m.USERS].find({})}


@pytest.fixture()
def web(db, mongo_uri, fluxa_home, tmp_path, monkeypatch):
    """The app over this test's store, the live database found through the environment (as the
    CLI finds it), users before and after the fault, one token per role, an acknowledged incident."""
    from fastapi.testclient import TestClient

    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.store import open_store
    from fluxa_integrity.web.app import create_app

    monkeypatch.setenv("FLUXA_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("FLUXA_DB", db.name)
    generate(db, GenerateOptions(users=20, seed=12, **SMALL))
    pre, users_before = _hashes(db), list(db[m.USERS].find({}))
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "soft-deleted-users", 5, seed=12)
    store = open_store()
    api = Incidents(store, load_policy(None))
    app = create_app(api)

    class Web:
        incidents, database = api, db
        http = TestClient(app)
        token = {role: tokens.create(store, role, name)[1]
                 for role, name in (("viewer", "vera"), ("responder", "alice"), ("admin", "root-admin"))}
        before_fault, after_fault, injection, users = pre, _hashes(db), inj, users_before
        iid = api.open("Users vanished", [m.USERS], actor="pager")["id"]

        def call(self, method: str, path: str, role: str | None = None, **kw):
            headers = {"Authorization": f"Bearer {self.token[role]}"} if role else {}
            return self.http.request(method, path, headers=headers, **kw)

        def make_plan(self, role: str = "responder"):
            since = (inj.time - timedelta(seconds=1)).isoformat()
            return self.call("POST", "/api/recovery/plans", role, json={
                "recipe": "undelete", "params": {"collection": m.USERS, "since": since, "soft": True}})

        def timeline(self) -> list[tuple]:
            return [(e["kind"], e["actor"], e["data"]) for e in api.timeline(self.iid)]

    w = Web()
    api.acknowledge(w.iid, "alice")
    yield w
    store.dispose()


def _error(resp, status: int, says: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert says in body["error"] and body["hint"], body
    return body


def _plan_files(fluxa_home, plan_id: str) -> list[str]:
    root = fluxa_home / "plans" / plan_id
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_each_role_is_refused_what_it_may_not_do_and_nothing_is_written(web, fluxa_home):
    # a viewer cannot plan; a responder plans (the dry run of a real recipe)
    _error(web.make_plan("viewer"), 403, "needs the responder role")
    made = web.make_plan("responder")
    assert made.status_code == 201, made.text
    plan = made.json()
    pid = plan["plan_id"]
    assert plan["counts"] == {m.USERS: {"update": 5}} and plan["states"][m.USERS]["todo"] == 5
    assert sorted(s["id"]["$oid"] for s in plan["samples"]) == sorted(str(i) for i in web.injection.ids)
    assert plan["verify"] == ["users.deletions"]
    # everyone reads: the list and the live dry run
    for role in ("viewer", "responder", "admin"):
        assert [p["id"] for p in web.call("GET", "/api/recovery/plans", role).json()] == [pid]
        dry = web.call("GET", f"/api/recovery/plans/{pid}/dry-run", role).json()
        assert dry["plan"]["status"] == "planned" and dry["dry_run"]["states"][m.USERS] == \
            {"todo": 5, "done": 0, "conflict": 0}
    state = (web.after_fault, web.timeline(), _plan_files(fluxa_home, pid))
    body = {"incident": web.iid, "confirm": pid}
    for role in ("viewer", "responder"):
        for action in ("approve", "apply", "undo"):
            _error(web.call("POST", f"/api/recovery/plans/{pid}/{action}", role, json=body), 403,
                   "needs the admin role")
        promote = {"from_db": "restored", "collections": [m.USERS], "apply": True, "incident": web.iid,
                   "confirm": web.database.name}
        _error(web.call("POST", "/api/recovery/promote", role, json=promote), 403, "role")
    _error(web.call("POST", f"/api/recovery/plans/{pid}/verify", "viewer"), 403, "needs the responder role")
    _error(web.call("POST", f"/api/recovery/plans/{pid}/verify", "responder"), 409, "only an applied plan")
    _error(web.call("POST", f"/api/recovery/plans/{pid}/apply"), 401, "no API token")
    assert (_hashes(web.database), web.timeline(), _plan_files(fluxa_home, pid)) == state
    assert web.call("GET", f"/api/recovery/plans/{pid}", "viewer").json()["status"] == "planned"


def test_apply_needs_a_live_incident_and_the_plan_id_typed_back(web, fluxa_home):
    pid = web.make_plan().json()["plan_id"]
    resolved = web.incidents.open("An old one", [m.USERS], actor="pager")["id"]
    web.incidents.acknowledge(resolved, "alice")
    web.incidents.resolve(resolved, "fixed", None, "alice")
    state = (web.after_fault, web.timeline(), _plan_files(fluxa_home, pid))
    path = f"/api/recovery/plans/{pid}/apply"
    _error(web.call("POST", path, "admin", json={"confirm": pid}), 422, "incident: Field required")
    _error(web.call("POST", path, "admin", json={"incident": web.iid}), 422, "confirm: Field required")
    _error(web.call("POST", path, "admin", json={"incident": web.iid, "confirm": pid, "yes": True}), 422,
           "yes: Extra inputs")
    _error(web.call("POST", path, "admin", json={"incident": web.iid, "confirm": pid[:-1]}), 400,
           "the confirmation does not match")
    _error(web.call("POST", path, "admin", json={"incident": 999, "confirm": pid}), 404, "no incident 999")
    _error(web.call("POST", path, "admin", json={"incident": resolved, "confirm": pid}), 409,
           f"incident {resolved} is resolved")
    _error(web.call("POST", "/api/recovery/plans/nope/apply", "admin", json={"incident": web.iid, "confirm": "nope"}),
           404, "no recovery plan 'nope'")
    for action in ("approve", "undo"):
        _error(web.call("POST", f"/api/recovery/plans/{pid}/{action}", "admin",
                        json={"incident": web.iid, "confirm": "x"}), 400, "the confirmation does not match")
    assert (_hashes(web.database), web.timeline(), _plan_files(fluxa_home, pid)) == state
    assert web.call("GET", f"/api/recovery/plans/{pid}", "admin").json()["status"] == "planned"


def test_approve_apply_twice_and_undo_on_the_record(web, fluxa_home):
    from fluxa_integrity.recovery.lock import PlanLock

    pid = web.make_plan().json()["plan_id"]
    body = {"incident": web.iid, "confirm": pid}
    # another writer holds the database: 409 naming it, nothing written
    with PlanLock(web.database.name):
        _error(web.call("POST", f"/api/recovery/plans/{pid}/apply", "admin", json=body), 409,
               "another recovery apply, undo or promotion is writing")
    assert _hashes(web.database) == web.after_fault and _plan_files(fluxa_home, pid) == ["changes.bson", "plan.json"]

    approved = web.call("POST", f"/api/recovery/plans/{pid}/approve", "admin", json=body)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "recovering"
    kind, actor, data = web.timeline()[-1]
    assert (kind, actor, data["to"]) == ("status", "root-admin", "recovering") and pid in data["note"]
    assert _hashes(web.database) == web.after_fault  # approval writes nothing to the application

    done = web.call("POST", f"/api/recovery/plans/{pid}/apply", "admin", json=body)
    assert done.status_code == 200, done.text
    out = done.json()
    assert out["apply"]["status"] == "applied" and out["apply"]["counts"][m.USERS]["written"] == 5
    assert out["verify"]["closed"] is True and out["verify"]["rules"] == ["users.deletions"]
    assert _hashes(web.database) == web.before_fault  # ground truth: the pre-fault copy, byte for byte
    actions = [(a, d["action"], d["ref"], d["status"], d["counts"]) for k, a, d in web.timeline()
               if k == "recovery_action"]
    assert actions == [("root-admin", "recipe", pid, "applied",
                        {m.USERS: {"written": 5, "already": 0, "conflicts": 0, "forced": 0}}),
                       ("root-admin", "verify", pid, "closed", {})]

    # the double submission: 409, and nothing is written, journaled or recorded twice
    state = (web.timeline(), _plan_files(fluxa_home, pid))
    for _ in range(2):
        again = _error(web.call("POST", f"/api/recovery/plans/{pid}/apply", "admin", json=body), 409,
                       "is already applied")
        assert "root-admin" in again["error"]
    _error(web.call("POST", f"/api/recovery/plans/{pid}/approve", "admin", json=body), 409, "is already applied")
    assert (web.timeline(), _plan_files(fluxa_home, pid)) == state
    assert _hashes(web.database) == web.before_fault

    # undo puts the post-fault state back, on the record; a second undo is a 409
    undone = web.call("POST", f"/api/recovery/plans/{pid}/undo", "admin", json=body)
    assert undone.status_code == 200, undone.text
    assert undone.json()["counts"][m.USERS]["restored"] == 5
    assert _hashes(web.database) == web.after_fault
    kind, actor, data = web.timeline()[-1]
    assert (kind, actor, data["action"], data["ref"]) == ("recovery_action", "root-admin", "recipe-undo", pid)
    _error(web.call("POST", f"/api/recovery/plans/{pid}/undo", "admin", json=body), 409, "is undone")
    _error(web.call("POST", f"/api/recovery/plans/{pid}/apply", "admin", json=body), 409, "is undone")
    assert _hashes(web.database) == web.after_fault


def test_the_console_plan_page_masks_for_viewers_and_refuses_their_forms(web):
    pid = web.make_plan().json()["plan_id"]
    email = web.database[m.USERS].find_one({"_id": web.injection.ids[0]})["email"]
    for role in ("viewer", "admin"):
        web.http.cookies.clear()
        assert web.http.post("/login", data={"token": web.token[role]}, follow_redirects=False).status_code == 303
        page = web.http.get(f"/plans/{pid}")
        assert page.status_code == 200 and 'id="diff"' in page.text and "deletedAt" in page.text
        if role == "viewer":
            assert email not in page.text and f"{email[0]}***@" in page.text
            assert 'id="apply-form"' not in page.text and 'id="no-apply"' in page.text
            csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
            refused = web.http.post(f"/plans/{pid}/apply", data={"csrf": csrf, "incident": str(web.iid),
                                                                 "confirm": pid})
            assert refused.status_code == 403 and "needs the admin role" in refused.text
        else:
            assert email in page.text and 'id="apply-form"' in page.text
            forged = web.http.post(f"/plans/{pid}/apply", data={"csrf": "x", "incident": str(web.iid), "confirm": pid})
            assert forged.status_code == 403 and "CSRF" in forged.text
    assert _hashes(web.database) == web.after_fault
    assert web.call("GET", f"/api/recovery/plans/{pid}", "admin").json()["status"] == "planned"

    # the console's forms: an admin approves and applies, a responder verifies, the admin undoes
    def post(role: str, action: str, **fields):
        web.http.cookies.clear()
        web.http.post("/login", data={"token": web.token[role]})
        csrf = web.http.get(f"/plans/{pid}").text.split('name="csrf" value="')[1].split('"')[0]
        return web.http.post(f"/plans/{pid}/{action}", data={"csrf": csrf, **fields}, follow_redirects=False)

    wrong = post("admin", "apply", incident=str(web.iid), confirm="nope")
    assert wrong.status_code == 400 and "the confirmation does not match" in wrong.text
    assert not [e for e in web.timeline() if pid in str(e[2])]  # refused before the approval is recorded
    done = post("admin", "apply", incident=str(web.iid), confirm=pid)
    assert done.status_code == 303 and "verification%3A%20closed" in done.headers["location"]
    assert _hashes(web.database) == web.before_fault
    assert post("responder", "verify").status_code == 303
    undone = post("admin", "undo", incident=str(web.iid), confirm=pid)
    assert undone.status_code == 303 and _hashes(web.database) == web.after_fault
    assert [(k, a, d.get("action") or d.get("to")) for k, a, d in web.timeline() if pid in str(d)] == [
        ("status", "root-admin", "recovering"), ("recovery_action", "root-admin", "recipe"),
        ("recovery_action", "root-admin", "verify"), ("recovery_action", "alice", "verify"),
        ("recovery_action", "root-admin", "recipe-undo")]


def test_a_second_apply_while_the_first_is_writing_is_a_409(web, fluxa_home, tmp_path, monkeypatch):
    """The first apply is held right after its first journal file (apply.py's test-only pause);
    the second POST arrives then: refused naming the writer, and the first completes alone."""
    import threading

    from waiting import wait_until

    pid = web.make_plan().json()["plan_id"]
    body = {"incident": web.iid, "confirm": pid, "verify": False}
    paused = tmp_path / "paused"
    monkeypatch.setenv("FLUXA_TEST_PAUSE_APPLY", f"1:{paused}")
    first: dict = {}
    t = threading.Thread(target=lambda: first.update(
        r=web.call("POST", f"/api/recovery/plans/{pid}/apply", "admin", json=body)))
    t.start()
    try:
        wait_until(paused.exists, "the first apply to journal its first batch")
        assert web.call("GET", f"/api/recovery/plans/{pid}", "admin").json()["status"] == "applying"
        second = _error(web.call("POST", f"/api/recovery/plans/{pid}/apply", "admin", json=body), 409,
                        "another recovery apply, undo or promotion is writing")
        assert second["hint"]
        _error(web.call("POST", f"/api/recovery/plans/{pid}/undo", "admin", json={"incident": web.iid, "confirm": pid}),
               409, "another recovery apply")
    finally:
        (tmp_path / "paused.go").touch()
        t.join(60)
    assert first["r"].status_code == 200, first["r"].text
    assert first["r"].json()["apply"]["counts"][m.USERS]["written"] == 5
    assert _hashes(web.database) == web.before_fault
    assert [d["action"] for k, _, d in web.timeline() if k == "recovery_action"] == ["recipe"]  # recorded once
    assert len([f for f in _plan_files(fluxa_home, pid) if f.startswith("journal/apply-")]) == 1


def test_promote_from_a_restored_copy_needs_an_admin_and_the_live_name_and_undoes(web, client):
    """`restore promote` through the API: a copy of users from before the fault (made by hand,
    as the recipe allows), the dry run for a responder, the apply for an admin with the live
    database's name typed back, the undo through the plan route."""
    db = web.database
    copy = f"{db.name}_restored"
    client[copy][m.USERS].insert_many(web.users)
    try:
        body = {"from_db": copy, "collections": [m.USERS]}
        dry = web.call("POST", "/api/recovery/promote", "responder", json=body)
        assert dry.status_code == 200, dry.text
        assert dry.json()["counts"] == {m.USERS: {"replace": 5}} and dry.json()["dry_run"] is True
        _error(web.call("POST", "/api/recovery/promote", "viewer", json=body), 403, "needs the responder role")
        write = {**body, "apply": True, "incident": web.iid, "confirm": db.name}
        _error(web.call("POST", "/api/recovery/promote", "responder", json=write), 403, "needs the admin role")
        _error(web.call("POST", "/api/recovery/promote", "admin", json={**write, "confirm": copy}), 400,
               "type the live database's name")
        _error(web.call("POST", "/api/recovery/promote", "admin", json={**write, "incident": None}), 400,
               "needs incident")
        assert _hashes(db) == web.after_fault and web.call("GET", "/api/recovery/plans", "admin").json() == []
        done = web.call("POST", "/api/recovery/promote", "admin", json=write)
        assert done.status_code == 200, done.text
        pid = done.json()["promotion_id"]
        assert done.json()["counts"][m.USERS]["written"] == 5 and _hashes(db) == web.before_fault
        assert [(a, d["action"], d["ref"]) for k, a, d in web.timeline() if k == "recovery_action"] == \
            [("root-admin", "promote", pid)]
        undone = web.call("POST", f"/api/recovery/plans/{pid}/undo", "admin",
                          json={"incident": web.iid, "confirm": pid})
        assert undone.status_code == 200, undone.text
        assert _hashes(db) == web.after_fault
        assert web.timeline()[-1][2]["action"] == "undo"
    finally:
        client.drop_database(copy)
