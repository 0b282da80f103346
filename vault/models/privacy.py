"""Privacy-office tables: restrictions of processing, and the shapes of a subject-access answer.

A restriction is a row, not a recording status: retention and erasure keep running on a
restricted recording (the notice's "restriction of use" limits use, never deletion), so the
lifecycle's state machine is untouched. What it limits is access, and the one rule for that is
:func:`restriction_allows`, used by the access checks and the per-segment stream re-check alike.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict, field_validator
from sqlmodel import Field, SQLModel, col

from vault.models._types import _ts
from vault.models.access import GrantKind
from vault.validation import MultilineText, Text

MAX_CALL_IDS = 100


class RestrictionCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: MultilineText = Field(max_length=2000)


class RestrictionPublic(SQLModel):
    id: uuid.UUID
    recording_id: uuid.UUID
    reason: str
    placed_at: datetime
    lifted_at: datetime | None
    lift_reason: str | None
    grants_revoked: int = 0


class Restriction(SQLModel, table=True):
    """One restriction of one recording; active while ``lifted_at`` is NULL (at most one)."""

    __tablename__ = "recording_restriction"
    # At most one active restriction per recording, whatever two privacy officers race.
    __table_args__ = (
        sa.Index(
            "ux_recording_restriction_active", "recording_id", unique=True,
            sqlite_where=sa.text("lifted_at IS NULL"),
            postgresql_where=sa.text("lifted_at IS NULL"),
        ),
    )  # fmt: skip
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", index=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    placed_by: str = Field(max_length=64)  # the actor's opaque audit name
    placed_at: datetime = _ts()
    lifted_at: datetime | None = _ts(nullable=True)
    lifted_by: str | None = Field(default=None, max_length=64)
    lift_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))


def restricted(recording_id: Any) -> sa.ColumnElement[bool]:
    """SQL: an active (unlifted) restriction covers this recording."""
    return sa.exists().where(
        Restriction.recording_id == recording_id, col(Restriction.lifted_at).is_(None)
    )


def restriction_allows(grant_kind: Any, recording_id: Any) -> sa.ColumnElement[bool]:
    """SQL: a grant of ``grant_kind`` may open ``recording_id`` as far as restriction goes.

    The one rule: a restricted recording opens to security break-glass only (flagged on the
    grant); every other grant stops at the next re-check, whatever race issued it.
    """
    return sa.or_(grant_kind == GrantKind.break_glass.value, ~restricted(recording_id))


# --- subject access ---------------------------------------------------------------------------


class SubjectAccessCreate(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    tenant: Text = Field(min_length=1, max_length=64)
    call_ids: list[Text] = Field(min_length=1, max_length=MAX_CALL_IDS)

    @field_validator("call_ids")
    @classmethod
    def _call_ids(cls, values: list[str]) -> list[str]:
        if any(not 1 <= len(v) <= 256 for v in values):
            raise ValueError("each call id is 1-256 characters")
        if len(set(values)) != len(values):
            raise ValueError("call ids must not repeat")
        return values
