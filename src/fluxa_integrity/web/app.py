"""``create_app()``: the HTTP API as one FastAPI application (OpenAPI at /openapi.json, docs at /docs).

Shape: the app holds one ``Incidents`` (incidents/api.py: the store, the policy and the
notification channels, as the CLI builds them) in ``app.state.incidents`` and its store in
``app.state.store``; routes in reading.py (viewer) and incident_actions.py (responder) reach them
through the request; token_routes.py (admin) manages tokens; recovery_routes.py serves recovery plans (dry runs for
responders; approve, apply, undo and promote for admins) and the console's plan pages. Tokens are checked against that store (auth.py). Errors are JSON
``{"error", "hint"}`` (errors.py). A failed notification delivery does not fail the request that
caused it: it is logged, and queued for retry as with the CLI (`incident notify-retry`).
The responder's console (console.py: HTML pages at /, /login, /incidents/ID, a session cookie and
CSRF-checked forms) and the public status page (status_page.py: /status, /status/feed.atom) are
routes of the same app over the same functions; their templates and CSS ship in web/templates
and web/static (pages.py renders them). backups_page.py draws /console/backups (backups, restores, the
oplog archive's windows and gaps, RPO/RTO, drills) from reading.py's routes.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__

from . import console, errors, incident_actions, reading, recovery_routes, status_page, token_routes
from . import trends  # the console's plots (/console/trends)
from . import backups_page  # the console's backups page (/console/backups)
from .pages import STATIC

log = logging.getLogger("fluxa_integrity.web")

DESCRIPTION = """The HTTP API of Fluxa Integrity, over the same domain code as the CLI.

Every route but this schema and the docs needs `Authorization: Bearer TOKEN`, a token from
`fluxa-integrity token create --role viewer|responder|admin`. Viewers read (emails masked);
responders also act on incidents (the token's name is the actor on the timeline); admins also
approve, apply and undo recovery plans, promote restored data and manage tokens.
Errors are `{"error": "...", "hint": "..."}`."""


def create_app(incidents=None, policy=None) -> FastAPI:
    """The API over ``incidents`` (an ``Incidents``; default: from the environment as the CLI
    builds it, with ``policy`` or the configured one)."""
    if incidents is None:
        from ..incidents.api import Incidents

        incidents = Incidents.from_environment(policy)
    incidents.on_delivery_failure = lambda f: log.warning(
        "notification failed: incident %s %s via %s (attempts %s)", f.get("incident"), f.get("about"),
        f.get("error"), f.get("attempts"))
    app = FastAPI(title="Fluxa Integrity API", version=__version__, description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.incidents = incidents
    app.state.store = incidents.store
    errors.install(app)
    app.include_router(reading.router)
    app.include_router(incident_actions.router)
    app.include_router(token_routes.router)
    app.include_router(recovery_routes.router)  # recovery plans: dry run, approve, apply, verify, undo, promote
    app.state.csrf_key = secrets.token_bytes(32)  # the console's CSRF tokens are HMACs under it
    console.install(app)
    app.include_router(console.router)
    app.include_router(trends.router)
    app.include_router(backups_page.router)
    app.include_router(recovery_routes.pages)  # the console's plan pages
    app.include_router(status_page.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
