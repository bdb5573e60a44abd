"""API tokens of the web face (issue 12): who may call the HTTP API, with which role.

Kept apart from store/models.py on the same ``Base``; created by the migration 0012_api_tokens.

- ``api_tokens``: one row per token. ``id`` is the public part of the token (``fxt_<id>_<secret>``
  is what the holder sends); only ``secret_sha256`` (hex sha256 of the secret) is stored, so a copy
  of the state store cannot be replayed as a token. ``revoked_at`` set: refused from then on;
  ``expires_at`` passed: refused. Rows are never deleted, so ``token list`` keeps the history of
  who could call the API.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class ApiToken(Base):
    """One API token: its role, its holder's name (the actor on incident timelines), its life."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # viewer | responder | admin
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
