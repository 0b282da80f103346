"""Rows that carry a statement signed with the audit key and an exported copy: tree heads and
legacy chain checkpoints. One recipe for both: sign outside any transaction, record the
signature with a compare-and-set, export under COMPLIANCE retention, retry what failed.

The published key (``audit/checkpoints/public-key.json``) is for outsiders' convenience only;
verification never trusts it nor a row's ``public_key``: :func:`trusted_public_key`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.audit import signing
from vault.config import ConfigError
from vault.context import Context
from vault.errors import InvalidInputError, StorageError

log = logging.getLogger("callvault.audit")

PUBLIC_KEY_OBJECT = "audit/checkpoints/public-key.json"
# Exports outlive any audit-log retention an operator is likely to choose; COMPLIANCE mode means
# nobody (root credential included) can shorten this, so keep it finite.
EXPORT_RETENTION = timedelta(days=3650)
MAX_LIST_LIMIT = 1000


def sign_pending(ctx: Context, model: Any) -> dict[int, Any]:
    """Sign every ``model`` statement still waiting for its signature (outside any
    transaction), recording each with a compare-and-set; the rows signed, by id."""
    with ctx.db.reading() as session:
        waiting = session.exec(
            select(model).where(col(model.signature).is_(None)).order_by(col(model.id))
        ).all()
    done: dict[int, Any] = {}
    for row in waiting:
        signature = signing.sign_canonical(ctx.keys, row.statement).signature
        with ctx.db.transaction() as session:
            session.execute(
                sa.update(model)
                .where(col(model.id) == row.id, col(model.signature).is_(None))
                .values(signature=signature)
            )
        row.signature = signature
        done[int(row.id or 0)] = row
    return done


def export_document(row: Any) -> bytes:
    """What outsiders get: the exact signed bytes, the signature and the signer's key (hex)."""
    doc = {"statement": row.statement, "signature": row.signature, "public_key": row.public_key}
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def export_pending(
    ctx: Context, model: Any, key_of: Callable[[Any], str], *, now: datetime
) -> dict[int, tuple[str, str | None]]:
    """Upload every signed ``model`` row not yet exported; {id: (object_key, version_id)}.

    A store outage is logged and left for the next run: the DB row stands on its own.
    """
    with ctx.db.reading() as session:
        pending = session.exec(
            select(model)
            .where(col(model.object_key).is_(None), col(model.signature).is_not(None))
            .order_by(col(model.id))
        ).all()
    done: dict[int, tuple[str, str | None]] = {}
    if not pending:
        return done
    try:
        publish_public_key(ctx)
        for row in pending:
            key = key_of(row)
            version = export_signed(ctx, model, row.id, key, export_document(row), now=now)
            done[int(row.id)] = (key, version)
    except StorageError as exc:
        log.warning("audit export failed (will retry next run): %s", exc)
    return done


def export_signed(
    ctx: Context, model: Any, row_id: Any, key: str, data: bytes, *, now: datetime
) -> str | None:
    """Put one signed document under COMPLIANCE retention (no transaction open), then record
    where on its row (``object_key``, ``version_id``); the version id. Tree heads, checkpoints
    and the retention records (:mod:`vault.retention.records`) are exported this one way."""
    version = ctx.store.put_bytes(key, data, retention_until=now + EXPORT_RETENTION)
    with ctx.db.transaction() as session:
        session.exec(
            sa.update(model)
            .where(col(model.id) == row_id)
            .values(object_key=key, version_id=version)
        )
    return version


def publish_public_key(ctx: Context) -> None:
    """Overwrite the published key (no retention: it must follow a key change)."""
    doc = {"algorithm": "ed25519", "public_key": ctx.keys.signing_public_key().hex()}
    ctx.store.put_bytes(PUBLIC_KEY_OBJECT, (json.dumps(doc, sort_keys=True) + "\n").encode())


_INT_MAX = 2**31 - 1  # an Integer key (int4 on PostgreSQL)


def list_page(
    session: Session, model: Any, public: Any, *, after_id: int, limit: int, signed_only: bool
) -> list[Any]:
    """Rows by id after ``after_id`` (keyset paging), as ``public`` shapes; bad paging is 422."""
    if after_id < 0:
        raise InvalidInputError("after_id must be >= 0")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    key = col(model.id)
    if not isinstance(key.type, sa.BigInteger) and after_id >= _INT_MAX:
        return []  # no 32-bit key comes after it (PostgreSQL would refuse the cast: a 500)
    query = select(model).where(key > after_id)
    if signed_only:
        query = query.where(col(model.signature).is_not(None))
    rows = session.exec(query.order_by(col(model.id)).limit(limit)).all()
    return [public.model_validate(r, from_attributes=True) for r in rows]


def parse_public_key(text: str, *, what: str) -> bytes:
    """32 raw bytes from 64 hex digits; ConfigError naming ``what`` otherwise."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{what} must be 64 hex digits (Ed25519)")
    return key


def trusted_public_key(ctx: Context) -> bytes:
    """The pinned key if configured, else the key provider's; never a copy from DB or store."""
    pinned = ctx.settings.audit_public_key
    if pinned:
        return parse_public_key(pinned, what="CALLVAULT_AUDIT_PUBLIC_KEY")
    return ctx.keys.signing_public_key()
