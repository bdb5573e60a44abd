"""Containment that contains (S18, S22; issue 10 deliverable 3).

- An application-like writer, in its own process, that vendors containment_reader.py as the only
  piece of the tool it has (copied into a directory of its own: the module needs nothing else of
  Fluxa Integrity), checks ``is_writable``/``is_paused`` before each write: it is refused while
  `incident contain` holds, and writes again after `incident lift`. It says what it does on
  stderr, one line per attempt; the test waits on those lines (readiness), never on sleeps.
- The tool's own writers: ``check_writable`` and restore promote refuse a collection another
  incident contains; the containing incident's own recovery is allowed.
- contain / lift on the timeline and in the postmortem; bad input.
- The application user's roles: revoked and given back exactly on a real MongoDB
  (real_mongodb_only); on FerretDB the probe says "not supported by this server".
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import pytest

import fluxa_integrity.containment_reader as reader_module
from fluxa_integrity.containment_reader import FLAGS_COLLECTION, FLAGS_DB, ContainmentReader
from fluxa_integrity.errors import FluxaError
from fluxa_integrity.incidents.api import Incidents
from fluxa_integrity.policy import default_policy
from fluxa_integrity.recovery.engine import list_plans
from fluxa_integrity.restore.promote import promote
from fluxa_integrity.store import open_store

from waiting import StderrWatch, wait_until

WRITER = textwrap.dedent("""
    import sys, time
    import pymongo
    from fluxa_containment import ContainmentReader   # the vendored reader, nothing else of the tool

    if any(m.startswith("fluxa_integrity") for m in sys.modules):
        sys.exit("the vendored reader pulled in fluxa_integrity")
    uri, dbname = sys.argv[1], sys.argv[2]
    client = pymongo.MongoClient(uri)
    flags = ContainmentReader(client, dbname, ttl=0.05)
    messages = client[dbname]["messages"]
    written = refused = paused = exported = 0
    print("ready", file=sys.stderr, flush=True)
    while True:
        if flags.is_writable("messages"):
            written += 1
            messages.insert_one({"_id": f"app-{written}", "text": "hello"})
            print(f"write {written}", file=sys.stderr, flush=True)
        else:
            refused += 1
            print(f"refused {refused} incidents={flags.incidents()}", file=sys.stderr, flush=True)
        if flags.is_paused("export"):
            paused += 1
            print(f"paused {paused}", file=sys.stderr, flush=True)
        else:
            exported += 1
        time.sleep(0.01)  # the app's own pace: not a wait on the test's side
""")


@pytest.fixture()
def api(tmp_path):
    return Incidents(open_store(f"sqlite:///{tmp_path / 'state.db'}"), default_policy())


@pytest.fixture()
def app_writer(tmp_path, mongo_uri, db):
    """Start the application-like writer on ``db``; yields its StderrWatch."""
    vendored = tmp_path / "app"
    vendored.mkdir()
    shutil.copy(reader_module.__file__, vendored / "fluxa_containment.py")
    (vendored / "writer.py").write_text(WRITER)
    # the app's own directory (first on sys.path) and the interpreter's site-packages for pymongo
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = []

    def start() -> StderrWatch:
        proc = subprocess.Popen([sys.executable, "-s", str(vendored / "writer.py"), mongo_uri, db.name],
                                cwd=vendored, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        procs.append(proc)
        watch = StderrWatch(proc)
        watch.wait_for(r"ready")
        return watch

    yield start
    for p in procs:
        p.terminate()
        p.wait(30)


def open_incident(api, db, collections=("messages",)) -> int:
    return api.open("Messages vanish", collections=list(collections), database=db.name)["id"]


# -- the application honours it ------------------------------------------------------------------

def test_an_app_writer_is_refused_and_paused_while_contained_and_writes_again_after_lift(api, db, app_writer):
    iid = open_incident(api, db)
    watch = app_writer()
    watch.wait_for(r"write 3\b")  # the app writes while nothing is contained

    res = api.contain(iid, db, read_only=True, pause=["export"], actor="dana")
    assert res["read_only"] and res["paused_features"] == ["export"]
    watch.wait_for(r"refused 1 incidents=\[%d\]" % iid)
    watch.wait_for(r"paused 1\b")
    frozen = db.messages.count_documents({})
    watch.wait_for(r"refused 20\b")  # twenty more attempts, none of them written
    assert db.messages.count_documents({}) == frozen
    last_write = max(int(x) for x in re.findall(r"write (\d+)", watch.text))
    assert frozen == last_write  # every write the app made landed; none after the refusal

    api.lift(iid, db, read_only=True, actor="dana")  # read-only lifted, export still paused
    after = watch.wait_for(r"refused \d+ incidents=\S+\n(?:paused \d+\n)*write (\d+)")
    assert int(after.group(1)) == frozen + 1
    wait_until(lambda: db.messages.count_documents({}) > frozen, "the app writing again")
    paused_so_far = len(re.findall(r"paused \d+", watch.text))
    assert paused_so_far >= 1

    api.lift(iid, db, features=["export"])  # nothing is contained any more
    flags = db.client[FLAGS_DB][FLAGS_COLLECTION].find_one({"_id": db.name})
    assert flags["read_only_collections"] == [] and flags["paused_features"] == [] and flags["incidents"] == []
    reader = ContainmentReader(db.client, db.name, ttl=0)
    assert reader.is_writable("messages") and not reader.is_paused("export")


def test_flags_document_is_the_union_over_live_incidents_and_star_means_every_collection(api, db):
    a, b = open_incident(api, db), open_incident(api, db, ["users"])
    api.contain(a, db, read_only=True)
    api.contain(b, db, read_only=True, collections=["*"], pause=["chat"])
    flags = db.client[FLAGS_DB][FLAGS_COLLECTION].find_one({"_id": db.name})
    assert flags["read_only_collections"] == ["*", "messages"] and flags["incidents"] == [a, b]
    assert flags["paused_features"] == ["chat"] and flags["version"] == 1
    r = ContainmentReader(db.client, db.name, ttl=0)
    assert not r.is_writable("anything") and r.is_paused("chat")
    api.lift(b, db)
    assert not r.is_writable("messages") and r.is_writable("users") and not r.is_paused("chat")
    # another application database on the same server is not touched
    assert ContainmentReader(db.client, db.name + "_other", ttl=0).is_writable("messages")


def test_reader_fail_closed_keeps_the_last_flags_for_max_stale_then_refuses(db):
    now = [0.0]
    r = ContainmentReader(db.client, db.name, ttl=1, max_stale=10, clock=lambda: now[0])
    assert r.is_writable("messages")  # no document: nothing contained

    class Down:
        def find_one(self, *a, **k):
            from pymongo.errors import ServerSelectionTimeoutError
            raise ServerSelectionTimeoutError("down")

    r._coll = Down()
    now[0] = 5  # refresh fails: the last flags (nothing contained) are kept while fresh enough
    assert r.is_writable("messages") and r.error is not None
    now[0] = 12  # older than max_stale: fail-closed
    assert not r.is_writable("messages") and r.is_paused("export")
    open_ = ContainmentReader(db.client, db.name, fail_closed=False)
    open_._coll = Down()
    assert open_.is_writable("messages") and not open_.is_paused("export")


# -- the tool's own writers ------------------------------------------------------------------------

def test_tool_writers_refuse_contained_collections_except_under_the_containing_incident(api, db, client):
    iid = open_incident(api, db)
    other = open_incident(api, db, ["users"])
    api.contain(iid, db, read_only=True)
    api.check_writable(db.name, ["users"])  # not contained: fine
    with pytest.raises(FluxaError, match=f"incident {iid}") as exc:
        api.check_writable(db.name, ["messages"], other)
    assert "incident lift" in exc.value.hint
    api.check_writable(db.name, ["messages"], iid)  # recovery under the containing incident itself
    with pytest.raises(FluxaError, match="read-only"):
        api.check_writable("elsewhere", [f"{db.name}.messages"])  # "<db>.<coll>" names
    api.check_writable(db.name + "_x", ["messages"])  # another database is not contained

    # restore promote: refused before any write under --yes or another incident, allowed under iid
    source = client[db.name + "_restored"]
    try:
        source.messages.insert_one({"_id": "m1", "text": "restored"})
        for authority in (None, other):  # --yes, or another incident
            with pytest.raises(FluxaError, match=f"incident {iid}"):
                promote(api.store, api, db, source.name, ["messages"], None, default_policy(), incident_id=authority)
        assert db.messages.count_documents({}) == 0 and list_plans(api.store) == []  # not even a plan made
        done = promote(api.store, api, db, source.name, ["messages"], None, default_policy(), incident_id=iid)
        assert done.counts["messages"]["written"] == 1 and done.status == "applied"
        api.lift(iid, db)
        api.check_writable(db.name, ["messages"], other)  # lifted: writable for everyone
    finally:
        client.drop_database(source.name)


# -- record: timeline, postmortem, checklist actions ----------------------------------------------

def test_contain_and_lift_are_on_the_timeline_and_in_the_postmortem(api, db):
    iid = open_incident(api, db)
    api.acknowledge(iid, by="alice")
    api.contain(iid, db, read_only=True, collections=["messages", "conversations"], actor="dana")
    api.contain(iid, db, pause=["chat"], actor="alice")
    api.lift(iid, db, actor="dana")
    rows = [e for e in api.timeline(iid) if e["kind"] in ("contained", "lifted")]
    assert [(e["kind"], e["actor"]) for e in rows] == [("contained", "dana"), ("contained", "alice"),
                                                        ("lifted", "dana")]
    assert rows[0]["data"]["read_only"] == ["conversations", "messages"]
    assert rows[0]["data"]["flags"] == f"{FLAGS_DB}.{FLAGS_COLLECTION}"
    assert rows[2]["data"]["read_only_lifted"] == ["conversations", "messages"]
    assert rows[2]["data"]["resumed"] == ["chat"]
    assert api.verify_timeline(iid)[0]["ok"]
    md = api.postmortem(iid)["markdown"]
    section = md.split("## Containment")[1].split("## Recovery actions")[0]
    assert "contained on %s by dana: read-only conversations, messages" % db.name in section
    assert "contained on %s by alice: paused chat" % db.name in section
    assert "lifted on %s by dana: writable again conversations, messages; resumed chat" % db.name in section


def test_checklist_actions_enforce_through_the_same_path(api, db, mongo_uri):
    iid = open_incident(api, db)
    api.acknowledge(iid)
    r = api.complete_item(iid, "read_only_mode", run=True, params={"uri": mongo_uri, "db": db.name})
    assert r["action_result"]["status"] == "done"
    assert not ContainmentReader(db.client, db.name, ttl=0).is_writable("messages")
    r = api.complete_item(iid, "remove_restrictions", run=True, params={"uri": mongo_uri, "db": db.name})
    assert r["action_result"]["status"] == "done"
    assert ContainmentReader(db.client, db.name, ttl=0).is_writable("messages")
    assert "read_only_mode on %s" % db.name in api.postmortem(iid)["markdown"]


# -- bad input ----------------------------------------------------------------------------------------

def test_bad_input_is_refused_and_nothing_is_written(api, db):
    flags = db.client[FLAGS_DB][FLAGS_COLLECTION]
    with pytest.raises(FluxaError, match="no incident 999"):
        api.contain(999, db, read_only=True)
    iid = open_incident(api, db)
    with pytest.raises(FluxaError, match="nothing to contain"):
        api.contain(iid, db)
    with pytest.raises(FluxaError, match="unknown collection"):
        api.contain(iid, db, read_only=True, collections=["nosuch"])
    with pytest.raises(FluxaError, match="nothing contained to lift"):
        api.lift(iid, db)
    with pytest.raises(FluxaError, match=f"is on database {db.name!r}"):
        api.contain(iid, db.client[db.name + "_wrong"], read_only=True)
    assert flags.find_one({"_id": db.name}) is None  # nothing above wrote the flags
    assert not [e for e in api.timeline(iid) if e["kind"] in ("contained", "lifted")]

    api.contain(iid, db, pause=["chat"])
    with pytest.raises(FluxaError, match="not read-only"):
        api.lift(iid, db, read_only=True)
    with pytest.raises(FluxaError, match="does not pause export"):
        api.lift(iid, db, features=["export"])
    api.acknowledge(iid)
    api.resolve(iid, "fixed")
    api.review(iid, root_cause="a job")
    with pytest.raises(FluxaError, match="lift it first"):
        api.close(iid)
    with pytest.raises(FluxaError, match="is resolved"):
        api.contain(iid, db, read_only=True)
    api.lift(iid, db)  # phase 5 after resolving is allowed
    api.close(iid)
    with pytest.raises(FluxaError, match="is closed"):
        api.contain(iid, db, read_only=True)
    with pytest.raises(FluxaError, match="is closed"):
        api.lift(iid, db)


def test_cli_contain_lift_and_containment(cli, mongo_uri, db):
    opened = cli("incident", "open", "--title", "Chats vanish", "--collections", "messages", "--db", db.name, "--json")
    assert opened.code == 0, opened.stderr
    iid = str(opened.json()["id"])
    r = cli("incident", "contain", iid, "--read-only", "--pause", "chat,export", "--app-user", "fluxa_app",
            "--uri", mongo_uri, "--json")
    assert r.code == 0, r.stderr
    data = r.json()["containment_result"]
    assert data["read_only_collections"] == ["messages"] and data["paused_features"] == ["chat", "export"]
    if "user_management" in data and data["user_management"].startswith("not supported"):
        human = cli("incident", "contain", iid, "--read-only", "--app-user", "fluxa_app", "--uri", mongo_uri)
        assert human.code == 0 and "not supported by this server" in human.stderr
    state = cli("incident", "containment", "--uri", mongo_uri, "--db", db.name, "--json")
    assert state.code == 0 and state.json()["agree"] and state.json()["flags"]["incidents"] == [int(iid)]
    db.client[FLAGS_DB][FLAGS_COLLECTION].delete_one({"_id": db.name})  # lost: the record says otherwise
    assert cli("incident", "containment", "--uri", mongo_uri, "--db", db.name).code == 1
    assert cli("incident", "containment", "--uri", mongo_uri, "--db", db.name, "--sync").code == 0

    for args, message in ((["contain", "999", "--read-only"], "no incident 999"),
                          (["contain", iid], "nothing to contain"),
                          (["lift", iid, "--feature", "nosuch"], "does not pause nosuch")):
        bad = cli("incident", *args, "--uri", mongo_uri)
        assert bad.code == 2 and message in bad.stderr, bad.stderr
    lifted = cli("incident", "lift", iid, "--uri", mongo_uri, "--json")
    assert lifted.code == 0 and lifted.json()["containment_result"]["resumed"] == ["chat", "export"]
    again = cli("incident", "lift", iid, "--uri", mongo_uri)
    assert again.code == 2 and "nothing contained to lift" in again.stderr


# -- the application user's roles --------------------------------------------------------------------

def test_user_management_probe_says_not_supported_on_ferretdb(api, db, server_is_ferretdb):
    if not server_is_ferretdb:
        pytest.skip("the dev server's path: a real MongoDB manages users (see the next test)")
    iid = open_incident(api, db)
    res = api.contain(iid, db, read_only=True, app_user="fluxa_app")
    why = res["containment_result"]["user_management"]
    assert why.startswith("not supported by this server") and "usersInfo" in why
    row = [e for e in api.timeline(iid) if e["kind"] == "contained"][0]
    assert row["data"]["user_management"] == why
    assert not ContainmentReader(db.client, db.name, ttl=0).is_writable("messages")  # the flags still hold
    assert "application user: not supported by this server" in api.postmortem(iid)["markdown"]


def test_app_user_loses_its_write_role_while_contained_and_gets_exactly_its_roles_back(
        real_mongodb_only, api, db, client):
    user = f"app_{db.name}"
    client.admin.command("createUser", user, pwd="pw", roles=[{"role": "readWrite", "db": db.name},
                                                             {"role": "read", "db": "other_app"}])
    try:
        before = client.admin.command("usersInfo", {"user": user, "db": "admin"})["users"][0]["roles"]
        iid = open_incident(api, db)
        res = api.contain(iid, db, read_only=True, app_user=user)
        assert res["containment_result"]["user_management"] == "revoked"
        during = client.admin.command("usersInfo", {"user": user, "db": "admin"})["users"][0]["roles"]
        assert {"role": "readWrite", "db": db.name} not in during
        assert {"role": "read", "db": db.name} in during and {"role": "read", "db": "other_app"} in during
        api.lift(iid, db)
        after = client.admin.command("usersInfo", {"user": user, "db": "admin"})["users"][0]["roles"]
        key = lambda r: (r["db"], r["role"])  # noqa: E731
        assert sorted(after, key=key) == sorted(before, key=key)
    finally:
        client.admin.command("dropUser", user)
