"""The audit log's events: their canonical form, appending, and listing.

Each event is a JSON object serialised canonically (sorted keys, no spaces, UTF-8 kept) and
stored verbatim; those exact bytes are the event's leaf in the Merkle log (:mod:`.tree`), and
verification reads only them, never a re-serialisation of the columns (which are a queryable
copy, checked against it). ``hash`` is SHA-256 over the same bytes.

Appending takes no lock: ``seq`` comes from a database sequence (PostgreSQL; gaps from rollbacks
are fine) or from ``max(seq) + 1`` under SQLite's single writer, and the event names no previous
hash. Events written before the Merkle log (the *legacy chain*) also carry ``prev_hash``, keep
their bytes and are still verified as a chain (:mod:`.walk`); they are the log's first leaves.

Audit rows outlive erasure, so details must never carry call ids, plaintext hashes or anything
derived from the media: :func:`record` refuses the known offending keys outright.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from vault.db import is_postgres
from vault.errors import IntegrityError, InvalidInputError
from vault.models import AuditEvent, AuditEventPublic
from vault.models.audit import AUDIT_SEQ
from vault.tags import AuditAction, Outcome
from vault.validation import check_datetime, check_text

GLOBAL_CHAIN, GENESIS_HASH = "global", "0" * 64

# A fixed advisory-lock id ("cvaudit" in ASCII). Appends no longer take it; it still serialises
# rare whole-vault steps (concurrent `init`s). SQLite needs none: every write transaction there
# starts with BEGIN IMMEDIATE and so already holds the write lock.
APPEND_LOCK_KEY = 0x63766175646974

# Audit rows outlive erasure: these keys would carry call ids or plaintext-derived hashes.
FORBIDDEN_DETAIL_KEYS = frozenset({"call_id", "sha256", "plaintext_sha256", "filename"})

MAX_LIST_LIMIT = 1000

# Column lengths from the model; SQLite would silently accept longer values, PostgreSQL not.
_MAX_LEN = {"actor": 64, "target": 64, "purpose": 32}

# Fields of the canonical event, in the order verification compares them with the columns.
# Legacy chained events also carry "prev_hash" (LEGACY_FIELDS).
COLUMN_FIELDS = ("seq", "chain_id", "ts", "actor", "action", "outcome", "tenant_id", "target",
                 "purpose", "grant_id")  # fmt: skip
EVENT_FIELDS = frozenset((*COLUMN_FIELDS, "details"))
LEGACY_FIELDS = EVENT_FIELDS | {"prev_hash"}


# --- canonical form ------------------------------------------------------------------------------


def format_ts(ts: datetime) -> str:
    """UTC RFC 3339 with microseconds and ``Z``: ``2026-11-25T12:00:00.000000Z``."""
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def optional_ts(ts: datetime | None) -> str | None:
    """:func:`format_ts`, or ``None`` for a time that has not happened (documents and receipts)."""
    return None if ts is None else format_ts(ts)


def canonical_json(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_canonical(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_details(value: Any, path: str = "details") -> None:
    """Plain JSON only, and none of the keys that would outlive an erasure."""
    if isinstance(value, float) and not math.isfinite(value):  # NaN/Infinity are not JSON
        raise ValueError(f"{path}: non-finite float")
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_details(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings")
            if key.lower() in FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"{path}.{key}: audit events must not carry {key!r}")
            _check_details(item, f"{path}.{key}")
    else:
        raise ValueError(f"{path}: {type(value).__name__} is not JSON (convert it first)")


def _check_len(name: str, value: str | None) -> None:
    if value is not None and len(value) > _MAX_LEN[name]:
        raise ValueError(f"audit {name} longer than {_MAX_LEN[name]} characters")


def _as_uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    return None if value is None else value if isinstance(value, uuid.UUID) else uuid.UUID(value)


# --- appending -----------------------------------------------------------------------------------


def acquire_append_lock(session: Session) -> None:
    """Serialise whole-vault steps until the caller's transaction ends (no-op on SQLite)."""
    if is_postgres(session):
        session.exec(sa.text("SELECT pg_advisory_xact_lock(:k)"), params={"k": APPEND_LOCK_KEY})


def head(session: Session, chain_id: str = GLOBAL_CHAIN) -> tuple[int, str]:
    """(seq, hash) of the newest event; (0, GENESIS_HASH) when empty."""
    row = session.exec(
        select(AuditEvent.seq, AuditEvent.hash)
        .where(AuditEvent.chain_id == chain_id)
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def _split(event: dict[str, Any]) -> tuple[str, str]:
    """The canonical text of ``event`` around its top-level seq: ``head + str(seq) + tail`` is
    ``canonical_json`` of the event with that seq (the same items, sorted, joined the same way),
    so the seq can come from the database in the very statement that inserts the event."""
    items = {k: f"{canonical_json(k)}:{canonical_json(v)}" for k, v in event.items()}
    before = [items[k] for k in sorted(items) if k < "seq"]
    after = [items[k] for k in sorted(items) if k > "seq"]
    return "{" + "".join(f"{i}," for i in before) + '"seq":', "".join(f",{i}" for i in after) + "}"


_TABLE = AuditEvent.__table__  # type: ignore[attr-defined]
_VALUES = ("chain_id", "ts", "actor", "action", "outcome", "tenant_id", "target", "purpose",
           "grant_id")  # fmt: skip


@functools.cache
def _pg_insert(condition: Any = None) -> Any:
    """One round trip on PostgreSQL: take the next seq, build the canonical text and its
    SHA-256 around it, insert, and return both (checked against Python's own). With a
    ``condition`` (a select built once), nothing is inserted unless it returns a row."""
    n = sa.select(AUDIT_SEQ.next_value().label("seq")).subquery("n")
    text = (sa.bindparam("head", type_=sa.Text()) + sa.cast(n.c.seq, sa.Text())
            + sa.bindparam("tail", type_=sa.Text()))  # fmt: skip
    digest = sa.func.encode(sa.func.sha256(sa.func.convert_to(text, "UTF8")), "hex")
    values = [sa.bindparam(c, type_=_TABLE.c[c].type) for c in _VALUES]
    rows = sa.select(n.c.seq, *values, digest, text)
    if condition is not None:
        rows = rows.where(sa.exists(condition))
    return (
        sa.insert(_TABLE)
        .from_select(["seq", *_VALUES, "hash", "canonical"], rows)
        .returning(_TABLE.c.seq, _TABLE.c.hash)
    )


def _append(
    session: Session,
    event: dict[str, Any],
    values: dict[str, Any],
    condition: tuple[Any, dict[str, Any]] | None = None,
) -> AuditEvent | None:
    head, tail = _split(event)
    (head + tail).encode("utf-8")  # refuse lone surrogates before anything is written
    where, params = condition if condition is not None else (None, {})
    if is_postgres(session):
        inserted = session.execute(
            _pg_insert(where), {**params, **values, "head": head, "tail": tail}
        ).one_or_none()
        if inserted is None:
            return None
        seq, db_hash = inserted
    else:
        if where is not None and not session.execute(sa.select(sa.exists(where)), params).scalar():
            return None
        # SQLite: this transaction began with BEGIN IMMEDIATE, so it is the only writer.
        seq = int(session.execute(sa.select(sa.func.max(AuditEvent.seq))).scalar() or 0) + 1
        db_hash = None
    canonical = f"{head}{seq}{tail}"
    digest = hash_canonical(canonical)
    if db_hash is None:
        session.execute(sa.insert(_TABLE), {**values, "seq": seq, "hash": digest,
                                            "canonical": canonical})  # fmt: skip
    elif db_hash != digest:  # fail closed: never keep an event whose hash is not its bytes'
        raise IntegrityError("the database hashed an audit event differently; check its encoding")
    return AuditEvent(seq=seq, **values, prev_hash=None, hash=digest, canonical=canonical)


class ConditionUnmet(Exception):
    """:func:`record`'s ``only_if`` returned no row: nothing was written."""


def record(
    session: Session,
    *,
    action: AuditAction,
    actor: str | None,
    now: datetime,
    outcome: Outcome = Outcome.ok,
    tenant_id: uuid.UUID | None = None,
    target: str | None = None,
    purpose: str | None = None,
    grant_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    only_if: tuple[Any, dict[str, Any]] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction; the caller commits (or rolls back).

    No lock is taken: the sequencer (:mod:`.tree`) later gives committed events their leaf.
    With ``only_if`` (a select built once, and its parameters) the event is written only while
    that select returns a row, else :class:`ConditionUnmet`; on PostgreSQL the check and the
    append are one statement, so a caller in autocommit commits the event in one round trip
    (issue #12: a read's event before its first byte)."""
    action = AuditAction(action)
    outcome = Outcome(outcome)
    details = {} if details is None else details
    if not isinstance(details, dict):
        raise ValueError("details must be a dict")
    _check_details(details)
    for name, value in (("actor", actor), ("target", target), ("purpose", purpose)):
        _check_len(name, value)
    tenant, grant = _as_uuid(tenant_id), _as_uuid(grant_id)
    ts_text = format_ts(now)  # refuses naive datetimes
    event = {
        "chain_id": GLOBAL_CHAIN,
        "ts": ts_text,
        "actor": actor,
        "action": action.value,
        "outcome": outcome.value,
        "tenant_id": None if tenant is None else str(tenant),
        "target": target,
        "purpose": purpose,
        "grant_id": None if grant is None else str(grant),
        "details": details,
    }
    values = {
        "chain_id": GLOBAL_CHAIN, "ts": now.astimezone(UTC), "actor": actor,
        "action": action.value, "outcome": outcome.value, "tenant_id": tenant, "target": target,
        "purpose": purpose, "grant_id": grant,
    }  # fmt: skip
    appended = _append(session, event, values, only_if)
    if appended is None:
        raise ConditionUnmet()
    return appended


# --- reading -------------------------------------------------------------------------------------


Order = Literal["asc", "desc"]
ORDERS: tuple[Order, ...] = ("asc", "desc")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """Which events a list returns: every field given must match (AND); ``None`` matches all.

    Built from client input, so it checks itself and raises :class:`InvalidInputError` (a 422).
    It only ever narrows: the caller's scope filter is applied on top, never replaced.
    """

    # Events whose target is the recording (ingest, reads, redaction, expiry, disposal...).
    # Access requests and grants target their own id and name recordings only in details.
    recording_id: uuid.UUID | None = None
    # The actor column verbatim: a principal id, or ``system:<name>`` for jobs and the CLI.
    actor: str | None = None
    action: AuditAction | str | None = None  # an AuditAction value; normalised to the enum
    tenant_id: uuid.UUID | None = None
    ts_from: datetime | None = None  # inclusive, timezone-aware
    ts_to: datetime | None = None  # inclusive, timezone-aware

    def __post_init__(self) -> None:
        if self.action is not None:
            try:
                action = AuditAction(self.action)
            except ValueError:
                raise InvalidInputError(
                    f"unknown action {self.action!r}; one of {', '.join(AuditAction)}"
                ) from None
            object.__setattr__(self, "action", action)  # frozen: normalise once, here
        if self.actor is not None:
            try:
                check_text(self.actor)
            except ValueError as exc:
                raise InvalidInputError(f"actor {exc}") from None
            if len(self.actor) > _MAX_LEN["actor"]:
                raise InvalidInputError(f"actor longer than {_MAX_LEN['actor']} characters")
        for name in ("ts_from", "ts_to"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, check_datetime(value))  # to UTC
            except ValueError as exc:
                raise InvalidInputError(f"{name}: {exc}") from None
        if self.ts_from is not None and self.ts_to is not None and self.ts_from > self.ts_to:
            raise InvalidInputError("from must not be after to")

    def where(self) -> list[Any]:
        """The SQL conditions, one per field given."""
        conditions: list[Any] = []
        if self.recording_id is not None:
            conditions.append(AuditEvent.target == str(self.recording_id))
        if self.actor is not None:
            conditions.append(AuditEvent.actor == self.actor)
        if self.action is not None:
            conditions.append(AuditEvent.action == AuditAction(self.action).value)
        if self.tenant_id is not None:
            conditions.append(AuditEvent.tenant_id == self.tenant_id)
        if self.ts_from is not None:
            conditions.append(col(AuditEvent.ts) >= self.ts_from)
        if self.ts_to is not None:
            conditions.append(col(AuditEvent.ts) <= self.ts_to)
        return conditions


def list_events(
    session: Session,
    *,
    after_seq: int = 0,
    before_seq: int | None = None,
    limit: int = 100,
    order: Order = "asc",
    filters: AuditFilter | None = None,
    chain_id: str = GLOBAL_CHAIN,
    restrict: Callable[[Any], Any] | None = None,
) -> list[AuditEvent]:
    """Events with ``after_seq < seq < before_seq`` matching ``filters``, oldest first (``asc``)
    or newest first (``desc``). ``restrict`` narrows the query (the caller's scope filter).

    Paging: ascending, pass the last seq seen as ``after_seq``; descending, as ``before_seq``.
    """
    if after_seq < 0:
        raise InvalidInputError("after_seq must be >= 0")
    if before_seq is not None and before_seq < 1:
        raise InvalidInputError("before_seq must be >= 1")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {', '.join(ORDERS)}")
    query = select(AuditEvent).where(
        AuditEvent.chain_id == chain_id, col(AuditEvent.seq) > after_seq
    )
    if before_seq is not None:
        query = query.where(col(AuditEvent.seq) < before_seq)
    if filters is not None:
        query = query.where(*filters.where())
    if restrict is not None:
        query = restrict(query)
    seq = col(AuditEvent.seq)
    query = query.order_by(seq.desc() if order == "desc" else seq).limit(limit)
    return list(session.exec(query).all())


def to_public(event: AuditEvent) -> AuditEventPublic:
    # Details live only in the canonical text. A tampered, unparseable row still lists (with
    # empty details) so auditors can see it; verify() is what judges integrity.
    try:
        details = json.loads(event.canonical).get("details")
    except (ValueError, AttributeError):
        details = None
    columns = {f: getattr(event, f) for f in (*COLUMN_FIELDS, "prev_hash", "hash", "leaf_index")}
    return AuditEventPublic(
        **columns, canonical=event.canonical, details=details if isinstance(details, dict) else {}
    )
