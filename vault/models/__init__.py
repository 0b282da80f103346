"""The schema: metadata tables (SQLModel) and their API shapes, one module per domain.

The schema sits beneath the owners (lifecycle, authorization, audit) because they work on its
tables; the domain packages above own the behaviour. Families follow ``XBase`` / ``XCreate`` /
``XPublic`` / ``X(table=True)``: routes return ``XPublic`` and never table rows. Times are stored
in UTC and always come back timezone-aware.
"""

from vault.models._types import UTCDateTime, utcnow
from vault.models.access import (
    REVIEW_OVERDUE,
    AccessRequest,
    AccessRequestCreate,
    AccessRequestPublic,
    AccessRequestRecording,
    AccessRequestStatus,
    BreakGlassCreate,
    Grant,
    GrantKind,
    GrantPublic,
    GrantRecording,
    Review,
    ReviewCreate,
    ReviewDecision,
)
from vault.models.audit import (
    AuditCheckpoint,
    AuditCheckpointPublic,
    AuditEvent,
    AuditEventPublic,
)
from vault.models.console import ConsoleSession, ConsoleSessionPublic
from vault.models.identity import (
    ApiKey,
    Principal,
    PrincipalBase,
    PrincipalPublic,
    PrincipalTenant,
    Role,
    Tenant,
    TenantBase,
    TenantCreate,
    TenantPublic,
)
from vault.models.operations import JobLease, KekVersion
from vault.models.ops import JobStatus, MetricRollup
from vault.models.recordings import (
    PurposePublic,
    Recording,
    RecordingPage,
    RecordingPublic,
    RecordingPurpose,
    RecordingStatus,
)
from vault.models.redaction import (
    Manifest,
    ManifestPublic,
    Redaction,
    RedactionCreate,
    RedactionPublic,
    RedactionStatus,
    RedactionTrigger,
    awaiting_expiry_redaction,
)
from vault.models.retention import (
    ErasureItem,
    ErasureRequest,
    ErasureRequestCreate,
    ErasureRequestPublic,
    ErasureStatus,
    HoldMembership,
    LegalHold,
    LegalHoldCreate,
    LegalHoldPublic,
    LegalHoldRelease,
    RetentionRecord,
    under_erasure,
)
from vault.models.tenants import (
    ChangeApprove,
    ChangeKind,
    ChangeStatus,
    OffboardingErasure,
    OffboardingPublic,
    OffboardingReceipt,
    TenantChange,
    TenantChangePublic,
    TenantOffboarding,
    TenantPolicy,
    TenantPolicyPublic,
    TenantStatus,
)

__all__ = [
    "REVIEW_OVERDUE", "AccessRequest", "AccessRequestCreate", "AccessRequestPublic",
    "AccessRequestRecording", "AccessRequestStatus", "ApiKey", "AuditCheckpoint",
    "AuditCheckpointPublic", "AuditEvent", "AuditEventPublic", "BreakGlassCreate", "ChangeApprove",
    "ChangeKind", "ChangeStatus", "ConsoleSession", "ConsoleSessionPublic", "ErasureItem",
    "ErasureRequest", "ErasureRequestCreate", "ErasureRequestPublic", "ErasureStatus", "Grant",
    "GrantKind", "GrantPublic", "GrantRecording", "HoldMembership", "JobLease", "JobStatus",
    "KekVersion", "LegalHold", "LegalHoldCreate", "LegalHoldPublic", "LegalHoldRelease",
    "Manifest", "ManifestPublic", "MetricRollup", "OffboardingErasure", "OffboardingPublic",
    "OffboardingReceipt", "Principal", "PrincipalBase", "PrincipalPublic", "PrincipalTenant",
    "PurposePublic", "Recording", "RecordingPage", "RecordingPublic", "RecordingPurpose",
    "RecordingStatus", "Redaction", "RedactionCreate", "RedactionPublic", "RedactionStatus",
    "RedactionTrigger", "RetentionRecord", "Review", "ReviewCreate", "ReviewDecision", "Role",
    "Tenant", "TenantBase", "TenantChange", "TenantChangePublic", "TenantCreate",
    "TenantOffboarding", "TenantPolicy", "TenantPolicyPublic", "TenantPublic", "TenantStatus",
    "UTCDateTime", "awaiting_expiry_redaction", "under_erasure", "utcnow",
]  # fmt: skip
