"""API tokens: created, listed and revoked by the CLI (`fluxa-integrity token`), checked by the web.

Shape: a token is ``fxt_<id>_<secret>``; ``id`` (12 hex characters) is public and names the row of
``api_tokens`` (store/access_models.py); ``secret`` (43 url-safe characters, 256 random bits) is
shown once, at creation, and only its sha256 is stored. Checking a token looks the row up by id
and compares the hashes with ``hmac.compare_digest`` (constant time).

Roles are ordered: viewer (read) < responder (incident actions) < admin (apply and undo recovery,
restores into production, tokens). A route names the least role it needs; a higher role passes.

Failure: a malformed, unknown, expired or revoked token is an ``AccessDenied`` saying which (the
web answers 401 with that message); nothing is written when a token is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from ..errors import FluxaError
from ..policy.durations import parse_duration
from ..store import Store
from ..store.access_models import ApiToken

ROLES = ("viewer", "responder", "admin")
PREFIX = "fxt_"


def now() -> datetime:
    return datetime.now(timezone.utc)


def utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes, PostgreSQL aware ones: both mean UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    return utc(dt).isoformat(timespec="seconds") if dt is not None else None


class AccessDenied(FluxaError):
    """A token that does not let its holder in (malformed, unknown, expired or revoked)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, its name (the actor on timelines) and its role."""

    token_id: str
    name: str
    role: str

    def may(self, needed: str) -> bool:
        return allows(self.role, needed)


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what needs ``needed`` (roles are ordered)."""
    return ROLES.index(role) >= ROLES.index(needed)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise FluxaError(f"unknown role {role!r}", f"one of: {', '.join(ROLES)}")
    return role


def parse_expiry(text: str | None, at: datetime | None = None) -> datetime | None:
    """``30d`` / ``12h`` -> that long from ``at`` (default now); None or "never" -> no expiry."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    try:
        delta = parse_duration(text)
    except ValueError as exc:
        raise FluxaError(f"--expires {text!r}: {exc}", "e.g. --expires 30d, 12h or never") from exc
    if delta <= timedelta(0):
        raise FluxaError(f"--expires {text!r}: a token must live a while", "e.g. --expires 30d")
    return (utc(at) or now()) + delta


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _state(row: ApiToken, at: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and utc(row.expires_at) <= at:
        return "expired"
    return "active"


def as_dict(row: ApiToken, at: datetime | None = None) -> dict:
    """A token as `token list` and the API show it: never its secret, nor the secret's hash."""
    return {"id": row.id, "name": row.name, "role": row.role, "state": _state(row, utc(at) or now()),
            "created_at": iso(row.created_at), "created_by": row.created_by,
            "expires_at": iso(row.expires_at), "revoked_at": iso(row.revoked_at)}


def create(store: Store, role: str, name: str | None = None, expires_at: datetime | None = None,
           created_by: str = "fluxa-integrity", at: datetime | None = None) -> tuple[dict, str]:
    """A new token: (its row as a dict, the token string to hand over - shown only now)."""
    check_role(role)
    at = utc(at) or now()
    if expires_at is not None and utc(expires_at) <= at:
        raise FluxaError("the token would be expired already", "give a future expiry, e.g. --expires 30d")
    if name is not None and not name.strip():
        raise FluxaError("a token's name cannot be empty", "--name alice (it is the actor on incident timelines)")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = ApiToken(id=token_id, name=(name or f"{role}-{token_id}").strip(), role=role,
                   secret_sha256=_digest(secret), created_at=at, created_by=created_by,
                   expires_at=utc(expires_at), revoked_at=None)
    with store.session() as s:
        s.add(row)
    return as_dict(row, at), f"{PREFIX}{token_id}_{secret}"


def list_tokens(store: Store, at: datetime | None = None) -> list[dict]:
    """Every token, newest first, with its state (active, expired, revoked)."""
    with store.session() as s:
        rows = s.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id)).all()
        return [as_dict(r, at) for r in rows]


def revoke(store: Store, token_id: str, at: datetime | None = None) -> dict:
    """Refuse the token from now on (its row stays, for the record)."""
    at = utc(at) or now()
    token_id = token_id.removeprefix(PREFIX).split("_", 1)[0]  # a whole token pasted by mistake: its id only
    with store.session() as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            raise FluxaError(f"no token {token_id!r}", "list them with `fluxa-integrity token list`")
        if row.revoked_at is not None:
            raise FluxaError(f"token {token_id} was already revoked at {iso(row.revoked_at)}")
        row.revoked_at = at
        return as_dict(row, at)


def authenticate(store: Store, presented: str, at: datetime | None = None) -> Principal:
    """The caller a token string stands for; ``AccessDenied`` saying why not."""
    at = utc(at) or now()
    body = presented.strip()
    if not body.startswith(PREFIX) or body.count("_") < 2:
        raise AccessDenied("malformed API token", f"a token looks like {PREFIX}<id>_<secret>: "
                           "create one with `fluxa-integrity token create --role viewer`")
    token_id, secret = body[len(PREFIX):].split("_", 1)
    with store.session() as s:
        row = s.get(ApiToken, token_id)
        # an unknown id still costs a digest comparison, so timing does not tell ids apart
        expected = row.secret_sha256 if row is not None else _digest(secrets.token_urlsafe(32))
        matches = hmac.compare_digest(_digest(secret), expected)
        if row is None or not matches:
            raise AccessDenied("invalid API token", "check the token, or create one with "
                               "`fluxa-integrity token create --role viewer`")
        state = _state(row, at)
        if state == "revoked":
            raise AccessDenied(f"API token {row.id} was revoked at {iso(row.revoked_at)}",
                               "ask an admin for a new token (`fluxa-integrity token create`)")
        if state == "expired":
            raise AccessDenied(f"API token {row.id} expired at {iso(row.expires_at)}",
                               "ask an admin for a new token (`fluxa-integrity token create`)")
        return Principal(row.id, row.name, row.role)
