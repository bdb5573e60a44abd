"""The responder's console: server-rendered pages over the same functions as the API.

Reading goes through reading.py's route functions (so a viewer gets exactly what the API gives a
viewer: emails masked) and every action through incident_actions.py's (so a tick in the console
writes the timeline entry the API and the CLI write, with the token's name as the actor).

Session: /login takes an API token (the same tokens as the API, `fluxa-integrity token create`),
refuses a sign-in a browser says comes from another site (Origin, Sec-Fetch-Site: login CSRF),
checks the token, and keeps it in an HttpOnly, SameSite=Strict cookie; every page checks it again, so a
revoked or expired token ends the session at the next click. CSRF: each form carries a token that
is an HMAC of the session's API token under a key the app draws at start; every POST but /login
checks it (403 otherwise), and an action needs the responder role (403 for a viewer, nothing
written). Refusals of the domain (acknowledge twice, a placeholder left) come back as a message
on the incident page with the domain's hint.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from ..access.tokens import AccessDenied, Principal, authenticate
from ..comms.templates import placeholders
from . import incident_actions as act
from . import reading
from .errors import ApiError
from .pages import page
from .shown import shown

router = APIRouter(include_in_schema=False)
COOKIE = "fluxa_session"
TEMPLATES = ("initial", "progress", "resolution")


class NotSignedIn(Exception):
    def __init__(self, why: str | None = None):
        super().__init__(why)
        self.why = why


def csrf_for(request: Request, token: str) -> str:
    return hmac.new(request.app.state.csrf_key, token.encode(), hashlib.sha256).hexdigest()


def session(request: Request) -> tuple[Principal, str]:
    token = request.cookies.get(COOKIE)
    if not token:
        raise NotSignedIn()
    try:
        return authenticate(request.app.state.store, token), csrf_for(request, token)
    except AccessDenied as exc:
        raise NotSignedIn(exc.message) from exc


async def form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST, one value per field."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def checked(request: Request) -> tuple[Principal, dict]:
    """The session and form of a POST: 403 without a matching CSRF token."""
    who, csrf = session(request)
    data = await form(request)
    if not hmac.compare_digest(data.get("csrf", ""), csrf):
        raise ApiError(403, "the form's CSRF token is missing or wrong", "reload the page and submit it again")
    return who, data


def install(app) -> None:
    @app.exception_handler(NotSignedIn)
    async def _to_login(request: Request, exc: NotSignedIn):
        target = "/login" + (f"?why={quote(exc.why)}" if exc.why else "")
        resp = RedirectResponse(target, status_code=303)
        if exc.why:
            resp.delete_cookie(COOKIE)
        return resp


def _refusal(who: Principal, csrf: str, exc: ApiError):
    return page("message.html", exc.status, who=who, csrf=csrf, title="Refused", message=exc.message, hint=exc.hint)


# -- signing in and out -------------------------------------------------------------------------

@router.get("/login")
def login_form(request: Request, why: str | None = None):
    return page("login.html", why=why)


def cross_site(request: Request) -> str | None:
    """Why a POST comes from another site, or None: a browser says so itself (Sec-Fetch-Site:
    cross-site or same-site; an Origin that is not this server's host). Login CSRF - another
    site's page signing the browser in with the attacker's token, so what the victim then does
    is recorded as the attacker's - needs a browser, and a browser sends these headers; clients
    that send neither (curl, scripts, tests) are not the victims of a forged form."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("origin")
    if origin is not None:
        expected = request.headers.get("x-forwarded-host") or request.headers.get("host")
        if origin == "null" or urlsplit(origin).netloc != expected:
            return f"Origin: {origin}"
    return None


@router.post("/login")
async def login(request: Request):
    other = cross_site(request)
    if other:
        return page("login.html", 403, why=f"a sign-in sent from another site is refused ({other})",
                    hint="open this server's own /login and sign in there")
    token = (await form(request)).get("token", "").strip()
    try:
        authenticate(request.app.state.store, token)
    except AccessDenied as exc:
        return page("login.html", 401, why=exc.message, hint=exc.hint)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return resp


@router.post("/logout")
async def logout(request: Request):
    await checked(request)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp


# -- pages --------------------------------------------------------------------------------------

CARDS = 50  # the most urgent live incidents drawn on the dashboard; ?all=1 draws every one


@router.get("/")
def dashboard(request: Request, all_: bool = Query(False, alias="all")):
    """Live incidents most urgent first (at most CARDS cards unless ?all=1, with the count of
    every one by severity and status), open findings counted by class in the store, RPO/RTO,
    the latest check runs: incidents/board.py, a handful of queries whatever the store holds."""
    from ..incidents.board import live_board, open_findings_by_class

    who, csrf = session(request)
    api = reading.incidents_of(request)
    board = shown(who, live_board(api.store, api.policy, limit=None if all_ else CARDS))
    by_class = {dc or "(unclassified)": n for dc, n in open_findings_by_class(api.store).items()}
    runs = reading.list_check_runs(request, None, 8, who)
    return page("dashboard.html", who=who, csrf=csrf, board=board, live=board["incidents"], findings=by_class,
                finding_total=sum(by_class.values()), runs=runs, rpo=_rpo(request, who),
                classes=_class_titles(request))


def _class_titles(request: Request) -> dict[str, str]:
    return {d.name: d.title for d in reading.incidents_of(request).policy.data_classes}


def _rpo(request: Request, who: Principal) -> dict:
    """RPO per data class (backup/objectives.py, as the service's rpo job checks it) with the RTO
    the latest restore drill measured, for the application database of the configuration;
    unavailable rather than a failed page."""
    import os

    from ..backup.objectives import rpo_status, rto_status
    from ..config import DEFAULT_DB, load_config_file

    db = os.environ.get("FLUXA_DB") or load_config_file().get("db") or DEFAULT_DB
    store, policy = request.app.state.store, reading.incidents_of(request).policy
    try:
        rto = {r["data_class"]: r for r in shown(who, rto_status(store, policy, db))}
        return {"db": db, "rows": [{**r, "rto": rto.get(r["data_class"])} for r in shown(who, rpo_status(store, policy, db))]}
    except Exception as exc:  # a catalog problem must not hide the incidents
        return {"db": db, "rows": [], "error": str(exc)}


@router.get("/incidents/{incident_id}")
def incident_page(request: Request, incident_id: int, template: str | None = None):
    who, csrf = session(request)
    try:
        inc = reading.show_incident(request, incident_id, who)
    except ApiError as exc:
        return _refusal(who, csrf, exc)
    return _incident(request, who, csrf, inc)


def _incident(request: Request, who: Principal, csrf: str, inc: dict, status: int = 200, flash: dict | None = None,
              draft: dict | None = None):
    checklist = reading.incident_checklist(request, inc["id"], who)
    plans = [p for p in reading.list_plans(request, None, 200, who) if p.get("incident_id") == inc["id"]]
    policy = reading.incidents_of(request).policy
    fields = {t: [p for p in placeholders(getattr(policy.templates, t).text)] for t in TEMPLATES}
    return page("incident.html", status, who=who, csrf=csrf, inc=inc, checklist=checklist, flash=flash, draft=draft,
                templates=TEMPLATES, fields=fields, classes=_class_titles(request), plans=plans,
                can_act=who.may("responder"), live=inc["status"] not in ("resolved", "closed"))


async def _act(request: Request, incident_id: int, action):
    """Run one incident action from a form: CSRF and role first, then the API's own route function."""
    who, data = await checked(request)
    csrf = data["csrf"]
    if not who.may("responder"):
        return _refusal(who, csrf, ApiError(403, f"this needs the responder role; token {who.token_id} ({who.name}) "
                                                 f"is {who.role}", "ask an admin for a token with that role"))
    try:
        result = action(who, data)
    except ApiError as exc:
        try:
            inc = reading.show_incident(request, incident_id, who)
        except ApiError:
            return _refusal(who, csrf, exc)
        return _incident(request, who, csrf, inc, exc.status, {"kind": "error", "text": exc.message, "hint": exc.hint},
                         data if "template" in data else None)
    if isinstance(result, Response):
        return result
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)


@router.post("/incidents/{incident_id}/ack")
async def acknowledge(request: Request, incident_id: int):
    return await _act(request, incident_id, lambda who, data: act.acknowledge(request, incident_id, who))


@router.post("/incidents/{incident_id}/checklist/{item}")
async def tick(request: Request, incident_id: int, item: str):
    return await _act(request, incident_id, lambda who, data: act.checklist_item(
        request, incident_id, item, act.ChecklistBody(done=True, note=data.get("note") or None), who))


@router.post("/incidents/{incident_id}/note")
async def note(request: Request, incident_id: int):
    def run(who, data):
        if not data.get("text", "").strip():
            raise ApiError(400, "the note is empty", "write what happened")
        return act.note(request, incident_id, act.NoteBody(text=data["text"]), who)

    return await _act(request, incident_id, run)


@router.post("/incidents/{incident_id}/comms")
async def comms(request: Request, incident_id: int):
    """Render (preview) or publish a status-page template; values as ``value.PLACEHOLDER`` fields."""
    def run(who, data):
        template = data.get("template", "")
        if template not in TEMPLATES:
            raise ApiError(400, f"unknown template {template!r}", "initial, progress or resolution")
        values = {k[len("value."):]: v for k, v in data.items() if k.startswith("value.") and v.strip()}
        publish = data.get("do") == "publish"
        out = act.comms(request, incident_id, template, act.CommsBody(values=values, publish=publish), who)
        if publish:
            return None
        inc = reading.show_incident(request, incident_id, who)
        return _incident(request, who, data["csrf"], inc, draft={"template": template, **data, "preview": out})

    return await _act(request, incident_id, run)
