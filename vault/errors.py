"""Domain errors. Services raise these; only ``vault/api/problems.py`` maps them to HTTP.

Each class has a stable ``code`` that becomes the problem+json ``type``
(``https://callvault.dev/problems/<code>``), so clients can branch on the cause. Infrastructure
failures are translated into these once, at their boundary (``vault.storage`` for the object
store, ``vault.keys`` for the key provider, ``vault.config`` for settings), so nothing above
those floors sees an SDK's exception. Errors with ``public_detail = False`` carry operator
detail (object keys, provider messages) that is logged, never sent to a client.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VaultError(Exception):
    code: ClassVar[str] = "vault-error"
    title: ClassVar[str] = "Vault error"
    # False where the detail is for operators only (infrastructure messages).
    public_detail: ClassVar[bool] = True

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


# --- authentication and authorisation ------------------------------------------------------------


class AuthenticationError(VaultError):
    code = "unauthenticated"
    title = "Missing, invalid, expired or revoked API key"


class PermissionDeniedError(VaultError):
    code = "forbidden"
    title = "Not allowed"


class TransferNotAuthorisedError(PermissionDeniedError):
    """A read from another region than the recording's, which the tenant's policy does not
    authorise (vault.residency)."""

    code = "transfer-not-authorised"
    title = "Cross-region transfer not authorised by the tenant"


class SessionEndedError(AuthenticationError):
    """A console session that is missing, ended, idle, past its lifetime, or whose key or role
    changed; ``end_reason`` (in ``extra``) says which when it has just ended."""

    code = "console-session-ended"
    title = "Console session ended"


class CsrfError(PermissionDeniedError):
    code = "csrf"
    title = "The form could not be verified"


class MediaLinkError(PermissionDeniedError):
    """A console media URL used without its token, for another grant, recording or session,
    after its expiry, or from another site."""

    code = "media-link-invalid"
    title = "This media link is not valid here"


class ExportDeniedError(PermissionDeniedError):
    """An export download with an unknown id, a wrong token, or of another kind."""

    code = "export-denied"
    title = "This download link is not valid"


class ExportUsedError(PermissionDeniedError):
    code = "export-used"
    title = "This download was already completed once"


class AllTenantsRequiredError(PermissionDeniedError):
    """The resource covers every tenant (the whole audit log); a scoped principal gets none."""

    code = "all-tenants-required"
    title = "Only a principal over all tenants may do this"


class RateLimitedError(VaultError):
    code = "rate-limited"
    title = "Too many failed attempts"


# --- lookups --------------------------------------------------------------------------------------


class NotFoundError(VaultError):
    code = "not-found"
    title = "Not found"


class UnknownTenantError(VaultError):
    code = "unknown-tenant"
    title = "Unknown tenant"


class UnknownPurposeError(VaultError):
    code = "unknown-purpose"
    title = "Unknown purpose"


class UnknownProfileError(VaultError):
    code = "unknown-profile"
    title = "Unknown redaction profile"


class UnknownPrincipalError(VaultError):
    code = "unknown-principal"
    title = "Unknown principal"


class GoneError(VaultError):
    code = "gone"
    title = "The recording has been disposed of"


class ExportGoneError(GoneError):
    code = "export-gone"
    title = "This download has expired or was withdrawn"


class KeyDestroyedError(GoneError):
    """The KEK version that wrapped this key was retired: crypto-shredding did its work."""

    title = "The recording has been crypto-shredded"


# --- bad input ------------------------------------------------------------------------------------


class InvalidInputError(VaultError):
    code = "invalid-input"
    title = "Invalid input"


class UnknownRegionError(InvalidInputError):
    """A tenant or principal names a region the settings do not configure."""

    code = "unknown-region"
    title = "Unknown region"


class ConflictError(VaultError):
    code = "conflict"
    title = "Conflict with the current state"


# The audit log's Merkle tree: proofs asked for sizes or leaves it does not have.


class TreeSizeUnknownError(NotFoundError):
    code = "audit-tree-size-unknown"
    title = "The audit log has not reached that tree size"


class LeafNotInTreeError(ConflictError):
    code = "audit-leaf-not-in-tree"
    title = "The event is not in the tree of that size (not yet sequenced, or sequenced later)"


class TreeRangeError(InvalidInputError):
    code = "audit-tree-range-invalid"
    title = "Tree sizes must satisfy 0 <= from <= to"


class ReportPeriodError(InvalidInputError):
    code = "report-period-invalid"
    title = "A report period needs from < to, both with a timezone, at most 3660 days apart"


class RemoteAuditError(VaultError):
    """``audit verify --tenant`` could not read the API (unreachable, key refused, nonsense)."""

    code = "remote-audit-unavailable"
    title = "The audit API could not be read"
class RecordingRestrictedError(ConflictError):
    """A restriction of processing blocks new access to the recording (break-glass excepted)."""

    code = "recording-restricted"
    title = "The recording is restricted"
class UnknownSubprocessorError(InvalidInputError):
    code = "unknown-subprocessor"
    title = "Unknown or removed sub-processor"


class SubprocessorKeyError(InvalidInputError):
    code = "subprocessor-key-invalid"
    title = "The sub-processor's key must be an age X25519 recipient (age1...)"


class HandoffStateError(ConflictError):
    """The hand-off is not in the state this needs (token already claimed, download not yet
    completed, transcript already stored); the detail says which."""

    code = "handoff-state"
    title = "The hand-off is not in a state that allows this"


class HandoffWithdrawnError(GoneError):
    """A rule of the hand-off no longer holds (the purpose ended, the recording is restricted or
    gone, the tenant opted out, a transfer is no longer authorised): it is revoked."""

    code = "handoff-withdrawn"
    title = "The hand-off was withdrawn"


class DisclosureStateError(ConflictError):
    """The disclosure is not in a state that allows this (an objected one never exports)."""

    code = "disclosure-state"
    title = "The disclosure does not allow this in its current state"


class DisclosureRevisionError(ConflictError):
    """An approval of a revision the request has since changed from: approvals were reset."""

    code = "disclosure-revision-stale"
    title = "The disclosure changed since this revision; review it again"


class RecipientMismatchError(ConflictError):
    """The approver verified another recipient key than the one the disclosure names."""

    code = "disclosure-recipient-mismatch"
    title = "The fingerprint is not the disclosure's recipient key"


class DisclosureScopeError(InvalidInputError):
    """The scope is empty, spans tenants, or names recordings that no longer exist."""

    code = "disclosure-scope-invalid"
    title = "The disclosure's scope is not valid"


class RecipientKeyError(InvalidInputError):
    code = "disclosure-recipient-invalid"
    title = "The recipient must be an age X25519 public key (age1...)"


class PolicyLoosensError(InvalidInputError):
    """A tenant policy that would loosen the global one; ``field`` (in ``extra``) names it."""

    code = "tenant-policy-loosens"
    title = "A tenant policy may only tighten the global policy"


class PurposeDisabledError(UnknownPurposeError):
    """The tenant's approved policy disabled this purpose: no new ingest or access for it."""

    code = "purpose-disabled"
    title = "This purpose is disabled for the tenant"


class TenantOffboardingError(ConflictError):
    """The tenant is being (or has been) offboarded: nothing new comes in."""

    code = "tenant-offboarding"
    title = "The tenant is being offboarded"


class UnsupportedMediaTypeError(VaultError):
    code = "unsupported-media-type"
    title = "Content-Type must be video/*, audio/* or application/octet-stream"


class EmptyBodyError(VaultError):
    code = "empty-body"
    title = "The request body is empty"


class IncompleteBodyError(VaultError):
    code = "incomplete-body"
    title = "The request body ended before Content-Length bytes arrived"


class PayloadTooLargeError(VaultError):
    code = "payload-too-large"
    title = "The request body is larger than this vault accepts"


class UploadTimeoutError(VaultError):
    code = "upload-timeout"
    title = "The request body stopped arriving"


class TooManyUploadsError(VaultError):
    code = "too-many-uploads"
    title = "Too many uploads of this principal are under way"


class ChecksumMismatchError(VaultError):
    code = "checksum-mismatch"
    title = "The body does not match X-Content-SHA256"


class RangeNotSatisfiableError(VaultError):
    code = "range-not-satisfiable"
    title = "The requested range cannot be satisfied"


# --- dependencies and integrity ---------------------------------------------------------------


class MisconfiguredError(VaultError, ValueError):
    """A setting is malformed or unsafe: the operator's mistake, never echoed to a client."""

    code = "misconfigured"
    title = "The vault is misconfigured; see its log"
    public_detail = False


class RegionNotConfiguredError(MisconfiguredError):
    """Media or keys live in a region the settings no longer name (fail closed, never the home
    store instead)."""

    code = "region-not-configured"
    title = "The recording's region is not configured; see the vault's log"


class StorageError(VaultError):
    """The object store failed; every blob-store failure is one of these."""

    code = "store-unavailable"
    title = "The object store is unavailable"
    public_detail = False


class StoreUnavailableError(StorageError):
    """The store cannot be reached (connection refused, timeout, 5xx, bucket or root missing)."""


class BlobNotFoundError(StorageError):
    """The key, or the requested version of it, does not exist."""

    code = "blob-not-found"


class BlobLockedError(StorageError):
    """The store refused to delete a version: S3 Object Lock (legal hold or retention) holds it."""

    code = "blob-locked"


class InvalidKeyError(StorageError, ValueError):
    """A blob key is not a clean relative "/"-separated path (empty segment, "..", absolute)."""

    code = "invalid-blob-key"


class DatabaseUnavailableError(VaultError):
    """The metadata database cannot be reached (restarted, connection lost, locked too long)."""

    code = "database-unavailable"
    title = "The database is unavailable"
    public_detail = False

    @classmethod
    def from_driver(cls, driver_error: BaseException) -> DatabaseUnavailableError:
        """For a driver's connection failure: its first line only (never a parameter)."""
        first = (str(driver_error).strip().splitlines() or [type(driver_error).__name__])[0]
        return cls(f"the database is unavailable ({first}); check CALLVAULT_DATABASE_URL")


class KeyProviderUnavailableError(VaultError):
    code = "key-provider-unavailable"
    title = "The key provider is unavailable"
    public_detail = False


class AuditUnavailableError(VaultError):
    code = "audit-unavailable"
    title = "The audit log could not be written, so the action was refused"


class IntegrityError(VaultError):
    code = "integrity-failure"
    title = "Stored data failed integrity checks"


class WrappedKeyInvalidError(IntegrityError):
    """A stored wrapped DEK is malformed or fails authentication under its context."""

    title = "The recording's wrapped key does not open"
