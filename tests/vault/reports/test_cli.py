"""The command line, once (SQLite): ``report evidence`` in every format, ``report verify`` and its
refusals, ``principal rotate-key``; the PDF rendered to PNG and read back with poppler-utils."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from tests.vault.reports.test_evidence import PRIVATE, World, build
from vault.audit import heads
from vault.cli import app as cli_app
from vault.context import Context
from vault.errors import AuthenticationError
from vault.identity import authentication
from vault.reports.evidence import SECTIONS


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # never skip: .ci/run installs poppler-utils
        pytest.fail(f"{name} is missing: apt-get install poppler-utils")
    return path


@pytest.fixture
def cli_world(
    make_ctx: Callable[..., Context], monkeypatch: pytest.MonkeyPatch
) -> tuple[World, CliRunner]:
    # The CLI runs on the wall clock: the history is built on a clock 40 days behind it.
    clock = _WallClock()
    ctx = make_ctx(clock=clock, max_key_age_days=30)
    for name in ("database_url", "blob_store", "key_provider"):
        monkeypatch.setenv(f"CALLVAULT_{name.upper()}", getattr(ctx.settings, name))
    monkeypatch.setenv("CALLVAULT_MAX_KEY_AGE_DAYS", "30")
    return build(ctx, clock), CliRunner()  # type: ignore[arg-type]


class _WallClock:
    """40 days behind the wall clock; ``build`` advances it by 38 days, so the CLI's ``now``
    comes after the whole history."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) - timedelta(days=40)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def test_cli_report_formats_verify_and_rotate_key(
    cli_world: tuple[World, CliRunner], tmp_path: Path
) -> None:
    w, runner = cli_world
    now = datetime.now(UTC)
    period = ["--from", (now - timedelta(days=41)).isoformat(), "--to", now.isoformat()]
    out = {fmt: tmp_path / f"report.{fmt}" for fmt in ("json", "html", "pdf")}
    for fmt, path in out.items():
        r = runner.invoke(
            cli_app, ["report", "evidence", "--tenant", "acme", *period, "--format", fmt,
                      "-o", str(path)],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    signed = json.loads(out["json"].read_text())
    doc = json.loads(signed["statement"])
    assert doc["erasure"]["by_deadline"] == {"met": 1, "overdue": 1}
    assert doc["audit_log"]["verified"] and doc["audit_log"]["covering_tree_head"]

    ok = runner.invoke(cli_app, ["report", "verify", str(out["json"])])
    assert ok.exit_code == 0 and "evidence report ok" in ok.output, ok.output
    flipped = tmp_path / "flipped.json"
    flipped.write_text(out["json"].read_text().replace('"met\\":1', '"met\\":2', 1))
    assert flipped.read_text() != out["json"].read_text()
    with w.ctx.db.session() as s:
        (head,) = heads.list_heads(s, limit=1)
    wrong_type = tmp_path / "head.json"
    wrong_type.write_text(json.dumps({"statement": head.statement, "signature": head.signature}))
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for args, reason in [
        ([str(flipped)], "signature does not verify"),
        ([str(out["json"]), "--public-key", other.hex()], "signature does not verify"),
        ([str(wrong_type)], "type is 'callvault.audit-tree-head'"),
        ([str(out["html"])], "not a JSON report file"),
    ]:
        r = runner.invoke(cli_app, ["report", "verify", *args])
        assert r.exit_code == 1 and "REJECTED" in r.output and reason in r.output, r.output
    # A pinned key: trusted over the provider's, and enough without database or provider.
    nowhere = {"CALLVAULT_DATABASE_URL": "sqlite:////nonexistent/x.db",
               "CALLVAULT_KEY_PROVIDER": "local:/nonexistent"}  # fmt: skip
    for pin, code in [(w.ctx.keys.signing_public_key().hex(), 0), (other.hex(), 1)]:
        r = runner.invoke(
            cli_app, ["report", "verify", str(out["json"])],
            env={**nowhere, "CALLVAULT_AUDIT_PUBLIC_KEY": pin},
        )  # fmt: skip
        assert r.exit_code == code, r.output
    missing = runner.invoke(cli_app, ["report", "verify", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1
    bad = runner.invoke(cli_app, ["report", "evidence", "--from", "yesterday", "--to", "now"])
    assert bad.exit_code == 2 and bad.output.startswith("error:")

    html = out["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html and not PRIVATE.search(html)

    # The PDF: a real PDF that poppler renders, with every section title in its text.
    assert out["pdf"].read_bytes().startswith(b"%PDF-")
    subprocess.run(
        [_tool("pdftoppm"), "-png", "-r", "50", "-f", "1", "-l", "1", str(out["pdf"]),
         str(tmp_path / "page")], check=True, timeout=60,
    )  # fmt: skip
    (png,) = tmp_path.glob("page*.png")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    text = subprocess.run(
        [_tool("pdftotext"), "-layout", str(out["pdf"]), "-"], check=True, timeout=60,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    for _, title in SECTIONS:
        assert title in text, title
    assert "OVERDUE" in text and not PRIVATE.search(text)

    # rotate-key: the new key alone on the last line, the old one refused, the age reset.
    rotated = runner.invoke(cli_app, ["principal", "rotate-key", "appr"])
    assert rotated.exit_code == 0, rotated.output
    key = rotated.output.strip().splitlines()[-1]
    assert key.startswith("cvk_")
    with w.ctx.db.session() as s:
        with pytest.raises(AuthenticationError):
            authentication.authenticate(s, api_key=w.keys["appr"], now=datetime.now(UTC))
        assert authentication.authenticate(s, api_key=key, now=datetime.now(UTC)).name == "appr"
    again = runner.invoke(
        cli_app, ["report", "evidence", "--tenant", "acme", *period[:2], "--to",
                  datetime.now(UTC).isoformat()],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    rc = json.loads(json.loads(again.output)["statement"])["recertification"]
    assert str(w.who["appr"].id) not in rc["keys_past_max_age"]
    assert str(w.who["eng"].id) in rc["keys_past_max_age"]
    unknown = runner.invoke(cli_app, ["principal", "rotate-key", "nobody"])
    assert unknown.exit_code == 2 and "nobody" in unknown.output
