"""The audit floor: the hash chain, unauthenticated-denial aggregation and signed checkpoints.

Lifecycle and authorization write events, so audit sits on their floor. ``record`` appends in the
caller's transaction; see :mod:`vault.audit.chain`.
"""

from vault.audit.chain import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    VerifyResult,
    acquire_append_lock,
    canonical_json,
    format_ts,
    hash_canonical,
    head,
    list_events,
    record,
    to_public,
    verify,
)
from vault.audit.denials import DenialLimiter, flush_denials, record_denial

__all__ = [
    "GENESIS_HASH", "GLOBAL_CHAIN", "DenialLimiter", "VerifyResult", "acquire_append_lock",
    "canonical_json", "flush_denials", "format_ts", "hash_canonical", "head", "list_events",
    "record", "record_denial", "to_public", "verify",
]  # fmt: skip
