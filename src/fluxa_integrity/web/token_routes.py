"""Tokens over the API (admin only): the same access/tokens.py functions as `fluxa-integrity token`.
A created token's secret is in the response once, as with the CLI; the caller's token is the
``created_by`` of the new one."""

from __future__ import annotations

from typing import Literal, Optional

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..access import tokens
from ..access.tokens import Principal
from .auth import require
from .errors import ApiError, refused
from .reading import store_of
from .shown import jsonable

router = APIRouter(prefix="/api/tokens", tags=["access"])
admin = require("admin")


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["viewer", "responder", "admin"]
    name: Optional[str] = Field(None, description="Who holds it: the actor on incident timelines.")
    expires: Optional[str] = Field(None, description="Lifetime such as 30d or 12h (default: never).")


@router.get("")
def list_tokens(request: Request, who: Principal = Depends(admin)):
    """Every token with its role and state, never its secret (`token list`)."""
    return tokens.list_tokens(store_of(request))


@router.post("", status_code=201)
def create_token(request: Request, body: TokenBody, who: Principal = Depends(admin)):
    """Create a token; its secret is in this response only (`token create`)."""
    with refused(400):
        row, secret = tokens.create(store_of(request), body.role, body.name, tokens.parse_expiry(body.expires),
                                    created_by=f"{who.name} (token {who.token_id}, API)")
    return jsonable({**row, "token": secret})  # not masked: handing the secret over is the point


@router.post("/{token_id}/revoke")
def revoke_token(request: Request, token_id: str, who: Principal = Depends(admin)):
    """Refuse a token from now on (`token revoke`)."""
    store = store_of(request)
    if token_id not in {t["id"] for t in tokens.list_tokens(store)}:
        raise ApiError(404, f"no token {token_id!r}", "list them at GET /api/tokens")
    with refused(409):  # already revoked
        return tokens.revoke(store, token_id)
