"""Timing, memory and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


class Sink(io.RawIOBase):
    """A writable stream that discards everything (the common sink of every contender)."""

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
        return len(b)


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs: the least disturbed by a busy 2-core box."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Reset VmHWM so a later peak reading covers only what follows (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def report(name: str, rows: list[tuple[str, str]], data: dict[str, object]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n== {name} ==")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True))


def mib_env(var: str, default: int) -> int:
    """Sizes can be shrunk for a smoke run: ``CALLVAULT_BENCH_MIB=16 python -m bench``."""
    return int(os.environ.get(var, os.environ.get("CALLVAULT_BENCH_MIB", default)))
