"""``create_app()``: the HTTP API as one FastAPI application (OpenAPI at /openapi.json, docs at /docs).

Shape: the app holds one ``Incidents`` (incidents/api.py: the store, the policy and the
notification channels, as the CLI builds them) in ``app.state.incidents`` and its store in
``app.state.store``; routes in reading.py (viewer) and incident_actions.py (responder) reach them
through the request; token_routes.py (admin) manages tokens. Tokens are checked against that store (auth.py). Errors are JSON
``{"error", "hint"}`` (errors.py). A failed notification delivery does not fail the request that
caused it: it is logged, and queued for retry as with the CLI (`incident notify-retry`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from .. import __version__
from . import errors, incident_actions, reading, token_routes

log = logging.getLogger("fluxa_integrity.web")

DESCRIPTION = """The HTTP API of Fluxa Integrity, over the same domain code as the CLI.

Every route but this schema and the docs needs `Authorization: Bearer TOKEN`, a token from
`fluxa-integrity token create --role viewer|responder|admin`. Viewers read (emails masked);
responders also act on incidents (the token's name is the actor on the timeline); admins also
get what comes later (recovery apply and undo, restores into production, tokens).
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
    return app
