"""Sub-processor tables: the registry, the principals bound to an entry, and hand-offs.

A registry row is never deleted: removal stamps ``removed_at`` and the public list keeps showing
it (the notice's "up-to-date list" includes who stopped receiving data, and when). Names are
unique for ever, so a tenant's opt-in (which names the sub-processor) can never silently pass
to a later entry of the same name.

A :class:`Handoff` is one recording made available to one sub-processor, at most once
(``ux_handoff_recording_subprocessor``). The download itself is an export
(:mod:`vault.exports`, kind ``handoff``, subject = the hand-off's id): its expiry, single use,
receipt and revocation are the export's; the hand-off row holds what is the sub-processor's:
its state in the issuing job, the token sealed to its ``age`` key until claimed, the transfer
it was, and the transcript that came back.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from vault.models._types import _ts
from vault.validation import MultilineText, Text

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SubprocessorBase(SQLModel):
    name: str = Field(min_length=1, max_length=64, regex=NAME_PATTERN)
    purpose: str = Field(min_length=1, max_length=32)  # a policy purpose, e.g. transcription
    region: str = Field(min_length=1, max_length=64)


class SubprocessorCreate(SubprocessorBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    purpose: Text = Field(min_length=1, max_length=32)
    region: Text = Field(min_length=1, max_length=64)
    contract_ref: Text = Field(min_length=1, max_length=256)
    age_recipient: Text = Field(min_length=1, max_length=128)  # "age1..." (X25519)


class SubprocessorRemove(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: MultilineText = Field(min_length=1, max_length=2000)


class SubprocessorPublic(SubprocessorBase):
    """What staff see (``GET /v1/subprocessors``)."""

    id: uuid.UUID
    contract_ref: str
    age_recipient: str
    age_fingerprint: str  # what an operator compares with the sub-processor out of band
    added_at: datetime
    removed_at: datetime | None
    removal_reason: str | None


class SubprocessorListing(SQLModel):
    """The public list (``/subprocessors``): nothing of the contract, no key."""

    name: str
    purpose: str
    region: str
    added_at: datetime
    removed_at: datetime | None


class Subprocessor(SubprocessorBase, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), unique=True, nullable=False))
    contract_ref: str = Field(max_length=256)
    age_recipient: str = Field(max_length=128)  # canonical text (crypto.age.parse_recipient)
    added_at: datetime = _ts()
    added_by: str = Field(max_length=64)  # opaque audit names only
    removed_at: datetime | None = _ts(nullable=True)
    removed_by: str | None = Field(default=None, max_length=64)
    removal_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))


class SubprocessorPrincipal(SQLModel, table=True):
    """A principal of role ``subprocessor`` is bound to exactly one registry entry."""

    __tablename__ = "subprocessor_principal"
    principal_id: uuid.UUID = Field(foreign_key="principal.id", primary_key=True)
    subprocessor_id: uuid.UUID = Field(foreign_key="subprocessor.id", index=True)


# --- hand-offs ------------------------------------------------------------------------------------


class HandoffStatus(StrEnum):
    pending = "pending"  # claimed by the job; the export is being produced
    issued = "issued"  # the export exists; its own row says open, completed, expired, revoked
    failed = "failed"  # the export could not be produced (``failure`` names why)
    cancelled = "cancelled"  # a rule changed while the export was produced: revoked at once


class HandoffPublic(SQLModel):
    id: uuid.UUID
    subprocessor: str
    recording_id: uuid.UUID
    # open | completed | expired | revoked (from the export), else the hand-off's own status
    state: str
    issued_at: datetime | None
    expires_at: datetime | None
    token_claimed: bool
    size: int | None = None  # of the age file
    sha256: str | None = None  # of the age file
    transcript_id: uuid.UUID | None = None


class HandoffClaim(SQLModel):
    """The token, once: an age file encrypted to the sub-processor's registered key (base64)."""

    id: uuid.UUID
    sealed_token: str
    expires_at: datetime
    size: int
    sha256: str


class Handoff(SQLModel, table=True):
    __tablename__ = "handoff"
    __table_args__ = (
        sa.UniqueConstraint(
            "recording_id", "subprocessor_id", name="ux_handoff_recording_subprocessor"
        ),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    subprocessor_id: uuid.UUID = Field(foreign_key="subprocessor.id", index=True)
    recording_id: uuid.UUID = Field(foreign_key="recording.id", index=True)
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", index=True)
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    created_at: datetime = _ts()
    lease_until: datetime | None = _ts(nullable=True)  # a pending claim older than this is retaken
    export_id: uuid.UUID | None = Field(default=None, foreign_key="export.id")
    issued_at: datetime | None = _ts(nullable=True)
    expires_at: datetime | None = _ts(nullable=True)
    # The token age-encrypted to the sub-processor's key; cleared when claimed (or revoked).
    sealed_token: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    claimed_at: datetime | None = _ts(nullable=True)
    # A hand-off across regions is a transfer: both regions and the tenant's mechanism.
    source_region: str | None = Field(default=None, max_length=64)
    destination_region: str | None = Field(default=None, max_length=64)
    transfer_mechanism: str | None = Field(default=None, max_length=128)
    failure: str | None = Field(default=None, max_length=64)
    transcript_id: uuid.UUID | None = Field(default=None, foreign_key="recording.id")
