"""Metadata tables (SQLModel) and their API shapes.

Families follow ``XBase`` / ``XCreate`` / ``XPublic`` / ``X(table=True)``: routes return
``XPublic`` and never table rows. Times are stored in UTC and always come back timezone-aware.
"""

from vault.models._types import UTCDateTime, utcnow
from vault.models.access import (
    AccessRequest,
    AccessRequestCreate,
    AccessRequestPublic,
    AccessRequestRecording,
    AccessRequestStatus,
    AuditCheckpoint,
    AuditCheckpointPublic,
    BreakGlassCreate,
    Grant,
    GrantKind,
    GrantPublic,
    GrantRecording,
    Review,
    ReviewCreate,
    ReviewDecision,
)
from vault.models.core import (
    ApiKey,
    AuditEvent,
    AuditEventPublic,
    IngestParams,
    KekVersion,
    Principal,
    PrincipalBase,
    PrincipalCreate,
    PrincipalPublic,
    PrincipalTenant,
    PurposePublic,
    Recording,
    RecordingPage,
    RecordingPublic,
    RecordingPurpose,
    RecordingStatus,
    Role,
    Tenant,
    TenantBase,
    TenantCreate,
    TenantPublic,
)

__all__ = [
    "AccessRequest", "AccessRequestCreate", "AccessRequestPublic", "AccessRequestRecording",
    "AccessRequestStatus", "ApiKey", "AuditCheckpoint", "AuditCheckpointPublic", "AuditEvent",
    "AuditEventPublic", "BreakGlassCreate", "Grant", "GrantKind", "GrantPublic", "GrantRecording",
    "IngestParams", "KekVersion", "Principal", "PrincipalBase", "PrincipalCreate",
    "PrincipalPublic", "PrincipalTenant", "PurposePublic", "Recording", "RecordingPage",
    "RecordingPublic", "RecordingPurpose", "RecordingStatus", "Review", "ReviewCreate",
    "ReviewDecision", "Role", "Tenant", "TenantBase", "TenantCreate", "TenantPublic",
    "UTCDateTime", "utcnow",
]  # fmt: skip
