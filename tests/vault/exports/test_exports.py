"""Exports (issue #15), on both databases: a recording re-encrypted to an age key that the stock
``age -d`` opens, served once (Range resume allowed until complete), expiring, revoked, and gone
with its recording."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pyrage
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import col, select

from crypto.age import AgeRecipientError, encrypt_stream, parse_recipient
from crypto.streaming import SEGMENT_PLAINTEXT
from tests.jobs.helpers import events, ingest, make_tenant, set_columns
from tests.support.clock import FakeClock
from vault import exports
from vault.context import Context
from vault.errors import (
    ExportDeniedError,
    ExportGoneError,
    ExportUsedError,
    GoneError,
    IntegrityError,
    RangeNotSatisfiableError,
)
from vault.models import AuditEvent, Export, ExportKind, RecordingPurpose
from vault.retention import disposal

HOUR = timedelta(hours=1)


@pytest.fixture
def identity() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


def _body(ctx: Context, produced: exports.Produced, range_header: str | None = None) -> bytes:
    resp = exports.serve(
        ctx, export_id=produced.export_id, token=produced.token, kind=ExportKind.disclosure,
        range_header=range_header, actor_label="authority", now=ctx.now(),
    )  # fmt: skip
    return b"".join(resp.body)


def _produce(ctx: Context, rid: uuid.UUID, identity: pyrage.x25519.Identity) -> exports.Produced:
    return exports.produce(
        ctx, kind=ExportKind.disclosure, subject_id=uuid.uuid4(), recording_id=rid,
        recipient=parse_recipient(str(identity.to_public())), expires_at=ctx.now() + HOUR,
        now=ctx.now(),
    )  # fmt: skip


def test_an_export_opens_with_age_once_and_nothing_in_the_audit_leaks(
    ctx: Context, identity: pyrage.x25519.Identity, tmp_path: Path
) -> None:
    data = os.urandom(2 * SEGMENT_PLAINTEXT + 12345)  # three segments
    rid = ingest(ctx, make_tenant(ctx), data).id
    produced = _produce(ctx, rid, identity)
    assert produced.plaintext_sha256 == hashlib.sha256(data).hexdigest()

    # Resume: the first half, then the rest; only then is the transfer complete.
    half = produced.size // 2
    first = _body(ctx, produced, f"bytes=0-{half - 1}")
    assert len(first) == half
    rest = _body(ctx, produced, f"bytes={half}-")
    sealed = first + rest
    assert hashlib.sha256(sealed).hexdigest() == produced.sha256
    (tmp_path / "key.txt").write_text(str(identity) + "\n")
    (tmp_path / "r.age").write_bytes(sealed)
    age = shutil.which("age")
    assert age, "Debian's age is needed (installed by .ci/run)"
    out = subprocess.run(
        [age, "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "r.age")],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert out == data

    # One completed transfer: every later request is refused, the wrong token never worked.
    with pytest.raises(ExportUsedError):
        _body(ctx, produced)
    (event,) = events(ctx, "export.complete", str(produced.export_id))
    receipt = json.loads(event.canonical)["details"]
    assert receipt["bytes"] == produced.size
    assert receipt["export_sha256"] == produced.sha256
    assert event.actor == "authority"
    assert len(events(ctx, "export.download", str(produced.export_id))) == 2
    with ctx.db.session() as s:
        text = " ".join(e.canonical for e in s.exec(select(AuditEvent)).all())
    assert produced.token not in text
    assert "call-" not in text


def test_wrong_token_kind_or_id_are_one_403_and_expiry_is_410(
    ctx: Context, identity: pyrage.x25519.Identity, clock: FakeClock
) -> None:
    rid = ingest(ctx, make_tenant(ctx), b"x" * 5000).id
    produced = _produce(ctx, rid, identity)
    for export_id, token, kind in [
        (
            produced.export_id,
            produced.token[:-1] + ("A" if produced.token[-1] != "A" else "B"),
            ExportKind.disclosure,
        ),
        (produced.export_id, produced.token, ExportKind.handoff),
        (uuid.uuid4(), produced.token, ExportKind.disclosure),
    ]:
        with pytest.raises(ExportDeniedError):
            exports.serve(ctx, export_id=export_id, token=token, kind=kind, range_header=None,
                          actor_label="x", now=ctx.now())  # fmt: skip
    with pytest.raises(RangeNotSatisfiableError):
        _body(ctx, produced, f"bytes={produced.size}-")
    clock.advance(HOUR)
    with pytest.raises(ExportGoneError):
        _body(ctx, produced)
    # The job deletes the expired object; a second run finds nothing to do.
    assert exports.purge(ctx, now=ctx.now()) == 1
    assert exports.purge(ctx, now=ctx.now()) == 0
    with ctx.db.session() as s:
        row = s.get(Export, produced.export_id)
        assert row is not None and row.deleted_at is not None
    assert not ctx.store.exists(row.object_key)


def test_revocation_and_disposal_end_an_export(
    ctx: Context, identity: pyrage.x25519.Identity
) -> None:
    tenant = make_tenant(ctx)
    revoked = _produce(ctx, ingest(ctx, tenant, b"a" * 3000).id, identity)
    with ctx.db.transaction() as s:
        assert exports.revoke(s, subject_id=None, export_ids=[revoked.export_id],
                              reason="closed", actor="privacy", now=ctx.now()) == 1  # fmt: skip
    with pytest.raises(ExportGoneError):
        _body(ctx, revoked)

    rid = ingest(ctx, tenant, b"b" * 3000).id
    doomed = _produce(ctx, rid, identity)
    with ctx.db.transaction() as s:  # its only purpose ended: due for disposal
        s.exec(sa.update(RecordingPurpose).where(col(RecordingPurpose.recording_id) == rid)
               .values(ended_at=ctx.now(), ended_reason="test"))  # fmt: skip
    disposal.dispose(ctx, now=ctx.now())
    with pytest.raises(ExportGoneError):
        _body(ctx, doomed)
    with ctx.db.session() as s:
        row = s.get(Export, doomed.export_id)
        assert row is not None and row.revoke_reason == "recording-disposed"
        assert row.deleted_at is not None  # deleted with the media, not a job period later
    assert not ctx.store.exists(row.object_key)
    with pytest.raises(GoneError):
        _produce(ctx, rid, identity)


def test_a_tampered_recording_is_never_exported(
    ctx: Context, identity: pyrage.x25519.Identity
) -> None:
    rid = ingest(ctx, make_tenant(ctx), b"c" * 4000).id
    set_columns(ctx, rid, sha256="0" * 64)  # the stored bytes no longer match the ingest hash
    with pytest.raises(IntegrityError):
        _produce(ctx, rid, identity)
    with ctx.db.session() as s:
        assert s.exec(select(Export)).first() is None


def test_recipient_parsing() -> None:
    good = str(pyrage.x25519.Identity.generate().to_public())
    parsed = parse_recipient("  " + good.upper() + "\n")
    assert parsed.text == good and parsed.fingerprint.startswith("SHA256:")
    assert parsed == parse_recipient(good)
    for bad in ["", "age1", "ssh-ed25519 AAAA", good[:-1] + ("q" if good[-1] != "q" else "p")]:
        with pytest.raises(AgeRecipientError):
            parse_recipient(bad)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=70_000), max_size=6))
def test_age_stream_round_trips_any_chunking(chunks: list[bytes]) -> None:
    ident = pyrage.x25519.Identity.generate()
    sealed = b"".join(encrypt_stream(chunks, parse_recipient(str(ident.to_public()))))
    assert pyrage.decrypt(sealed, [ident]) == b"".join(chunks)
