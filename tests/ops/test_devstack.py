"""``callvault dev-stack`` end to end: the production topology on real parts, driven over HTTP.

One stack for the module (a subprocess: its own PostgreSQL cluster, SeaweedFS, OpenBao with
Transit, two ``serve --no-scheduler`` APIs and two workers), read from ``DIR/stack.json``. The
policy makes ``transcription`` expire in seconds and the KEK due at once, and the workers run
every job every 2 s, so purge and the KEK cycle happen by the workers within the test. The
tests build on each other's state in file order (ingests, grants, purge), and the last one
stops the stack. A part that cannot start fails the module; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import minio
import pytest

from vault.devstack.policy import fast_policy

MiB = 1 << 20
START_TIMEOUT = 150.0  # five helpers share two cores: a cold stack can take a while
JOB_INTERVAL = 2.0
PURPOSE_SECONDS = 3.0  # transcription's retention: expired before the purge test waits for it
POLICY = fast_policy(expire_seconds=PURPOSE_SECONDS, kek_rotation_seconds=1.0)
# Events that name what they act on and must exist once per target, however many APIs and
# workers raced to write them.
ONCE_PER_TARGET = ("recording.ingest", "dek.destroy", "media.destroy", "grant.create",
                   "grant.revoke", "access.request", "access.approve", "tenant.create",
                   "principal.create")  # fmt: skip


@dataclass
class Stack:
    directory: Path
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    admin: str
    keys: dict[str, str] = field(default_factory=dict)
    tenant_id: str = ""
    data: dict[str, bytes] = field(default_factory=dict)  # recording id -> content

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.info["env"]}

    @property
    def api1(self) -> str:
        return str(self.info["api_urls"][0])

    @property
    def api2(self) -> str:
        return str(self.info["api_urls"][1])

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.get(who, self.admin)}"}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).with_name("callvault")
        return subprocess.run(
            [str(exe), *args], cwd=self.directory, env=self.env, capture_output=True, text=True,
            check=check, timeout=120,
        )  # fmt: skip

    def pids(self) -> list[int]:
        groups = ("apis", "workers", "services")
        return [int(p["pid"]) for g in groups for p in self.info[g]]

    def audit(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            page = httpx.get(f"{self.api1}/v1/audit", headers=self.auth("carol"), timeout=30,
                             params={"after_seq": events[-1]["seq"] if events else 0,
                                     "limit": 1000})  # fmt: skip
            assert page.status_code == 200, page.text
            if not page.json():
                return events
            events += page.json()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("devstack")
    policy = base / "policy.toml"
    policy.write_text(POLICY)
    directory = base / "stack"
    env = {**os.environ, "CALLVAULT_JOB_INTERVAL_SECONDS": str(JOB_INTERVAL),
           "CALLVAULT_POLICY_FILE": str(policy)}  # fmt: skip
    exe = Path(sys.executable).with_name("callvault")
    out = base / "dev-stack.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [str(exe), "dev-stack", "--dir", str(directory), "--apis", "2", "--workers", "2"],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        described = directory / "stack.json"
        deadline = time.monotonic() + START_TIMEOUT
        while not described.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dev-stack did not start:\n{out.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.2)
        info = json.loads(described.read_text())
        admin = Path(info["admin_key_file"]).read_text().strip()
        yield Stack(directory=directory, proc=proc, info=info, admin=admin)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def people(stack: Stack) -> Stack:
    """A tenant, two ingest bots, an engineer, an approver of another owner, an auditor."""
    r = httpx.post(f"{stack.api1}/v1/tenants", json={"name": "acme"}, headers=stack.auth(""))
    assert r.status_code == 201, r.text
    stack.tenant_id = r.json()["id"]
    who = {
        "bot1": ["--role", "ingest", "--owner", "bot1@acme.example", "--tenant", "acme"],
        "bot2": ["--role", "ingest", "--owner", "bot2@acme.example", "--tenant", "acme"],
        "alice": ["--role", "engineer", "--owner", "alice@acme.example", "--tenant", "acme"],
        "bob": ["--role", "approver", "--owner", "bob@acme.example", "--tenant", "acme"],
        "carol": ["--role", "auditor", "--owner", "carol@acme.example", "--all-tenants"],
    }
    with ThreadPoolExecutor(len(who)) as pool:
        done = pool.map(lambda n: (n, stack.cli("principal", "add", n, *who[n])), who)
        stack.keys = {n: r.stdout.strip().splitlines()[-1] for n, r in done}
    # The workers' first kek-cycle runs one job interval after they start and rotates at once
    # (the policy's rotation period is one second). Ingesting only after it keeps the test
    # deterministic: no DEK is still wrapped by version 1 when the cycle retires it.
    _wait_for("the workers' kek-cycle", lambda: _kek_cycled(stack), 60)
    return stack


def _kek_cycled(stack: Stack) -> list[dict[str, Any]]:
    events = stack.audit()
    done = _by_action(events, "kek.rotate") and _by_action(events, "kek.retire")
    return events if done else []


def _ingest(stack: Stack, api: str, bot: str, data: bytes, purpose: str) -> str:
    r = httpx.post(
        f"{api}/v1/recordings", params={"tenant": "acme", "purposes": purpose},
        headers={**stack.auth(bot), "Content-Type": "audio/ogg"}, content=data, timeout=120,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    stack.data[r.json()["id"]] = data
    return str(r.json()["id"])


def _ingest_on_both(stack: Stack, count: int, size: int, purpose: str) -> list[str]:
    """``count`` concurrent ingests, alternating between the APIs (and their bots)."""
    jobs = [((stack.api1, "bot1") if i % 2 == 0 else (stack.api2, "bot2"), os.urandom(size))
            for i in range(count)]  # fmt: skip
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda j: _ingest(stack, j[0][0], j[0][1], j[1], purpose), jobs))


def _grant(stack: Stack, rid: str) -> str:
    """Alice asks on API 1, Bob (another owner) approves on API 2; returns the grant id."""
    asked = httpx.post(f"{stack.api1}/v1/access-requests", headers=stack.auth("alice"), json={
        "recording_ids": [rid], "purpose": "troubleshooting", "reason": "one-way audio",
        "ticket": "INC-1", "duration_minutes": 30})  # fmt: skip
    assert asked.status_code == 201, asked.text
    approved = httpx.post(f"{stack.api2}/v1/access-requests/{asked.json()['id']}/approve",
                          headers=stack.auth("bob"), json={"comment": "ok"})  # fmt: skip
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["grant_id"]
    return str(approved.json()["grant_id"])


def _wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _by_action(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] == action]


def test_the_stack_describes_itself_and_keeps_its_secrets_private(stack: Stack) -> None:
    info = stack.info
    assert len(info["apis"]) == 2 and len(info["workers"]) == 2
    assert {s["name"] for s in info["services"]} == {"postgres", "seaweedfs", "openbao"}
    assert all(url.startswith("http://127.0.0.1:") for url in info["api_urls"])
    assert len(set(info["api_urls"])) == 2
    assert info["env"]["CALLVAULT_KEY_PROVIDER"].startswith("transit:http://127.0.0.1:")
    assert info["env"]["CALLVAULT_BLOB_STORE"] == "s3://callvault"
    assert info["env"]["CALLVAULT_JOB_INTERVAL_SECONDS"] == str(JOB_INTERVAL)  # passed through
    for name in ("admin.key", "stack.json", "env"):
        assert (stack.directory / name).stat().st_mode & 0o777 == 0o600, name
    assert stack.admin.startswith("cvk_")
    for p in info["apis"] + info["workers"]:
        assert _alive(p["pid"]) and Path(p["log"]).parent == stack.directory / "logs"
    # The bucket was made with Object Lock, as in production.
    env = info["env"]
    s3 = minio.Minio(env["CALLVAULT_S3_ENDPOINT"], access_key=env["CALLVAULT_S3_ACCESS_KEY"],
                     secret_key=env["CALLVAULT_S3_SECRET_KEY"], secure=False)  # fmt: skip
    assert s3.get_object_lock_config("callvault") is not None


def test_concurrent_ingests_on_both_apis_are_stored_and_read_alike(people: Stack) -> None:
    ids = _ingest_on_both(people, 6, 512 * 1024, "troubleshooting")
    assert len(set(ids)) == 6
    for rid in ids:  # each API sees what the other stored
        seen = [httpx.get(f"{api}/v1/recordings/{rid}", headers=people.auth("")).json()
                for api in (people.api1, people.api2)]  # fmt: skip
        assert seen[0] == seen[1] and seen[0]["status"] == "stored"
        assert seen[0]["size"] == 512 * 1024


def test_access_granted_on_one_api_plays_on_the_other(people: Stack) -> None:
    rid = next(iter(people.data))
    _grant(people, rid)
    url = f"{people.api2}/v1/recordings/{rid}/content"
    played = httpx.get(url, headers=people.auth("alice"), timeout=60)
    assert played.status_code == 200 and played.content == people.data[rid]
    ranged = httpx.get(url, headers={**people.auth("alice"), "Range": "bytes=1000-1999"})
    assert ranged.status_code == 206 and ranged.content == people.data[rid][1000:2000]
    # Bob approved; he holds no grant of his own.
    assert httpx.get(url, headers=people.auth("bob")).status_code == 403


def test_revocation_on_one_api_cuts_a_stream_on_the_other(people: Stack) -> None:
    data = os.urandom(32 * MiB)  # far more than the loopback socket buffers hold
    rid = _ingest(people, people.api1, "bot1", data, "troubleshooting")
    gid = _grant(people, rid)
    url = f"{people.api2}/v1/recordings/{rid}/content"
    got = bytearray()
    with (
        httpx.Client(timeout=60) as client,
        client.stream("GET", url, params={"grant": gid}, headers=people.auth("alice")) as r,
    ):
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(data)
        request_id = r.headers["x-request-id"]
        chunks = r.iter_raw(64 * 1024)
        got += next(chunks)
        asked = time.time()
        revoked = httpx.post(f"{people.api1}/v1/grants/{gid}/revoke", headers=people.auth("alice"))
        answered = time.time()  # the revocation committed between the two
        assert revoked.status_code == 200 and revoked.json()["active"] is False
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in chunks:
                got += chunk
                time.sleep(0.004)  # a slow player: ~16 MiB/s, so the whole body needs 2 s
    assert 0 < len(got) < len(data) and bytes(got) == data[: len(got)]
    # API 2 ended the stream (its access line, written when the body stops) within the bound
    # after the commit: 100 ms plus the 1 MiB segment in flight (~60 ms to this slow player),
    # with 0.5 s of room for a machine that five test suites share (measured: ~0.2 s).
    ended = _wait_for("API 2's access line", lambda: _access_line(people, "api-2", request_id), 10)
    at = datetime.fromisoformat(ended["ts"]).timestamp()
    assert asked < at < answered + 0.1 + 0.06 + 0.5, (at - asked, answered - asked)
    again = httpx.get(url, params={"grant": gid}, headers=people.auth("alice"))
    assert again.status_code == 403


def _access_line(stack: Stack, name: str, request_id: str) -> dict[str, Any] | None:
    log = next(Path(p["log"]) for p in stack.info["apis"] if p["name"] == name)
    for line in log.read_text().splitlines():
        if request_id in line and '"route"' in line:
            return dict(json.loads(line))
    return None


def test_the_workers_cycle_the_kek_once_per_version(people: Stack) -> None:
    events = _kek_cycled(people)
    rotations = _by_action(events, "kek.rotate")
    assert {e["actor"] for e in rotations} == {"system:kek-cycle"}  # the workers, not a person
    versions = [e["details"]["version"] for e in rotations]
    assert len(versions) == len(set(versions)), versions  # two workers: never the same twice
    assert min(versions) == 2
    retired = [e["details"]["version"] for e in _by_action(events, "kek.retire")]
    assert 1 in retired and len(retired) == len(set(retired))


def test_the_workers_purge_expired_recordings_exactly_once(people: Stack) -> None:
    ids = _ingest_on_both(people, 6, 256 * 1024, "transcription")

    def disposed() -> bool:
        states = [httpx.get(f"{people.api1}/v1/recordings/{rid}", headers=people.auth(""))
                  for rid in ids]  # fmt: skip
        return all(s.status_code == 200 and s.json()["status"] == "disposed" for s in states)

    _wait_for("the workers to dispose of the expired recordings", disposed, 60)
    events = people.audit()
    for action in ("dek.destroy", "media.destroy"):
        targets = Counter(e["target"] for e in _by_action(events, action))
        assert all(targets[rid] == 1 for rid in ids), (action, targets)
    env = people.info["env"]
    s3 = minio.Minio(env["CALLVAULT_S3_ENDPOINT"], access_key=env["CALLVAULT_S3_ACCESS_KEY"],
                     secret_key=env["CALLVAULT_S3_SECRET_KEY"], secure=False)  # fmt: skip
    for rid in ids:  # every version of every object is gone
        prefix = f"{people.tenant_id}/{rid}"
        assert not list(s3.list_objects("callvault", prefix=prefix, include_version=True))
    kept = next(rid for rid in people.data if rid not in ids)  # troubleshooting: still stored
    assert httpx.get(f"{people.api2}/v1/recordings/{kept}",
                     headers=people.auth("")).json()["status"] == "stored"  # fmt: skip


def test_every_audit_event_is_written_once_in_one_chain_that_verifies(people: Stack) -> None:
    people.cli("audit", "checkpoint")  # sequences everything the test did and signs a head
    events = people.audit()
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))  # each event once (a rolled-back append may leave a gap)
    # The one sequencer gave every committed event one leaf: 0..n-1, none twice, none missing
    # (the workers may have appended a few since the checkpoint: not sequenced yet, or later).
    leaves = sorted(e["leaf_index"] for e in events if e["leaf_index"] is not None)
    assert leaves == list(range(len(leaves))) and len(events) - len(leaves) < 20
    for action in ONCE_PER_TARGET:
        twice = [t for t, n in Counter(e["target"] for e in _by_action(events, action)).items()
                 if n > 1]  # fmt: skip
        assert not twice, (action, twice)
    ended = Counter((e["target"], e["purpose"]) for e in _by_action(events, "purpose.expire"))
    assert ended and max(ended.values()) == 1  # each purpose of each recording ends once
    # Both workers sign tree heads every 2 s: each head follows a different one, and the log
    # only grew.
    heads = httpx.get(f"{people.api2}/v1/audit/checkpoints", headers=people.auth("carol"),
                      params={"limit": 1000}, timeout=30).json()  # fmt: skip
    sizes = [h["tree_size"] for h in heads]
    assert len(sizes) > 1 and sizes == sorted(set(sizes)) and sizes[-1] <= len(events)
    links = [json.loads(h["statement"])["prev_head"] for h in heads]
    assert links[0] is None or links[0]["tree_size"] < sizes[0]
    assert [link["tree_size"] for link in links[1:]] == sizes[:-1]
    assert len(_by_action(events, "recording.ingest")) == len(people.data)
    verified = people.cli("audit", "verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_stopping_the_stack_leaves_no_process_behind(stack: Stack) -> None:
    pids = stack.pids()
    assert _stop(stack.proc) == 0
    assert [p for p in pids if _alive(p)] == []
    logs = stack.directory / "logs"
    assert {p.name for p in logs.iterdir()} >= {"api-1.log", "worker-2.log", "postgres.log"}
    assert not (stack.directory / "data").exists()  # throwaway: the services' data is gone
    assert "database system is shut down" in (logs / "postgres.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--apis", "0"], "--apis must be between 1 and 8"),
     (["--workers", "9"], "--workers must be between 0 and 8")],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("callvault")
    r = subprocess.run([str(exe), "dev-stack", "--dir", str(tmp_path / "d"), *args],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {message} (got {args[1]})"
    ]
    assert not (tmp_path / "d").exists()  # refused before anything was made or started


def test_a_used_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    exe = Path(sys.executable).with_name("callvault")
    r = subprocess.run([str(exe), "dev-stack", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "must be a new or empty directory" in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
