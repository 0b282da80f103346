"""The serving processes' memory settings: keep freed buffers in the heap (glibc only), and
keep the startup heap out of the cyclic garbage collector's walks.

Streaming allocates a 1 MiB plaintext per segment and 2-8 MiB S3 windows. glibc hands blocks
that large back to the kernel when they are freed (mmap threshold, heap trimming), so each new
one is faulted in again page by page: measured, a third of the download path's system time and
15 % of its wall time (README, Performance). Serving processes therefore keep up to 256 MiB of
freed memory for reuse; RSS then stays near its peak instead of shrinking after each stream.

glibc also gives threads arenas of their own (up to eight per core), and every stream has a
helper thread: the first burst of concurrent streams then faulted in fresh arenas while the
memory earlier streams freed sat unused in others (36,000 page faults and 0.3 to 0.6 s of
system time for 16 streams of 32 MiB, against 400 faults and 0.17 s with the cap). ARENA_MAX
arenas are shared by all.

A built app holds about 214,000 objects from its imports (FastAPI, SQLAlchemy, pydantic,
cryptography) that live as long as the process. Every full collection walked all of them:
measured, 0.1 s with the GIL held, once every few uploads, so a pause of that length for every
request and stream on the process's event loop. :func:`freeze_startup_heap` moves them to the
collector's permanent generation once the app is built (what ``gc.freeze`` is for, as
Instagram's servers do before fork); a full collection then walks only what requests made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
ARENA_MAX = 2


def keep_freed_memory() -> bool:
    """Returns whether the allocator took the settings (False off glibc: nothing changes)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(
        mallopt(option, value)
        for option, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_ARENA_MAX, ARENA_MAX),
        )
    )
    if not ok:
        log.info("the C allocator refused the buffer-reuse settings; using its defaults")
    return ok


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; returns how
    many objects are exempt. Call it once per serving process, after the app is built."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
