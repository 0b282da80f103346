"""The serving processes' allocator settings (vault/allocator.py), checked in a fresh process:
freed buffers are kept for reuse, and helper threads share a capped number of arenas instead of
faulting in fresh ones for every burst of concurrent streams."""

from __future__ import annotations

import subprocess
import sys

from vault.allocator import ARENA_MAX

# Eight threads allocate and free 1 MiB buffers at once, then glibc reports its arenas.
_BURST = """
import ctypes, ctypes.util, sys, threading
if sys.argv[1] == "serving":
    from vault.allocator import keep_freed_memory
    assert keep_freed_memory()
start = threading.Barrier(8)
def work():
    start.wait()
    for _ in range(50):
        buf = bytearray(1 << 20)
        del buf
        small = [bytes(100) for _ in range(100)]
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""


def _arenas(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _BURST, mode], capture_output=True, text=True, check=True
    )
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


def test_helper_threads_share_the_capped_arenas_in_a_serving_process() -> None:
    assert _arenas("serving") <= ARENA_MAX
    # Without the settings the same burst spreads over more arenas (so the check can fail).
    assert _arenas("plain") > ARENA_MAX


def test_the_serving_processes_keep_freed_buffers_on_glibc() -> None:
    from vault.allocator import keep_freed_memory

    assert keep_freed_memory() is True  # this machine's libc is glibc: the settings must take
