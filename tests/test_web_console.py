"""The responder's console and the public status page through FastAPI's TestClient (no browser):
sessions, CSRF, roles on forms, the actions reaching the domain, the status page's states and
that nothing internal leaks from it, the Atom feed. The browser walk is tests/test_web_browser.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from fluxa_integrity.access import tokens
from fluxa_integrity.store import open_store

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture()
def console(fluxa_home):
    from fastapi.testclient import TestClient

    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.web.app import create_app

    store = open_store()
    api = Incidents(store, load_policy(None))

    class Console:
        incidents = api
        app = create_app(api)
        token = {role: tokens.create(store, role, name)[1]
                 for role, name in (("viewer", "vera"), ("responder", "alice"))}

        def browser(self, role: str | None = None):
            """A client with its own cookie jar, signed in as ``role``."""
            c = TestClient(self.app, follow_redirects=False)
            if role:
                r = c.post("/login", data={"token": self.token[role]})
                assert r.status_code == 303 and r.headers["location"] == "/", r.text
            return c

    yield Console()
    store.dispose()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


def test_pages_need_a_session_and_a_bad_token_is_refused_at_login(console):
    inc = console.incidents.open("Lost chats", ["conversations"], actor="pager")
    anon = console.browser()
    for path in ("/", f"/incidents/{inc['id']}"):
        r = anon.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path
    bad = anon.post("/login", data={"token": console.token["responder"][:-3] + "xyz"})
    assert bad.status_code == 401 and "invalid API token" in bad.text
    assert "fluxa_session" not in bad.headers.get("set-cookie", "")
    assert anon.post("/login", data={"token": "nonsense"}).status_code == 401
    good = anon.post("/login", data={"token": console.token["responder"]})
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert anon.get("/").status_code == 200
    missing = anon.get("/incidents/999")
    assert missing.status_code == 404 and "no incident 999" in missing.text
    # signing out needs the CSRF token too, then the session is gone
    assert anon.post("/logout", data={}).status_code == 403
    assert anon.post("/logout", data={"csrf": csrf_of(anon.get("/").text)}).headers["location"] == "/login"
    assert anon.get("/").status_code == 303
    anon.post("/login", data={"token": console.token["responder"]})
    assert anon.get("/").status_code == 200
    # a token revoked mid-session ends it at the next page, saying why
    tokens.revoke(console.incidents.store, console.token["responder"].split("_")[1])
    r = anon.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?why=") and "revoked" in r.headers["location"]


def test_a_post_without_the_sessions_csrf_token_is_refused_and_writes_nothing(console):
    inc = console.incidents.open("Lost chats", ["conversations"], actor="pager")
    alice = console.browser("responder")
    page = alice.get(f"/incidents/{inc['id']}")
    good = csrf_of(page.text)
    rows = console.incidents.get(inc["id"])["timeline_rows"]
    for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": csrf_of(console.browser("viewer").get("/").text)}):
        r = alice.post(f"/incidents/{inc['id']}/ack", data=data)
        assert r.status_code == 403 and "CSRF" in r.text, data
    assert console.incidents.get(inc["id"])["timeline_rows"] == rows
    assert console.incidents.get(inc["id"])["status"] == "open"
    r = alice.post(f"/incidents/{inc['id']}/ack", data={"csrf": good})
    assert r.status_code == 303 and console.incidents.get(inc["id"])["status"] == "acknowledged"
    # the domain's refusal comes back on the page with its message
    again = alice.post(f"/incidents/{inc['id']}/ack", data={"csrf": good})
    assert again.status_code == 409 and "already acknowledged" in again.text


def test_a_viewer_sees_no_forms_masked_emails_and_is_refused_a_post(console):
    inc = console.incidents.open("Bounce from jane.doe@example.com", ["users"], actor="pager")
    vera = console.browser("viewer")
    html = vera.get(f"/incidents/{inc['id']}").text
    assert "jane.doe@example.com" not in html and "j***@example.com" in html
    assert re.findall(r"<form[^>]*>", html) == ['<form method="post" action="/logout" class="inline">']
    rows = console.incidents.get(inc["id"])["timeline_rows"]
    csrf = csrf_of(html)
    for path, data in (("ack", {}), ("checklist/notify_on_call", {}), ("note", {"text": "hi"}),
                       ("comms", {"template": "initial", "do": "publish", "value.SPECIFIC_ISSUES": "x"})):
        r = vera.post(f"/incidents/{inc['id']}/{path}", data={"csrf": csrf, **data})
        assert r.status_code == 403 and "needs the responder role" in r.text, path
    assert console.incidents.get(inc["id"])["timeline_rows"] == rows
    assert console.incidents.publications(inc["id"]) == []
    responder_html = console.browser("responder").get(f"/incidents/{inc['id']}").text
    assert "jane.doe@example.com" in responder_html and 'id="ack"' in responder_html


def test_console_actions_write_what_the_api_writes(console):
    """Tick, note, preview and publish through the forms: the domain records them with the
    token's name as the actor; the dashboard shows the incident with its clocks."""
    inc = console.incidents.open("Lost chats", ["conversations"], actor="pager")
    iid = inc["id"]
    alice = console.browser("responder")
    csrf = csrf_of(alice.get("/").text)
    dash = alice.get("/").text
    assert f'id="incident-{iid}"' in dash and 'data-clock="acknowledge"' in dash
    assert alice.post(f"/incidents/{iid}/checklist/notify_on_call", data={"csrf": csrf}).status_code == 303
    assert alice.post(f"/incidents/{iid}/note", data={"csrf": csrf, "text": "looking"}).status_code == 303
    preview = alice.post(f"/incidents/{iid}/comms", data={"csrf": csrf, "template": "initial", "do": "render",
                                                         "value.SPECIFIC_ISSUES": "missing chats"})
    assert preview.status_code == 200 and "Some users may experience missing chats" in preview.text
    assert console.incidents.publications(iid) == []  # a preview publishes nothing
    pub = alice.post(f"/incidents/{iid}/comms", data={"csrf": csrf, "template": "initial", "do": "publish",
                                                     "value.SPECIFIC_ISSUES": "missing chats"})
    assert pub.status_code == 303
    tl = console.incidents.timeline(iid)
    mine = [(e["kind"], e["actor"]) for e in tl if e["actor"] == "alice"]
    assert [k for k, _ in mine] == ["checklist", "note", "communication"], tl
    assert [p["template"] for p in console.incidents.publications(iid)] == ["initial"]
    done = {i["id"]: i["done_by"] for ph in console.incidents.checklist(iid) for i in ph["items"] if i["done_at"]}
    assert done.get("notify_on_call") == "alice"
    bad = alice.post(f"/incidents/{iid}/checklist/no_such_item", data={"csrf": csrf})
    assert bad.status_code == 400 and "no_such_item" in bad.text


def test_status_page_states_follow_the_incidents_and_nothing_internal_leaks(console):
    api = console.incidents
    anon = console.browser()

    def components() -> dict[str, str]:
        html = anon.get("/status").text
        return dict(re.findall(r'<tr class="state-[a-z-]+"><td>([^<]+)</td><td class="state">([^<]+)</td>', html))

    titles = {d.name: d.title for d in api.policy.data_classes}
    assert set(components().values()) == {"Operational"} and len(components()) == len(titles)
    p1 = api.open("Secret internal title bob.smith@corp.example", ["users"], actor="pager",
                  description="internal notes: mongodb://app:hunter2@db.internal/fluxa")
    assert p1["severity"] == "P1"
    p2 = api.open("Analytics gap", ["analytics"], actor="pager")
    assert p2["data_classes"] == ["usage_analytics"] and p2["severity"] != "P1"
    drill = api.open("Drill on chats", ["conversations"], actor="pager")
    from fluxa_integrity.store.incident_models import Incident
    with api.store.session() as s:  # a drill never shows on the public page
        s.get(Incident, drill["id"]).drill = True
        s.commit()
    got = components()
    assert got[titles["user_accounts"]] == "Major outage"
    assert got[titles["usage_analytics"]] == "Partial outage"
    assert got[titles["chat_history"]] == "Operational"
    api.acknowledge(p1["id"], "alice")
    api.set_status(p1["id"], "recovering", actor="alice")
    assert components()[titles["user_accounts"]] == "Degraded performance"
    api.publish(p1["id"], "initial", {"SPECIFIC_ISSUES": "login problems (ask bob.smith@corp.example)"}, actor="alice")
    api.publish(p1["id"], "progress", {"ESTIMATED_TIME": "1 hour"}, actor="alice")
    html = anon.get("/status").text
    assert "Some users may experience login problems" in html and "b***@corp.example" in html
    assert html.index(api.policy.templates.progress.title) < html.rindex(api.policy.templates.initial.title)
    for leak in ("Secret internal title", "bob.smith@", "hunter2", "db.internal", "auditLog", "analytics",
                 "conversations", "Drill on chats", "Analytics gap", "alice", "pager", f"#{p1['id']}", "user_accounts",
                 "P1", "Critical"):
        assert leak not in html, leak
    assert not re.search(r'id="(incident|update)-\d+"', html)
    feed = anon.get("/status/feed.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.content)
    entries = root.findall(f"{ATOM}entry")
    assert root.tag == f"{ATOM}feed" and root.find(f"{ATOM}updated").text == entries[0].find(f"{ATOM}updated").text
    assert [e.find(f"{ATOM}title").text for e in entries] == [api.policy.templates.progress.title,
                                                              api.policy.templates.initial.title]
    assert len({e.find(f"{ATOM}id").text for e in entries}) == 2
    for leak in ("bob.smith@", "Secret internal", "alice", "hunter2", "auditLog", "P1"):
        assert leak not in feed.text, leak
    api.resolve(p1["id"], "restored", actor="alice")
    assert components()[titles["user_accounts"]] == "Operational"
    assert '<span class="badge badge-resolved">resolved</span>' in anon.get("/status").text


def test_the_dashboard_shows_a_breached_deadline_in_red_with_the_domains_numbers(console):
    """An incident opened long ago: its acknowledge clock is overdue by what the engine's clocks
    say, drawn as a breached clock; a fresh one runs."""
    from datetime import timedelta

    from fluxa_integrity.incidents.timeutil import now
    from fluxa_integrity.web.pages import duration

    old = console.incidents.open("Old one", ["users"], actor="pager", at=now() - timedelta(hours=3))
    fresh = console.incidents.open("Fresh one", ["analytics"], actor="pager")
    html = console.browser("viewer").get("/").text
    cards = dict(re.findall(r'id="incident-(\d+)">(.*?)</a>', html, re.S))
    ack = next(c for c in console.incidents.clocks(old["id"])["clocks"] if c["clock"] == "acknowledge")
    assert ack["state"] == "overdue"
    overdue = re.search(r'<div class="clock breached" data-clock="acknowledge">.*?clock-left">\+([^<]+)<',
                        cards[str(old["id"])], re.S)
    assert overdue and overdue.group(1) == duration(ack["left"].total_seconds() if hasattr(ack["left"], "total_seconds")
                                                    else ack["left"])
    assert 'class="clock ok" data-clock="acknowledge"' in cards[str(fresh["id"])]
    assert "breached" not in cards[str(fresh["id"])]


def test_the_dashboards_objectives_are_the_catalogs(console):
    """RPO and RTO rows per data class say what backup/objectives.py says (an empty catalog: no
    recoverable point, every RPO breached; no drill, every RTO unmeasured)."""
    from fluxa_integrity.backup.objectives import rpo_status, rto_status

    html = console.browser("viewer").get("/").text
    rpo = rpo_status(console.incidents.store, console.incidents.policy, "fluxa")
    rto = {r["data_class"]: r for r in rto_status(console.incidents.store, console.incidents.policy, "fluxa")}
    assert len(rpo) == len(console.incidents.policy.data_classes)
    for r in rpo:
        row = re.search(rf'<tr id="rpo-{r["data_class"]}">(.*?)</tr>', html, re.S).group(1)
        assert ("BREACHED" in row) == (r["status"] == "breached") and r["rpo"] in row
        assert rto[r["data_class"]]["status"] in row and rto[r["data_class"]]["rto"] in row


def test_the_dashboards_batched_clocks_are_the_engines_clocks(console):
    """clocks_of_live (one query for the dashboard) gives, for each live incident, exactly what
    clocks(id) gives; resolved incidents are not in it."""
    from datetime import timedelta

    from fluxa_integrity.incidents.timeutil import now

    api = console.incidents
    t0 = now()
    a = api.open("A", ["users"], actor="pager", at=t0 - timedelta(hours=2))
    b = api.open("B", ["analytics"], actor="pager", at=t0 - timedelta(minutes=5))
    c = api.open("C", ["conversations"], actor="pager", at=t0 - timedelta(minutes=1))
    api.acknowledge(b["id"], "alice", at=t0 - timedelta(minutes=4))
    for item in api.policy.phases[0].items:  # the first phase done on B: its clocks must say so
        api.complete_item(b["id"], item.id, None, None, False, {}, {}, t0 - timedelta(minutes=3), "alice")
    api.acknowledge(c["id"], "alice", at=t0)
    api.resolve(c["id"], "fixed", t0, "alice")
    at = t0 + timedelta(seconds=1)
    batched = api.clocks_of_live(at)
    assert set(batched) == {a["id"], b["id"]}
    for iid in (a["id"], b["id"]):
        assert batched[iid] == api.clocks(iid, at)
    assert [p["done"] for p in batched[b["id"]]["phases"]][:2] == [True, False]
    assert [p["done"] for p in batched[a["id"]]["phases"]][:1] == [False]


def test_the_dashboards_board_is_the_engines_clocks_most_urgent_first_and_counts_from_the_store(console,
                                                                                                 monkeypatch):
    """incidents/board.py, what the dashboard reads: each card's clocks and next escalation are
    clocks(id)'s; the cards come by earliest running deadline (acknowledge until acknowledged,
    then resolve), computed here from the engine's own clocks; the counts by severity and status
    and the open findings by class are those of the full listings; past the cap the page draws
    the most urgent and says how many there are, ?all=1 draws every one."""
    from collections import Counter
    from datetime import timedelta

    from fluxa_integrity.checks.history import list_findings
    from fluxa_integrity.incidents import board
    from fluxa_integrity.incidents.timeutil import now
    from fluxa_integrity.store.models import CheckRun, Finding
    from fluxa_integrity.web import console as console_module

    api = console.incidents
    t0 = now()
    made = [api.open(f"I{n}", [coll], actor="pager", at=t0 - timedelta(minutes=m))
            for n, (coll, m) in enumerate((("users", 200), ("analytics", 3), ("conversations", 40),
                                           ("messages", 90), ("users.preferences", 10)))]
    api.acknowledge(made[0]["id"], "alice", at=t0 - timedelta(minutes=190))  # acked: its resolve clock counts
    api.acknowledge(made[3]["id"], "alice", at=t0 - timedelta(minutes=80))
    api.acknowledge(made[4]["id"], "alice", at=t0)
    api.resolve(made[4]["id"], "fixed", t0, "alice")  # not live
    with api.store.session() as s:
        run = CheckRun(database="fluxa", started_at=t0, finished_at=t0, status="complete", rules=[], collections=[],
                       stats={})
        s.add(run)
        s.flush()
        for n, (dc, status) in enumerate((("user_accounts", "open"), ("user_accounts", "open"), (None, "open"),
                                          ("messages", "closed"), ("messages", "open"))):
            s.add(Finding(database="fluxa", fingerprint=f"{n:064x}", rule_id="r", variant="", collection="users",
                          category="schema", data_class=dc, criticality=None, status=status, message="m", count=1,
                          affected_users=0, samples=[], opened_at=t0, first_run_id=run.id, last_run_id=run.id))
    at = t0 + timedelta(seconds=1)
    got = board.live_board(api.store, api.policy, at)
    live = [i for i in api.list("live")]
    assert got["total"] == len(live) == 4
    assert got["by_severity"] == dict(Counter(i["severity"] for i in live))
    assert got["by_status"] == dict(Counter(i["status"] for i in live))

    def running_deadline(iid):
        return min(c["deadline"] for c in api.clocks(iid, at)["clocks"] if c["stopped_at"] is None)

    assert [c["id"] for c in got["incidents"]] == sorted((i["id"] for i in live), key=running_deadline)
    for card in got["incidents"]:
        engine = api.clocks(card["id"], at)
        assert (card["clocks"], card["next_escalation"]) == (engine["clocks"], engine["next_escalation"])
    assert [c["id"] for c in board.live_board(api.store, api.policy, at, limit=2)["incidents"]] == \
        [c["id"] for c in got["incidents"][:2]]
    opened = Counter(f.data_class for f in list_findings(api.store, None, "open"))
    assert board.open_findings_by_class(api.store) == dict(opened) == {"user_accounts": 2, None: 1, "messages": 1}
    # the page: the cap, the count, the link to all of them
    monkeypatch.setattr(console_module, "CARDS", 2)
    browser = console.browser("viewer")
    html = browser.get("/").text
    assert re.findall(r'id="incident-(\d+)"', html) == [str(c["id"]) for c in got["incidents"][:2]]
    assert "The 2 most urgent of 4 live" in html and 'href="/?all=1"' in html
    assert len(re.findall(r'id="incident-(\d+)"', browser.get("/?all=1").text)) == 4
    assert re.search(r"Open findings <span class=\"count\">4</span>", html)


def test_a_sign_in_from_another_site_is_refused(console):
    """Login CSRF: a form on another site posting the attacker's token to /login would sign the
    victim's browser in as the attacker. A browser names the form's site (Origin, Sec-Fetch-Site):
    from elsewhere it is a 403 and no session; from this server's own page it signs in."""
    token = console.token["responder"]
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},
                    {"Origin": "http://testserver.evil.example"}):
        c = console.browser()
        r = c.post("/login", data={"token": token}, headers=headers)
        assert r.status_code == 403 and "from another site is refused" in r.text, headers
        assert "fluxa_session" not in r.headers.get("set-cookie", "") and c.get("/").status_code == 303, headers
    for headers in ({"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        c = console.browser()
        r = c.post("/login", data={"token": token}, headers=headers)
        assert r.status_code == 303 and c.get("/").status_code == 200, headers
