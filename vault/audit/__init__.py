"""The audit floor: events, the Merkle log over them, denial aggregation and signed heads.

Lifecycle and authorization write events, so audit sits on their floor. ``record`` appends in the
caller's transaction (:mod:`vault.audit.chain`); the sequencer (:mod:`vault.audit.tree`) takes
committed events into the RFC 6962 tree; :mod:`vault.audit.heads` signs tree heads.
"""

from vault.audit.chain import (
    GENESIS_HASH,
    GLOBAL_CHAIN,
    ConditionUnmet,
    acquire_append_lock,
    canonical_json,
    format_ts,
    hash_canonical,
    head,
    list_events,
    optional_ts,
    record,
    to_public,
)
from vault.audit.denials import DenialLimiter, flush_denials, record_denial
from vault.audit.tree import AuditStats, stats
from vault.audit.walk import VerifyResult, verify

__all__ = [
    "GENESIS_HASH", "GLOBAL_CHAIN", "AuditStats", "ConditionUnmet", "DenialLimiter", "VerifyResult",
    "acquire_append_lock", "canonical_json", "flush_denials", "format_ts", "hash_canonical",
    "head", "list_events", "optional_ts", "record", "record_denial", "stats", "to_public", "verify",
]  # fmt: skip
