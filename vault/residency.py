"""Data residency: the one rule for moving a recording's content out of its region.

A recording's media and KEK live in its region (``recording.region``, fixed at ingest from the
tenant's region; ``None`` is the home region: see :meth:`vault.context.Context.region_of`). Any
hand-over of its content to a party in another region is a *transfer*:

- allowed only when the tenant's approved authorisations (:mod:`vault.tenants.policy`) list a
  transfer whose ``destination`` is that party's region; the first matching entry's mechanism
  and instruction reference are what the transfer relies on;
- otherwise refused with ``TransferNotAuthorisedError`` (403 ``transfer-not-authorised``), the
  denial audited like every other;
- and, when allowed, audited as ``residency.transfer`` with both regions, the mechanism and the
  instruction reference, in the same transaction as the read it accompanies.

The check is made when content is read (playback, console media), never only when a grant is
issued: the tenant may withdraw a transfer authorisation while grants are open, and the read is
what moves the data. Sub-processor hand-offs use :func:`decide` the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from vault import audit
from vault.authz import Actor, Permission
from vault.authz.rules import audit_denial
from vault.errors import TransferNotAuthorisedError
from vault.models import Recording
from vault.tags import AuditAction
from vault.tenants.policy import Authorisations, authorisations_of

__all__ = ["Transfer", "authorise_read", "decide", "record", "recording_in", "transfer_for"]

DENIAL_REASON = "transfer-not-authorised"


def recording_in(region: str | None) -> sa.ColumnElement[bool]:
    """Recordings whose media and KEK live in ``region`` (``None``: the home region)."""
    if region is None:
        return col(Recording.region).is_(None)
    return col(Recording.region) == region


@dataclass(frozen=True, slots=True)
class Transfer:
    """An authorised transfer: from the recording's region to the reader's."""

    source: str
    destination: str
    mechanism: str
    instruction_ref: str

    def details(self) -> dict[str, Any]:
        return {
            "source_region": self.source, "destination_region": self.destination,
            "mechanism": self.mechanism, "instruction_ref": self.instruction_ref,
        }  # fmt: skip


def decide(authorisations: Authorisations, *, source: str, destination: str) -> Transfer | None:
    """Pure: ``None`` when no transfer happens (same region), the authorised ``Transfer``, or
    ``TransferNotAuthorisedError`` (nothing audited here)."""
    if source == destination:
        return None
    for allowed in authorisations.transfers:
        if allowed.destination == destination:
            return Transfer(source, destination, allowed.mechanism, allowed.instruction_ref)
    raise TransferNotAuthorisedError(
        f"the tenant has not authorised transfers of its recordings from region {source!r} to "
        f"region {destination!r}"
    )


def transfer_for(
    session: Session, *, tenant_id: uuid.UUID, source: str, destination: str
) -> Transfer | None:
    """:func:`decide` against the tenant's approved authorisations."""
    if source == destination:
        return None
    return decide(authorisations_of(session, tenant_id), source=source, destination=destination)


def authorise_read(
    session: Session,
    *,
    actor: Actor,
    recording: Recording,
    source: str,
    home: str,
    now: datetime,
) -> Transfer | None:
    """The transfer a content read by ``actor`` makes (``None``: same region). A refusal is
    audited (after the caller's unit of work, like every denial) and raised.

    ``source`` is the recording's region name, ``home`` the home region's (a principal without
    a region reads from there)."""
    destination = actor.region or home
    try:
        return transfer_for(
            session, tenant_id=recording.tenant_id, source=source, destination=destination
        )
    except TransferNotAuthorisedError:
        audit_denial(
            session, actor, Permission.recording_content_read, DENIAL_REASON, now=now,
            target=str(recording.id), tenant_id=recording.tenant_id,
        )  # fmt: skip
        raise


def record(
    session: Session,
    transfer: Transfer,
    *,
    actor: str,
    tenant_id: uuid.UUID,
    target: str,
    via: str,
    now: datetime,
    **extra: Any,
) -> None:
    """The ``residency.transfer`` event, in the caller's transaction (the read's own)."""
    audit.record(
        session, action=AuditAction.residency_transfer, actor=actor, now=now,
        tenant_id=tenant_id, target=target, details={**transfer.details(), "via": via, **extra},
    )  # fmt: skip
