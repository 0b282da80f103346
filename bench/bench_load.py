"""Loopback load test on the dev stack (``vault.devstack``): 16 concurrent clients mixing
authenticated metadata reads, 5 MiB ingests and 1 MiB ranged playback, against one API process
and against two, then the same while two workers purge expired recordings.

Clients: 16 threads in this process, each with its own ``httpx.Client`` (keep-alive). They share
the machine's two cores with everything they measure, so the client's CPU is reported too.
Each phase stops at CALLVAULT_BENCH_LOAD_OPS operations or CALLVAULT_BENCH_LOAD_SECONDS,
whichever comes first. The CPU seconds of every component (psutil, children included) say where
the time went and so why a second API process helps as much as it does.

``python -m bench load``; smoke run: ``CALLVAULT_BENCH_LOAD_OPS=60 python -m bench load``.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg

from bench._util import report
from vault.devstack.policy import fast_policy
from vault.devstack.postgres import to_libpq
from vault.devstack.stack import Stack, callvault_cmd, run_stack

MiB = 1 << 20
CLIENTS = 16
OPS = int(os.environ.get("CALLVAULT_BENCH_LOAD_OPS", "320"))
SECONDS = float(os.environ.get("CALLVAULT_BENCH_LOAD_SECONDS", "15"))
INGEST_BYTES = 5 * MiB
RANGE_BYTES = MiB
PLAY_RECORDINGS, PLAY_BYTES = 8, 8 * MiB
PURGE_SEED = 48  # 1 MiB recordings that expire just as a purging phase starts
# The mix, by weight: mostly reads, as a vault is used; every ingest is 5 MiB.
MIX = (("metadata", 50), ("playback", 35), ("ingest", 15))
EXPIRES_SECONDS = 4.0
POLICY = fast_policy(expire_seconds=EXPIRES_SECONDS)


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0

    def take(self) -> bool:
        with self.lock:
            self.started += 1
            return self.started <= OPS

    def add(self, kind: str, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies[kind].append(seconds)
            else:
                self.errors[kind] += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{kind}: {error}")


class Vault:
    """The principals, the recordings to play and their grant on one running stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        admin = {"Authorization": f"Bearer {stack.admin_key_file.read_text().strip()}"}
        base = stack.api_urls[0]
        httpx.post(f"{base}/v1/tenants", json={"name": "acme"}, headers=admin).raise_for_status()
        env = {**os.environ, **stack.env}

        def add(name: str, role: str) -> tuple[str, str]:
            out = subprocess.run(
                [*callvault_cmd(), "principal", "add", name, "--role", role, "--owner",
                 f"{name}@bench.example", "--tenant", "acme"],
                cwd=stack.directory, env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            return name, out.strip().splitlines()[-1]

        people = (("bot", "ingest"), ("alice", "engineer"), ("bob", "approver"))
        with ThreadPoolExecutor(3) as pool:
            self.keys = dict(pool.map(lambda p: add(*p), people))
        self.playable = self.ingest_many(PLAY_RECORDINGS, PLAY_BYTES, "troubleshooting")
        self._grant(self.playable)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def ingest(self, client: httpx.Client, api: str, data: bytes, purpose: str) -> str:
        r = client.post(f"{api}/v1/recordings", params={"tenant": "acme", "purposes": purpose},
                        headers={**self.auth("bot"), "Content-Type": "audio/ogg"}, content=data)  # fmt: skip
        r.raise_for_status()
        return str(r.json()["id"])

    def ingest_many(self, count: int, size: int, purpose: str) -> list[str]:
        data, apis = os.urandom(size), self.stack.api_urls

        def one(i: int) -> str:
            with httpx.Client(timeout=120) as c:
                return self.ingest(c, apis[i % len(apis)], data, purpose)

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, range(count)))

    def _grant(self, rids: list[str]) -> None:
        api = self.stack.api_urls[0]
        body = {"recording_ids": rids, "purpose": "troubleshooting", "reason": "load benchmark",
                "ticket": "BENCH-2", "duration_minutes": 120}  # fmt: skip
        r = httpx.post(f"{api}/v1/access-requests", json=body, headers=self.auth("alice"))
        r.raise_for_status()
        httpx.post(f"{api}/v1/access-requests/{r.json()['id']}/approve", json={"comment": "ok"},
                   headers=self.auth("bob")).raise_for_status()  # fmt: skip

    def disposed(self) -> int:
        url = to_libpq(self.stack.env["CALLVAULT_DATABASE_URL"])
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM recording WHERE status = 'disposed'"
            ).fetchone()
        return int(row[0]) if row else 0


def _client(vault: Vault, apis: list[str], n: int, tally: Tally, deadline: float) -> None:
    rng = random.Random(n)
    api = apis[n % len(apis)]  # each client sticks to one API process, as behind a balancer
    payload = os.urandom(INGEST_BYTES)
    kinds, weights = zip(*MIX, strict=True)
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline and tally.take():
            kind = rng.choices(kinds, weights)[0]
            rid = rng.choice(vault.playable)
            t0 = time.perf_counter()
            try:
                if kind == "metadata":
                    r = client.get(f"{api}/v1/recordings/{rid}", headers=vault.auth("alice"))
                elif kind == "playback":
                    start = rng.randrange(0, PLAY_BYTES - RANGE_BYTES)
                    r = client.get(f"{api}/v1/recordings/{rid}/content", headers={
                        **vault.auth("alice"), "Range": f"bytes={start}-{start + RANGE_BYTES - 1}"})  # fmt: skip
                    if r.status_code == 206 and len(r.content) != RANGE_BYTES:
                        raise ValueError(f"short range: {len(r.content)} bytes")
                else:
                    vault.ingest(client, api, payload, "transcription")
                    r = None
                if r is not None and not r.is_success:
                    raise ValueError(f"HTTP {r.status_code}")
                tally.add(kind, time.perf_counter() - t0, None)
            except (httpx.HTTPError, ValueError) as exc:
                tally.add(kind, time.perf_counter() - t0, str(exc)[:200])


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live children (PostgreSQL's backends, uvicorn)."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total
    return 0.0


def _cpu(stack: Stack, apis: int) -> dict[str, float]:
    groups = {"client": [os.getpid()], "api": [p.pid for p in stack.apis[:apis]],
              "workers": [p.pid for p in stack.workers]}  # fmt: skip
    groups |= {p.name: [p.pid] for p in stack.services}
    own = psutil.Process().cpu_times()
    out = {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
    out["client"] = own.user + own.system  # not our children: the stack's processes
    machine = psutil.cpu_times()
    # Everything the machine did, ours or not: other work on the box shows as the difference.
    idle = ("idle", "iowait", "steal", "guest", "guest_nice")  # guest time is in user already
    out["machine"] = sum(machine) - sum(getattr(machine, f, 0.0) for f in idle)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def phase(vault: Vault, apis: int, purging: bool) -> dict[str, object]:
    urls = vault.stack.api_urls[:apis]
    before_disposed = vault.disposed()
    if purging:  # recordings that expire as the load starts; the workers purge them during it
        vault.ingest_many(PURGE_SEED, MiB, "transcription")
        time.sleep(EXPIRES_SECONDS)
    cpu0, tally = _cpu(vault.stack, apis), Tally()
    t0 = time.perf_counter()
    deadline = time.monotonic() + SECONDS
    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(_client, vault, urls, n, tally, deadline) for n in range(CLIENTS)]:
            f.result()
    wall = time.perf_counter() - t0
    cpu1 = _cpu(vault.stack, apis)
    done = sum(len(v) for v in tally.latencies.values())
    moved = (len(tally.latencies["ingest"]) * INGEST_BYTES
             + len(tally.latencies["playback"]) * RANGE_BYTES)  # fmt: skip
    result: dict[str, object] = {
        "apis": apis, "purging": purging, "ops": done, "seconds": wall,
        "ops_per_s": done / wall, "mib_per_s": moved / MiB / wall,
        "errors": sum(tally.errors.values()), "error_examples": tally.examples,
        "disposed_during": vault.disposed() - before_disposed,
        "cpu_seconds": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1},
        "cores": psutil.cpu_count(), "loadavg_1m_after": os.getloadavg()[0],
    }  # fmt: skip
    for kind, _ in MIX:
        lat = tally.latencies[kind]
        result[kind] = {"n": len(lat), "errors": tally.errors[kind],
                        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
                        "p99_ms": 1000 * _pct(lat, 0.99)}  # fmt: skip
    return result


@contextlib.contextmanager
def _stack(tmp: Path, name: str, workers: int) -> Iterator[Vault]:
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    env = {**os.environ, "CALLVAULT_POLICY_FILE": str(policy),
           "CALLVAULT_JOB_INTERVAL_SECONDS": "1",
           # 16 clients share one ingest principal here; the per-principal upload cap (4) is an
           # abuse limit, not what this measures.
           "CALLVAULT_MAX_UPLOADS_PER_PRINCIPAL": str(CLIENTS)}  # fmt: skip
    with run_stack(tmp / name, apis=2, workers=workers, base_env=env) as stack:
        yield Vault(stack)


def _row(r: dict[str, object]) -> tuple[str, str]:
    kinds = "  ".join(
        f"{k} {r[k]['p50_ms']:.0f}/{r[k]['p99_ms']:.0f} ms"  # type: ignore[index]
        for k, _ in MIX
    )
    label = f"{r['apis']} API{'s' if r['apis'] != 1 else ''}{' + purge' if r['purging'] else ''}"
    return label, (f"{r['ops_per_s']:.1f} ops/s, {r['mib_per_s']:.0f} MiB/s, "
                   f"errors {r['errors']}, disposed {r['disposed_during']}; p50/p99: {kinds}; "
                   f"cpu s {r['cpu_seconds']}")  # fmt: skip


def main() -> None:
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        for workers, purging in ((0, False), (2, True)):
            with _stack(Path(tmp), f"stack-{workers}", workers) as vault:
                results += [phase(vault, apis, purging) for apis in (1, 2)]
    one, two = results[0], results[1]
    ratio = float(two["ops_per_s"]) / float(one["ops_per_s"])  # type: ignore[arg-type]
    rows = [_row(r) for r in results]
    rows.append(("2 APIs / 1 API", f"{ratio:.2f}x ops/s (no purge)"))
    report("load", rows, {"clients": CLIENTS, "ops_cap": OPS, "seconds_cap": SECONDS,
                          "mix": dict(MIX), "phases": results, "two_over_one": ratio})  # fmt: skip
