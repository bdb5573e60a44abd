"""Every error the API answers is ``{"error": message, "hint": what to do}`` with a fitting status.

- 401: no token, or a malformed, unknown, expired or revoked one (access/tokens.py says which),
  with ``WWW-Authenticate: Bearer``.
- 403: the token's role is below the route's (the message names both).
- 404: an unknown id (the domain's own "no incident 7" message) or an unknown route.
- 409: an incident action the incident's state refuses (acknowledge twice, close before resolve).
- 400: any other FluxaError of the domain (unknown role or template, a placeholder left unfilled).
- 400 also: a body FastAPI cannot parse at all, a database or collection name MongoDB refuses
  (pymongo's InvalidName, the server's InvalidNamespace) - the caller's input, not a bug.
- 422: a malformed body, path or query value: each problem as ``field: what is wrong``; ``details``
  carries FastAPI's own list.
- 500: a bug; the traceback goes to the server's log, never to the client.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pymongo.errors import InvalidName, OperationFailure

from ..errors import FluxaError

log = logging.getLogger("fluxa_integrity.web")
INVALID_NAMESPACE = 73  # MongoDB's error code for a database or collection name it refuses


class ApiError(Exception):
    def __init__(self, status: int, message: str, hint: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.hint, self.headers = status, message, hint, headers


def error_body(message: str, hint: str | None = None, **extra) -> dict:
    return {"error": message, "hint": hint, **extra}


@contextmanager
def refused(status: int = 400) -> Iterator[None]:
    """A FluxaError raised by the domain inside becomes an API error with ``status``."""
    try:
        yield
    except FluxaError as exc:
        raise ApiError(status, exc.message, exc.hint) from exc


def not_found() -> "contextmanager":
    """For lookups: the domain's "no such id" FluxaError becomes a 404."""
    return refused(404)


def default_hint(status: int, request: Request) -> str:
    """A refusal of the domain that carries no hint of its own still says where to look."""
    if status == 409:
        return "the resource's current state refuses it: read it first (GET), then pick the next step"
    if status == 404:
        return "list what exists (/api/incidents, /api/findings, /api/backups, /api/recovery/plans)"
    return f"see what {request.method} {request.url.path} takes at /docs"


def _problem(e: dict) -> str:
    if e.get("type") == "json_invalid":  # loc is (body, character position)
        why = (e.get("ctx") or {}).get("error")
        return f"the body is not valid JSON ({why or 'cannot be decoded'}, at character {e.get('loc', ('', '?'))[-1]})"
    return f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}"


def _location(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) if parts else "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.hint or default_hint(exc.status, request)),
                            status_code=exc.status, headers=exc.headers)

    @app.exception_handler(OverflowError)
    async def _too_large(request: Request, exc: OverflowError):
        if "too large to convert" not in str(exc):  # SQLite's refusal of an id beyond 64 bits; else a bug
            return await _bug(request, exc)
        return JSONResponse(error_body("a number in the request is too large for an id", "ids are positive "
                                       "integers below 2^31; see /docs"), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = [_problem(e) for e in exc.errors()]
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse(error_body("invalid request: " + "; ".join(problems),
                                       f"see the schema of {request.method} {request.url.path} at /docs", details=details),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            body = error_body(f"no route {request.method} {request.url.path}", "the API's routes are listed at /docs")
        elif exc.status_code == 405:
            body = error_body(f"{request.method} is not allowed on {request.url.path}", "see /docs for its methods")
        elif exc.status_code == 400:  # FastAPI's own: a body it could not parse (form data, a bad encoding)
            body = error_body(f"the body could not be read ({exc.detail})", "send JSON with Content-Type: "
                              f"application/json; the schema of {request.method} {request.url.path} is at /docs")
        else:
            body = error_body(str(exc.detail), "see /docs")
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(InvalidName)
    async def _bad_name(request: Request, exc: InvalidName):
        # a database or collection name from the request that MongoDB's client refuses: the caller's
        # input, not a bug
        return JSONResponse(error_body(f"invalid database or collection name: {exc}",
                                       "MongoDB names have no '$', '/', '\\', '.', spaces or NUL; see /docs"),
                            status_code=400)

    @app.exception_handler(OperationFailure)
    async def _refused_by_mongodb(request: Request, exc: OperationFailure):
        if exc.code == INVALID_NAMESPACE:  # the server's verdict on such a name
            return JSONResponse(error_body(f"invalid database or collection name: {exc.details.get('errmsg') if exc.details else exc}",
                                           "MongoDB names have no '$', '/', '\\', '.', spaces or NUL; see /docs"),
                                status_code=400)
        return await _bug(request, exc)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(error_body("internal error", "the server's log has the details; please report it"),
                            status_code=500)
