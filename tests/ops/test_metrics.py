"""``/metrics``' domain families: set up through the API, scraped with a monitor key, parsed
with prometheus_client's own parser; the values come from the database, so two app instances on
one database report the same."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from jobs import tasks
from tests.support.api import principal_key
from tests.support.clock import FakeClock
from vault import lifecycle
from vault.app import create_app
from vault.context import Context, build_context
from vault.models import utcnow
from vault.ops.rollup import roll_up_playback
from vault.setup import initialise

# Every test runs on PostgreSQL; the SQL that differs by dialect (times, FILTER, the aggregates)
# also on SQLite. The rest once: each PostgreSQL world costs a database and a bucket.
POSTGRES_ONLY = pytest.mark.parametrize("backend", [("postgres", "s3")], ids=["postgres-s3"])
PROBLEM = "application/problem+json"
REASON = "Customer reported garbled audio in this call."
TICKET = "INC-4711"
ACME = [b"a" * 1000, b"b" * 3000]
GLOBEX = [b"g" * 500]


@dataclass
class World:
    client: TestClient
    ctx: Context
    clock: FakeClock
    keys: dict[str, str]
    acme: list[str]
    globex: list[str]
    call_ids: list[str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def post(self, path: str, who: str, body: Any = None) -> Any:
        r = self.client.post(path, json=body, headers=self.h(who))
        assert r.status_code in (200, 201, 202), r.text
        return r.json()

    def scrape(self, client: TestClient | None = None) -> dict[tuple[str, tuple], float]:
        r = (client or self.client).get("/metrics", headers=self.h("monitor"))
        assert r.status_code == 200, r.text
        return parse(r.text)


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} for every callvault_ sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("callvault_") and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def domain(values: dict[tuple[str, tuple], float]) -> dict[tuple[str, tuple], float]:
    """Without the per-process families (HTTP traffic, scrape errors)."""
    return {k: v for k, v in values.items()
            if not k[0].startswith(("callvault_http_", "callvault_metrics_"))}  # fmt: skip


@pytest.fixture
def world(make_ctx: Callable[..., Context], backend: tuple[str, str]) -> Iterator[World]:
    # The real time: KEK versions carry the keyring's real creation time.
    clock = FakeClock(utcnow().replace(microsecond=0))
    ctx = make_ctx(db=backend[0], store=backend[1], clock=clock)
    admin = initialise(ctx, now=ctx.now())
    with TestClient(create_app(ctx.settings, ctx=ctx)) as client:
        for tenant in ("acme", "globex"):
            r = client.post("/v1/tenants", json={"name": tenant},
                            headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
            assert r.status_code == 201, r.text
        keys = {
            "ingest": principal_key(ctx, "ingest", "ingest", ["acme", "globex"]),
            "eng": principal_key(ctx, "eng", "engineer", []),
            "appr": principal_key(ctx, "appr", "approver", []),
            "sec": principal_key(ctx, "sec", "security", []),
            "privacy": principal_key(ctx, "privacy", "privacy", []),
            "monitor": principal_key(ctx, "monitor", "monitor", []),
        }
        w = World(client, ctx, clock, keys, [], [], [])
        for tenant, bodies, ids in (("acme", ACME, w.acme), ("globex", GLOBEX, w.globex)):
            for body in bodies:
                call_id = f"call-{uuid.uuid4().hex[:8]}"
                r = client.post(
                    "/v1/recordings", content=body,
                    headers={**w.h("ingest"), "Content-Type": "application/octet-stream"},
                    params={"tenant": tenant, "purposes": "troubleshooting", "call_id": call_id},
                )  # fmt: skip
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
                w.call_ids.append(call_id)
        yield w


def _grant_and_read(w: World) -> None:
    """One approved request on acme's first recording, read twice (a range and the whole)."""
    body = {"recording_ids": [w.acme[0]], "purpose": "troubleshooting", "reason": REASON,
            "ticket": TICKET, "duration_minutes": 60}  # fmt: skip
    req = w.post("/v1/access-requests", "eng", body)
    grant = w.post(f"/v1/access-requests/{req['id']}/approve", "appr", {"comment": "ok"})
    grant_id = grant["grant_id"]
    url = f"/v1/recordings/{w.acme[0]}/content"
    r = w.client.get(url, params={"grant": grant_id}, headers={**w.h("eng"), "Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100
    r = w.client.get(url, params={"grant": grant_id}, headers=w.h("eng"))
    assert r.status_code == 200 and len(r.content) == 1000
    # A second request stays pending.
    w.post("/v1/access-requests", "eng", {**body, "recording_ids": [w.acme[1]]})


def _v(values: dict, name: str, **labels: str) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def test_recordings_and_bytes_by_tenant_name_and_status(world: World) -> None:
    m = world.scrape()
    assert _v(m, "callvault_recordings", tenant="acme", status="stored") == 2
    assert _v(m, "callvault_recordings", tenant="globex", status="stored") == 1
    assert _v(m, "callvault_recording_bytes", tenant="acme", status="stored") == 4000
    assert _v(m, "callvault_ingest_bytes_total", tenant="acme") == 4000
    assert _v(m, "callvault_ingest_bytes_total", tenant="globex") == 500
    assert _v(m, "callvault_ingested_recordings_total", tenant="acme") == 2


def test_access_families_and_playback_bytes_from_the_rollup(world: World) -> None:
    _grant_and_read(world)
    m = world.scrape()
    assert _v(m, "callvault_grants_active", kind="request") == 1
    assert _v(m, "callvault_grants_active", kind="break_glass") == 0
    assert _v(m, "callvault_access_requests_pending") == 1
    # Nothing rolled up yet: the read path wrote only its audit events.
    assert _v(m, "callvault_playback_bytes_total") == 0
    assert "1100 playback byte(s)" in tasks.run("metrics-rollup", world.ctx, world.ctx.now())
    m = world.scrape()
    assert _v(m, "callvault_playback_bytes_total") == 1100
    assert _v(m, "callvault_playback_reads_total") == 2
    # Idempotent: a second run counts nothing twice.
    tasks.run("metrics-rollup", world.ctx, world.ctx.now())
    assert _v(world.scrape(), "callvault_playback_bytes_total") == 1100
    # The grant ends after its hour; the request's TTL (24 h) lapses the pending one.
    world.clock.advance(hours=25)
    m = world.scrape()
    assert _v(m, "callvault_grants_active", kind="request") == 0
    assert _v(m, "callvault_access_requests_pending") == 0


@POSTGRES_ONLY
def test_break_glass_unreviewed_then_overdue(world: World) -> None:
    body = {"recording_ids": [world.globex[0]], "purpose": "troubleshooting",
            "incident_ref": "SEC-1", "reason": REASON, "duration_minutes": 30}  # fmt: skip
    world.post("/v1/break-glass", "sec", body)
    m = world.scrape()
    assert _v(m, "callvault_grants_active", kind="break_glass") == 1
    assert _v(m, "callvault_break_glass_unreviewed") == 1
    assert _v(m, "callvault_break_glass_review_overdue") == 0
    world.clock.advance(hours=24, minutes=1)
    m = world.scrape()
    assert _v(m, "callvault_grants_active", kind="break_glass") == 0
    assert _v(m, "callvault_break_glass_review_overdue") == 1


def test_erasure_open_overdue_and_oldest_due(world: World) -> None:
    m = world.scrape()
    assert ("callvault_erasure_oldest_due_timestamp_seconds", ()) not in m
    req = world.post("/v1/erasure-requests", "privacy",
                     {"recording_ids": [world.globex[0]], "reason": REASON})  # fmt: skip
    m = world.scrape()
    assert _v(m, "callvault_erasure_requests_open", status="pending") == 1
    assert _v(m, "callvault_erasure_requests_overdue") == 0
    due = world.ctx.now() + timedelta(days=30)
    assert req["due_at"].startswith(due.isoformat()[:19])
    assert _v(m, "callvault_erasure_oldest_due_timestamp_seconds") == due.timestamp()
    assert _v(m, "callvault_policy_erasure_deadline_seconds") == 30 * 86400
    # The erasure job shreds it; it then waits for its KEK version's retirement.
    tasks.run("erasure", world.ctx, world.ctx.now())
    m = world.scrape()
    assert _v(m, "callvault_erasure_requests_open", status="pending") == 0
    assert _v(m, "callvault_erasure_requests_open", status="awaiting_kek") == 1
    world.clock.advance(days=31)
    assert _v(world.scrape(), "callvault_erasure_requests_overdue") == 1


def test_disposal_lag_is_the_age_of_the_oldest_due_recording(world: World) -> None:
    m = world.scrape()
    assert _v(m, "callvault_disposal_lag_seconds") == 0
    assert _v(m, "callvault_disposal_due_recordings") == 0
    # troubleshooting keeps 30 days: a day past it, all three are due and none disposed.
    world.clock.advance(days=31)
    m = world.scrape()
    assert _v(m, "callvault_disposal_due_recordings") == 3
    assert _v(m, "callvault_disposal_lag_seconds") == pytest.approx(86400, abs=5)
    tasks.run("dispose", world.ctx, world.ctx.now())
    m = world.scrape()
    assert _v(m, "callvault_disposal_lag_seconds") == 0
    assert _v(m, "callvault_recordings", tenant="acme", status="disposed") == 2
    # Ingested bytes are a counter: disposal does not take them back.
    assert _v(m, "callvault_ingest_bytes_total", tenant="acme") == 4000


def test_job_runs_success_duration_and_failures(world: World) -> None:
    tasks.run("sweep-orphans", world.ctx, world.ctx.now())

    def boom(*_: Any, **__: Any) -> str:
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            tasks.execute(world.ctx, "dispose", boom, world.ctx.now())
    m = world.scrape()
    ok, bad = {"job_name": "sweep-orphans"}, {"job_name": "dispose"}
    assert _v(m, "callvault_job_runs_total", **ok) == 1
    assert _v(m, "callvault_job_failures_total", **ok) == 0
    assert _v(m, "callvault_job_last_success_timestamp_seconds", **ok) == pytest.approx(
        world.ctx.now().timestamp(), abs=5
    )
    assert 0 <= _v(m, "callvault_job_last_duration_seconds", **ok) < 5
    assert _v(m, "callvault_job_failures_total", **bad) == 2
    assert _v(m, "callvault_job_consecutive_failures", **bad) == 2
    assert ("callvault_job_last_success_timestamp_seconds", (("job_name", "dispose"),)) not in m
    # A success resets the run of failures, not the total.
    tasks.run("dispose", world.ctx, world.ctx.now())
    m = world.scrape()
    assert _v(m, "callvault_job_consecutive_failures", **bad) == 0
    assert _v(m, "callvault_job_failures_total", **bad) == 2
    assert _v(m, "callvault_job_runs_total", **bad) == 3


def test_integrity_alarms_kek_age_and_audit(world: World) -> None:
    m = world.scrape()
    assert _v(m, "callvault_integrity_failed_recordings") == 0
    assert _v(m, "callvault_integrity_alarms_total") == 0
    assert _v(m, "callvault_kek_live_versions") == 1
    assert 0 <= _v(m, "callvault_kek_newest_version_age_seconds") < 600
    assert _v(m, "callvault_policy_kek_rotation_seconds") == 7 * 86400
    assert ("callvault_audit_checkpoint_age_seconds", ()) not in m
    events = _v(m, "callvault_audit_events")
    assert events > 0 and _v(m, "callvault_audit_unsequenced_events") == events
    assert _v(m, "callvault_audit_tree_size") == 0
    with world.ctx.db.transaction() as s:
        assert lifecycle.integrity_alarm(
            s, uuid.UUID(world.acme[0]), actor="system:test", now=world.ctx.now(),
            source="scrub", reason="ciphertext hash mismatch",
        )  # fmt: skip
    world.clock.advance(hours=2)
    m = world.scrape()
    assert _v(m, "callvault_integrity_failed_recordings") == 1
    assert _v(m, "callvault_integrity_alarms_total") == 1
    assert _v(m, "callvault_recordings", tenant="acme", status="integrity_failed") == 1
    assert _v(m, "callvault_kek_newest_version_age_seconds") >= 7200
    assert _v(m, "callvault_audit_unsequenced_oldest_seconds") >= 7200
    tasks.run("audit-checkpoint", world.ctx, world.ctx.now())
    world.clock.advance(minutes=5)
    m = world.scrape()
    assert _v(m, "callvault_audit_tree_size") == _v(m, "callvault_audit_events") > events
    assert _v(m, "callvault_audit_unsequenced_events") == 0
    assert _v(m, "callvault_audit_unsequenced_oldest_seconds") == 0
    assert _v(m, "callvault_audit_checkpoint_age_seconds") == 300


@POSTGRES_ONLY
def test_two_app_instances_on_one_database_report_the_same(world: World) -> None:
    _grant_and_read(world)
    tasks.run_all(world.ctx, world.ctx.now())
    # A second replica: its own context, engine and registry, on the same database.
    other = build_context(world.ctx.settings, clock=world.clock)
    try:
        with TestClient(create_app(other.settings, ctx=other)) as client:
            one, two = domain(world.scrape()), domain(world.scrape(client))
    finally:
        other.close()
    assert one == two
    assert len(one) > 40


@POSTGRES_ONLY
def test_only_metrics_read_may_scrape(world: World) -> None:
    r = world.client.get("/metrics", headers=world.h("eng"))
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "https://callvault.dev/problems/forbidden"
    assert "callvault_recordings" not in r.text


@POSTGRES_ONLY
def test_no_id_call_id_or_email_in_the_scrape(world: World) -> None:
    _grant_and_read(world)
    world.post("/v1/erasure-requests", "privacy",
               {"recording_ids": [world.globex[0]], "reason": REASON})  # fmt: skip
    tasks.run_all(world.ctx, world.ctx.now())
    text = world.client.get("/metrics", headers=world.h("monitor")).text
    assert not re.search(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", text)
    assert "@" not in text
    for secret in (*world.call_ids, *world.acme, *world.globex, "example.com"):
        assert secret not in text
    labels = {k for (_, lbls) in parse(text) for k, _ in lbls}
    assert labels <= {"tenant", "status", "kind", "job_name", "group", "method", "route", "le"}


@POSTGRES_ONLY
def test_a_failing_group_loses_only_its_families(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    tasks.run("sweep-orphans", world.ctx, world.ctx.now())
    with world.ctx.db.transaction() as s:  # the job table vanishes from under the scrape
        s.exec(sa.text("ALTER TABLE job_status RENAME TO job_status_gone"))
    m = world.scrape()
    assert not [k for k in m if k[0].startswith("callvault_job_")]
    assert _v(m, "callvault_recordings", tenant="acme", status="stored") == 2
    assert _v(m, "callvault_metrics_scrape_errors_total", group="jobs") == 1
    assert any("metrics group jobs failed: ProgrammingError" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert not any("job_status" in r.getMessage() for r in caplog.records)


@POSTGRES_ONLY
def test_concurrent_rollups_and_job_records_count_everything_once(world: World) -> None:
    _grant_and_read(world)
    _grant_and_read(world)  # four reads: 2 x (100 + 1000) bytes
    now = world.ctx.now()
    # Batches of one, four workers at once: each batch is claimed by one of them only.
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: roll_up_playback(world.ctx, now=now, batch=1), range(4)))
    roll_up_playback(world.ctx, now=now)  # whatever a worker that skipped left behind
    assert sum(d.bytes for d in done) <= 2200
    m = world.scrape()
    assert _v(m, "callvault_playback_bytes_total") == 2200
    assert _v(m, "callvault_playback_reads_total") == 4
    # Eight runs of one job recorded at once from eight threads: no increment lost.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: tasks.run("sweep-orphans", world.ctx, now), range(8)))
    assert _v(world.scrape(), "callvault_job_runs_total", job_name="sweep-orphans") == 8
