"""Named crash points for crash-safety tests.

``CALLVAULT_CRASH_AT=name`` makes the process kill itself with SIGKILL the first time it passes
``crashpoint(name)`` — no cleanup, no finally blocks, no flushed buffers — exactly like a power
cut or the OOM killer. Unset (always, in production), a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CALLVAULT_CRASH_AT"

# The points the retention and key jobs pass; tests name them.
AFTER_DEK_DESTROYED = "after-dek-destroyed"
AFTER_PARTIAL_OBJECT_DELETE = "after-partial-object-delete"
AFTER_KEK_ROTATE = "after-kek-rotate"
AFTER_REWRAP = "after-rewrap"


def crashpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
