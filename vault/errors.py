"""Domain errors. Services raise these; only ``vault/api/problems.py`` maps them to HTTP.

Each class has a stable ``code`` that becomes the problem+json ``type``
(``https://callvault.dev/problems/<code>``), so clients can branch on the cause.
"""

from __future__ import annotations

from typing import Any, ClassVar


class VaultError(Exception):
    code: ClassVar[str] = "vault-error"
    title: ClassVar[str] = "Vault error"

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


class UnknownPrincipalError(VaultError):
    code = "unknown-principal"
    title = "Unknown principal"


class GoneError(VaultError):
    code = "gone"
    title = "The recording has been disposed of"


# --- bad input ------------------------------------------------------------------------------------


class InvalidInputError(VaultError):
    code = "invalid-input"
    title = "Invalid input"


class ConflictError(VaultError):
    code = "conflict"
    title = "Conflict with the current state"


class UnsupportedMediaTypeError(VaultError):
    code = "unsupported-media-type"
    title = "Content-Type must be video/*, audio/* or application/octet-stream"


class EmptyBodyError(VaultError):
    code = "empty-body"
    title = "The request body is empty"


class IncompleteBodyError(VaultError):
    code = "incomplete-body"
    title = "The request body ended before Content-Length bytes arrived"


class ChecksumMismatchError(VaultError):
    code = "checksum-mismatch"
    title = "The body does not match X-Content-SHA256"


class RangeNotSatisfiableError(VaultError):
    code = "range-not-satisfiable"
    title = "The requested range cannot be satisfied"


# --- dependencies and integrity ---------------------------------------------------------------


class StoreUnavailableError(VaultError):
    code = "store-unavailable"
    title = "The object store is unavailable"


class KeyProviderUnavailableError(VaultError):
    code = "key-provider-unavailable"
    title = "The key provider is unavailable"


class AuditUnavailableError(VaultError):
    code = "audit-unavailable"
    title = "The audit log could not be written, so the action was refused"


class IntegrityError(VaultError):
    code = "integrity-failure"
    title = "Stored data failed integrity checks"
