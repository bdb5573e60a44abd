"""The console and the status page in a real Chromium (Debian's /usr/bin/chromium and
chromedriver; never a downloaded browser), against `fluxa-integrity web --port 0` started as a
subprocess over this test's $FLUXA_HOME, with an incident opened through the domain.

One browser session for the whole walk: a responder signs in, acknowledges, ticks a checklist
item, publishes the initial update and sees it on /status; a viewer sees no action forms and a
POST made with the viewer's session is refused. Screenshots go to tests/artifacts/web/
(gitignored); their paths are printed. Every wait is on a page element, never a sleep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts" / "web"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver (./dev test installs them)")


@pytest.fixture()
def server(fluxa_home):
    """The web command for real, over a store with one P1 incident and two tokens."""
    from waiting import StderrWatch

    from fluxa_integrity.access import tokens
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.store import open_store

    store = open_store()
    api = Incidents(store, load_policy(None))
    inc = api.open("Duplicate accounts for jane.doe@example.com", ["users"], actor="pager",
                   description="support ticket from jane.doe@example.com")
    secrets = {role: tokens.create(store, role, name)[1] for role, name in (("responder", "alice"), ("viewer", "vera"))}
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "web", "--port", "0"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        url = watch.wait_for(r"serving the API on (http://127\.0\.0\.1:\d+) ").group(1)
        yield url, inc, secrets, api
    finally:
        proc.terminate()  # the server this fixture started
        watch.finish()
        store.dispose()


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1600"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_a_responder_and_a_viewer_in_chromium(server, browser):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, inc, secrets, api = server
    iid = inc["id"]
    wait = WebDriverWait(browser, 20)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)

    def shot(name: str) -> None:
        path = ARTIFACTS / f"{name}.png"
        browser.save_screenshot(str(path))
        print(f"screenshot: {path}")

    def submit(element) -> None:
        """Click a submit button and wait until the next page has replaced this one."""
        old = browser.find_element(By.TAG_NAME, "html")
        element.click()

        def replaced(_) -> bool:
            try:
                old.tag_name  # raises once the document it belonged to is gone
                return False
            except WebDriverException:  # stale, or "does not belong to the document"
                return True

        wait.until(replaced)

    def sign_in(token: str) -> None:
        browser.delete_all_cookies()
        browser.get(f"{url}/login")
        wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(token)
        submit(browser.find_element(By.ID, "sign-in"))

    # a wrong token is refused on the login page
    sign_in(secrets["responder"][:-3] + "xyz")
    assert "invalid API token" in wait.until(EC.visibility_of_element_located((By.ID, "login-error"))).text
    shot("01-login-refused")

    # the responder: dashboard with the incident and its running clocks
    sign_in(secrets["responder"])
    card = wait.until(EC.visibility_of_element_located((By.ID, f"incident-{iid}")))
    assert "Duplicate accounts for jane.doe@example.com" in card.text and "ACKNOWLEDGE IN" in card.text.upper()
    shot("02-dashboard-responder")
    submit(card)
    submit(wait.until(EC.element_to_be_clickable((By.ID, "ack"))))
    assert wait.until(EC.visibility_of_element_located((By.ID, "status"))).text.lower() == "acknowledged"
    assert api.get(iid)["status"] == "acknowledged"
    submit(wait.until(EC.element_to_be_clickable((By.ID, "tick-notify_on_call"))))
    row = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#item-notify_on_call.done")))
    assert "alice" in row.text
    # compose the initial update: preview, then publish
    field = wait.until(EC.visibility_of_element_located((By.ID, "initial-SPECIFIC_ISSUES")))
    field.send_keys("duplicate sign-in accounts")
    submit(browser.find_element(By.ID, "render-initial"))
    preview = wait.until(EC.visibility_of_element_located((By.ID, "preview-initial")))
    assert "Some users may experience duplicate sign-in accounts" in preview.text
    assert api.publications(iid) == []
    shot("03-incident-preview")
    submit(browser.find_element(By.ID, "publish-initial"))
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "ol.pubs li")))
    assert [p["template"] for p in api.publications(iid)] == ["initial"]
    assert [e["actor"] for e in api.timeline(iid) if e["kind"] in ("status", "checklist", "communication")] \
        == ["alice"] * 3
    shot("04-incident-responder")

    # the public status page shows the update, and nothing internal
    browser.get(f"{url}/status")
    text = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "article.update-group"))).text
    assert "Some users may experience duplicate sign-in accounts" in text
    page = browser.page_source
    assert "Major outage" in browser.find_element(By.ID, "overall").text or "Major outage" in page
    for leak in ("jane.doe", "Duplicate accounts", "alice", "users"):
        assert leak not in browser.find_element(By.TAG_NAME, "body").text.replace("Some users", ""), leak
    shot("05-status-page")

    # the viewer: everything read-only, emails masked, and a POST with the viewer's session refused
    sign_in(secrets["viewer"])
    browser.get(f"{url}/incidents/{iid}")
    wait.until(EC.visibility_of_element_located((By.ID, "status")))
    assert "j***@example.com" in browser.find_element(By.TAG_NAME, "h1").text
    assert "jane.doe" not in browser.page_source
    forms = [f.get_attribute("action") for f in browser.find_elements(By.TAG_NAME, "form")]
    assert forms == [f"{url}/logout"]
    shot("06-incident-viewer")
    rows = api.get(iid)["timeline_rows"]
    # the viewer's own session and CSRF token, on a form the page does not offer
    browser.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        const c = document.createElement('input'); c.name = 'csrf'; c.value = document.querySelector('input[name=csrf]').value;
        f.appendChild(c); document.body.appendChild(f); f.submit();""", f"/incidents/{iid}/note")
    refusal = wait.until(EC.visibility_of_element_located((By.ID, "refusal")))
    assert "needs the responder role" in refusal.text
    assert api.get(iid)["timeline_rows"] == rows
    shot("07-viewer-refused")


# -- recovery plans (web/recovery_routes.py) ----------------------------------------------------------

PLAN_ARTIFACTS = Path(__file__).parent / "artifacts" / "web-plans"


@pytest.fixture()
def plan_server(fluxa_home, db, mongo_uri, tmp_path):
    """The web command over a database with five users soft-deleted by the fault injector, an
    `undelete` plan made through the engine, an acknowledged incident, an admin and a viewer."""
    from datetime import datetime, timedelta, timezone

    from waiting import StderrWatch

    from fluxa_integrity.access import tokens
    from fluxa_integrity.fluxa import model as m
    from fluxa_integrity.fluxa.faults import inject
    from fluxa_integrity.fluxa.generator import GenerateOptions, generate
    from fluxa_integrity.fluxa.manifest import Manifest
    from fluxa_integrity.incidents.api import Incidents
    from fluxa_integrity.policy import load_policy
    from fluxa_integrity.recovery import engine
    from fluxa_integrity.recovery.model import RecipeContext, content_hash
    from fluxa_integrity.store import open_store

    def hashes() -> dict:
        return {d["_id"]: content_hash(d) for d in db[m.USERS].find({})}

    generate(db, GenerateOptions(users=20, seed=7, conversations_per_user=1, messages_per_conversation=2))
    truth = hashes()
    (inj,) = inject(db, Manifest(tmp_path / "m.json", db.name), "soft-deleted-users", 4, seed=7)
    store = open_store()
    policy = load_policy(None)
    api = Incidents(store, policy)
    inc = api.open("Users missing after the cleanup job", [m.USERS], actor="pager")
    api.acknowledge(inc["id"], "alice")
    ctx = RecipeContext(db=db, policy=policy, store=store, now=datetime.now(timezone.utc))
    plan = engine.make_plan(ctx, "undelete", {"collection": m.USERS, "since": inj.time - timedelta(seconds=1),
                                              "soft": True}, actor="alice")
    secrets = {role: tokens.create(store, role, name)[1] for role, name in (("admin", "root-admin"), ("viewer", "vera"))}
    proc = subprocess.Popen([sys.executable, "-m", "fluxa_integrity", "web", "--port", "0"],
                            env={**os.environ, "FLUXA_HOME": str(fluxa_home), "FLUXA_MONGODB_URI": mongo_uri,
                                 "FLUXA_DB": db.name},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = StderrWatch(proc)
    try:
        url = watch.wait_for(r"serving the API on (http://127\.0\.0\.1:\d+) ").group(1)
        yield url, inc["id"], plan.id, secrets, api, hashes, truth, db, inj
    finally:
        proc.terminate()  # the server this fixture started
        watch.finish()
        store.dispose()


def test_an_admin_applies_a_plan_and_sees_its_verification_a_viewer_cannot(plan_server, browser):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, iid, pid, secrets, api, hashes, truth, db, inj = plan_server
    wait = WebDriverWait(browser, 20)
    shutil.rmtree(PLAN_ARTIFACTS, ignore_errors=True)
    PLAN_ARTIFACTS.mkdir(parents=True)
    after_fault = hashes()
    assert after_fault != truth

    def shot(name: str) -> None:
        path = PLAN_ARTIFACTS / f"{name}.png"
        browser.save_screenshot(str(path))
        print(f"screenshot: {path}")

    def submit(element) -> None:
        old = browser.find_element(By.TAG_NAME, "html")
        element.click()

        def replaced(_) -> bool:
            try:
                old.tag_name
                return False
            except WebDriverException:
                return True

        wait.until(replaced)

    def sign_in(token: str) -> None:
        browser.delete_all_cookies()
        browser.get(f"{url}/login")
        wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(token)
        submit(browser.find_element(By.ID, "sign-in"))

    # the admin: from the incident to its plans, the plan's diff, then approve and apply
    sign_in(secrets["admin"])
    browser.get(f"{url}/incidents/{iid}")
    submit(wait.until(EC.element_to_be_clickable((By.ID, "plans-link"))))
    listed = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"#plan-{pid} a")))
    assert "PLANNED" in browser.find_element(By.ID, f"plan-{pid}").text.upper()
    shot("00-plans-of-the-incident")
    submit(listed)
    assert wait.until(EC.visibility_of_element_located((By.ID, "plan-status"))).text.lower() == "planned"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#diff .doc")) == 4
    assert browser.find_elements(By.CSS_SELECTOR, "#diff tr.changed td.field")[0].text == "deletedAt"
    assert "NOT RUN" in browser.find_element(By.ID, "verify-result").text.upper()
    assert Select(browser.find_element(By.ID, "incident")).first_selected_option.get_attribute("value") == str(iid)
    shot("01-plan-admin")
    browser.find_element(By.ID, "confirm").send_keys(pid)
    submit(browser.find_element(By.ID, "apply"))
    verdict = wait.until(EC.visibility_of_element_located((By.ID, "verify-result")))
    assert "CLOSED" in verdict.text.upper() and "users.deletions" in verdict.text
    assert browser.find_element(By.ID, "plan-status").text.lower() == "applied"
    assert "verification: closed" in browser.find_element(By.ID, "flash").text
    assert hashes() == truth  # the users are back as they were before the fault
    actions = [(e["actor"], e["data"]["action"]) for e in api.timeline(iid) if e["kind"] == "recovery_action"]
    assert actions == [("root-admin", "recipe"), ("root-admin", "verify")]
    assert "root-admin" in browser.find_element(By.ID, "plan-history").text
    shot("02-plan-applied-verified")
    rows = api.get(iid)["timeline_rows"]
    browser.back()  # the apply form again: a second submission is refused, nothing written twice
    confirm = wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
    confirm.clear()  # the browser may restore what was typed
    confirm.send_keys(pid)
    submit(browser.find_element(By.ID, "apply"))
    assert "already applied" in wait.until(EC.visibility_of_element_located((By.ID, "flash"))).text
    assert api.get(iid)["timeline_rows"] == rows and hashes() == truth
    shot("03-plan-double-apply-refused")

    # the app writes one of the users again: the plan's dry run now shows it as a conflict
    db.users.update_one({"_id": inj.ids[0]}, {"$set": {"name": "Renamed By The App"}})
    now = hashes()

    # the viewer: the plan without any action form, and a POST with its own session refused
    sign_in(secrets["viewer"])
    browser.get(f"{url}/plans/{pid}")
    wait.until(EC.visibility_of_element_located((By.ID, "plan-status")))
    conflict = browser.find_element(By.CSS_SELECTOR, "#conflicts .doc.conflict")
    assert str(inj.ids[0]) in conflict.text and "changed in live after the apply wrote it" in conflict.text
    assert "Renamed By The App" in conflict.find_element(By.CSS_SELECTOR, "tr.changed").text
    forms = [f.get_attribute("action") for f in browser.find_elements(By.TAG_NAME, "form")]
    assert forms == [f"{url}/logout"]
    assert "@" in browser.find_element(By.ID, "diff").text and "***@" in browser.find_element(By.ID, "diff").text
    shot("04-plan-viewer")
    browser.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['incident', arguments[1]],
                              ['confirm', arguments[2]]]) {
          const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
        document.body.appendChild(f); f.submit();""", f"/plans/{pid}/undo", str(iid), pid)
    assert "needs the admin role" in wait.until(EC.visibility_of_element_located((By.ID, "refusal"))).text
    assert api.get(iid)["timeline_rows"] == rows and hashes() == now
    shot("05-plan-viewer-refused")


# -- the trends page (web/trends.py) -------------------------------------------------------------------

TREND_ARTIFACTS = Path(__file__).parent / "artifacts" / "web-trends"


def _seed_a_day(store, repo: Path) -> None:
    """A day of history through the catalog's and the runs' own writers: a full backup every 6 h,
    an oplog slice every 10 minutes but for a 3-hour archiver outage (its backlog archived at once
    when it came back), a check run every 2 hours (orphans growing, then fixed), 5-minute monitor
    rows of messages with a burst and a stop."""
    import math
    from datetime import datetime, timedelta, timezone

    from bson.timestamp import Timestamp

    from fluxa_integrity.backup import catalog
    from fluxa_integrity.checks.findings import FindingResult
    from fluxa_integrity.checks.history import record_run
    from fluxa_integrity.checks.runner import RunReport
    from fluxa_integrity.monitors.runner import Row, save_rows
    from fluxa_integrity.store.backup_models import OplogSlice

    utc = timezone.utc
    now = datetime.now(utc).replace(microsecond=0)
    t0 = now - timedelta(hours=24)
    colls = ["users", "conversations", "messages", "logs", "auditLog", "analytics", "preferences"]
    for h in range(2, 24, 6):
        at = t0 + timedelta(hours=h)
        bid = f"{at:%Y%m%dT%H%M%SZ}-trend"
        catalog.start_backup(store, bid, "full", "fluxa", repo, colls, at, Timestamp(int(at.timestamp()), 1))
        catalog.finish_backup(store, bid, size=1, file_count=1, finished_at=at + timedelta(minutes=4),
                              oplog_end=None, manifest_sha256="0" * 64)
    (repo / "oplog").mkdir(parents=True, exist_ok=True)
    outage = (t0 + timedelta(hours=9), t0 + timedelta(hours=12))
    prev, rows = None, []
    t = t0 + timedelta(hours=1)  # the archive reaches back before the first backup's start
    while t + timedelta(minutes=10) < now:
        first, last = int(t.timestamp()) + 1, int(t.timestamp()) + 600
        closed = max(datetime.fromtimestamp(last, utc) + timedelta(seconds=20), outage[1]) \
            if outage[0] <= datetime.fromtimestamp(last, utc) < outage[1] else datetime.fromtimestamp(last + 20, utc)
        path = repo / "oplog" / f"{first}.1-{last}.1.bson.zst"
        path.touch()
        rows.append(OplogSlice(repo=str(repo), path=str(path.relative_to(repo)), first_t=first, first_i=1, last_t=last,
                               last_i=1, prev_t=prev, prev_i=1 if prev else None,
                               first_wall=datetime.fromtimestamp(first, utc), last_wall=datetime.fromtimestamp(last, utc),
                               count=500, size=0, raw_bytes=1, sha256="0" * 64, created_at=closed))
        prev, t = last, t + timedelta(minutes=10)
    with store.session() as s:
        s.add_all(rows)
    for k in range(12):
        orphans = [3, 3, 5, 8, 8, 13, 21, 21, 0, 0, 0, 0][k]
        found = [FindingResult("references.messages.conversationId", "dangling", "messages", "referential",
                               "messages pointing at no conversation", count=orphans)] if orphans else []
        found += [FindingResult("schema.users.createdAt", "type", "users", "schema", "createdAt is a string", count=4)]
        record_run(store, RunReport(database="fluxa", started_at=t0 + timedelta(hours=2 * k, minutes=7), seconds=1.0,
                                    collections=colls, rules=["references.messages.conversationId",
                                                              "schema.users.createdAt"], docs={}, findings=found))
    step, monitor = timedelta(minutes=5), []
    start = t0 - timedelta(hours=6)
    burst, stop = now - timedelta(hours=5), now - timedelta(hours=2)
    while start + step <= now:
        n = int(30 + 12 * math.sin(start.hour / 24 * 2 * math.pi) + (start.minute % 3))
        if burst <= start < burst + step:
            n = 140  # a burst
        if stop <= start < stop + 2 * step:
            n = 0  # the application stopped writing
        monitor.append((Row("messages", start, True, {"inserts": n, "updates": n // 3, "deletes": 0, "sampled": 0,
                                                      "fields": {}}), start + step, []))
        start += step
    save_rows(store, "fluxa", monitor, None)


def test_the_trends_page_in_chromium(server, browser):
    """A screenshot of /console/trends over a seeded day, for a viewer: the SVG charts render (they
    have a size on the page) and say what they show."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from fluxa_integrity.store import open_store

    url, _, secrets, _ = server
    store = open_store()
    _seed_a_day(store, Path(os.environ["FLUXA_HOME"]) / "repo")
    store.dispose()
    wait = WebDriverWait(browser, 30)
    shutil.rmtree(TREND_ARTIFACTS, ignore_errors=True)
    TREND_ARTIFACTS.mkdir(parents=True)
    browser.get(f"{url}/login")
    wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys(secrets["viewer"])
    browser.find_element(By.ID, "sign-in").click()
    wait.until(EC.visibility_of_element_located((By.LINK_TEXT, "Trends"))).click()
    chart = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#rpo-user_accounts svg.chart")))
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    assert "Over the RPO for" in browser.find_element(By.ID, "rpo-user_accounts").text  # the outage
    assert "a spike" in browser.page_source or "a drop" in browser.page_source or "out of the band" in browser.page_source
    browser.set_window_size(1280, browser.execute_script("return document.body.scrollHeight") + 40)
    path = TREND_ARTIFACTS / "trends.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
