"""Who is calling, and may they: the bearer token checked on every route but the schema and docs.

``principal`` (a FastAPI dependency) reads ``Authorization: Bearer <token>`` and checks it with
access/tokens.py against the app's store: 401 when missing or refused. ``require(role)`` builds the
dependency a route declares (``who: Principal = Depends(require("responder"))``): 403 when the
token's role is below it. The token's name is the actor a write records on the incident timeline,
as the CLI records its ``--by``.
"""

from __future__ import annotations

from typing import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..access.tokens import AccessDenied, Principal, authenticate, check_role
from .errors import ApiError

bearer = HTTPBearer(auto_error=False, description="An API token from `fluxa-integrity token create --role ROLE`.")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def principal(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if creds is None or not creds.credentials:
        raise ApiError(401, "no API token", "send `Authorization: Bearer TOKEN`; create one with "
                       "`fluxa-integrity token create --role viewer`", CHALLENGE)
    try:
        return authenticate(request.app.state.store, creds.credentials)
    except AccessDenied as exc:
        raise ApiError(401, exc.message, exc.hint, CHALLENGE) from exc


def require(role: str) -> Callable[..., Principal]:
    check_role(role)

    def dependency(who: Principal = Depends(principal)) -> Principal:
        if not who.may(role):
            raise ApiError(403, f"this needs the {role} role; token {who.token_id} ({who.name}) is {who.role}",
                           "ask an admin for a token with that role")
        return who

    dependency.__name__ = f"require_{role}"
    return dependency
