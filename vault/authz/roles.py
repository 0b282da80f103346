"""Permissions as data: the permission names, the role table, and the actor.

Content reads are not a role permission at all: only a grant opens content, admin included.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from vault.models import Role

__all__ = ["REVOKER_ROLES", "ROLE_PERMISSIONS", "Actor", "P", "Permission"]


class Permission(StrEnum):
    tenant_create = "tenant:create"
    principal_manage = "principal:manage"
    recording_ingest = "recording:ingest"
    recording_metadata_read = "recording:metadata:read"
    recording_content_read = "recording:content:read"
    recording_purpose_end = "recording:purpose:end"
    access_request = "access:request"
    access_request_read = "access:request:read"  # own requests; reviewers: those in scope
    access_review = "access:review"
    grant_read = "grant:read"  # own grants
    grant_read_all = "grant:read:all"  # every grant in scope
    grant_revoke = "grant:revoke"
    break_glass = "access:break-glass"
    break_glass_review = "access:break-glass:review"
    hold_manage = "hold:manage"
    erasure_manage = "erasure:manage"
    redaction_manage = "redaction:manage"  # request de-identified derivatives, read their status
    restriction_manage = "restriction:manage"  # restrict processing of a recording, and lift it
    subject_access = "privacy:subject-access"  # answer a data subject's access request
    audit_read = "audit:read"
    metrics_read = "metrics:read"
    keys_manage = "keys:manage"
    tenant_read = "tenant:read"  # tenant status, offboarding, policy, pending changes
    tenant_change_propose = "tenant:change:propose"  # offboarding, policy, authorisations
    tenant_change_approve = "tenant:change:approve"  # four-eyes: another owner than the proposer
    report_read = "report:read"  # the evidence report (figures over a period, no content)
    # The legal-disclosure register: register, amend, object, disclose, close, notify (privacy);
    # read it; approve a request and after-review an emergency one (another owner, see rules).
    disclosure_manage = "disclosure:manage"
    disclosure_read = "disclosure:read"
    disclosure_approve = "disclosure:approve"
    disclosure_review = "disclosure:review"
    subprocessor_read = "subprocessor:read"  # the registry, contract references included
    subprocessor_manage = "subprocessor:manage"  # add and remove registry entries
    handoff_issue = "handoff:issue"  # no role: the worker's (the local operator's) only
    handoff_redeem = "handoff:redeem"  # list, claim, download its own hand-offs; send transcripts


P = Permission

# recording:content:read is deliberately absent: only a grant opens content.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(
        {P.tenant_create, P.principal_manage, P.recording_metadata_read, P.recording_purpose_end,
         P.metrics_read, P.keys_manage, P.redaction_manage, P.tenant_read,
         P.tenant_change_propose, P.subprocessor_read, P.subprocessor_manage}
    ),
    Role.ingest: frozenset({P.recording_ingest, P.recording_metadata_read, P.subprocessor_read}),
    Role.engineer: frozenset(
        {P.recording_metadata_read, P.access_request, P.access_request_read, P.grant_read,
         P.grant_revoke, P.subprocessor_read}
    ),
    Role.approver: frozenset(
        {P.recording_metadata_read, P.access_review, P.access_request_read, P.grant_read,
         P.grant_revoke, P.subprocessor_read}
    ),
    Role.security: frozenset(
        {P.recording_metadata_read, P.access_request, P.access_request_read, P.access_review,
         P.grant_read, P.grant_read_all, P.grant_revoke, P.break_glass, P.break_glass_review,
         P.hold_manage, P.audit_read, P.disclosure_read, P.disclosure_approve,
         P.disclosure_review, P.subprocessor_read}
    ),
    Role.privacy: frozenset(
        {P.recording_metadata_read, P.recording_purpose_end, P.hold_manage, P.erasure_manage,
         P.redaction_manage, P.restriction_manage, P.subject_access, P.tenant_read,
         P.tenant_change_approve, P.report_read, P.disclosure_manage, P.disclosure_read,
         P.disclosure_approve, P.disclosure_review, P.subprocessor_read}
    ),
    Role.auditor: frozenset(
        {P.recording_metadata_read, P.audit_read, P.tenant_read, P.report_read,
         P.disclosure_read, P.subprocessor_read}
    ),
    Role.monitor: frozenset({P.metrics_read}),
    # A sub-processor's key opens its own hand-offs and nothing else (not even the registry:
    # the public list at /subprocessors is there for everyone).
    Role.subprocessor: frozenset({P.handoff_redeem}),
}  # fmt: skip

# Roles that may revoke grants they do not hold (within their scope).
REVOKER_ROLES = frozenset({Role.approver, Role.security})


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated principal as the services see it."""

    id: uuid.UUID
    name: str
    role: Role
    # The owner's pseudonym (principal.owner_ref): four-eyes compares owners, not principals.
    owner: str
    all_tenants: bool = False
    tenant_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)
    # The local operator (CLI, jobs): every role permission, all tenants. Still no content
    # without a grant.
    system: bool = False
    # Where the principal reads from (vault.residency); None: the home region.
    region: str | None = None
    # The registry entry a ``subprocessor`` principal is bound to (None for every other role).
    subprocessor_id: uuid.UUID | None = None

    @classmethod
    def operator(cls, name: str = "cli") -> Actor:
        return cls(
            id=uuid.UUID(int=0), name=name, role=Role.admin, owner=f"system:{name}",
            all_tenants=True, system=True,
        )  # fmt: skip

    def can(self, permission: Permission) -> bool:
        if permission is Permission.recording_content_read:
            return False  # only a grant opens content
        if self.system:
            return True
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def in_scope(self, tenant_id: uuid.UUID) -> bool:
        return self.all_tenants or tenant_id in self.tenant_ids

    def is_owner(self, owner_ref: str) -> bool:
        return self.owner == owner_ref

    @property
    def single_tenant(self) -> uuid.UUID | None:
        return next(iter(self.tenant_ids)) if len(self.tenant_ids) == 1 else None

    @property
    def audit_name(self) -> str:
        """Opaque actor reference for audit events: the principal id, never a person's name."""
        return f"system:{self.name}" if self.system else str(self.id)
