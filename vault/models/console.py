"""Console sessions: an API key exchanged for an opaque cookie, kept in the database so that any
API process serves it. Only the SHA-256 of the cookie is stored; the CSRF token and the media
token key are per session and die with it."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from vault.models._types import _ts


class ConsoleSessionPublic(SQLModel):
    id: uuid.UUID
    principal_id: uuid.UUID
    role: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_session"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    principal_id: uuid.UUID = Field(foreign_key="principal.id", index=True)
    api_key_id: uuid.UUID = Field(foreign_key="api_key.id")
    # The role at sign-in: a changed role ends the session at the next page.
    role: str = Field(max_length=16)
    csrf_token: str = Field(max_length=64)
    media_key: str = Field(max_length=64)  # hex HMAC key of this session's media tokens
    created_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)  # the absolute lifetime
    ended_at: datetime | None = _ts(nullable=True)
    end_reason: str | None = Field(default=None, max_length=32)
