"""Early GETs: a repeat read starts fetching its ciphertext before it is authorised (issue #12).

A ranged GET has a fixed cost of several milliseconds on SeaweedFS (~8 ms for 1 MiB on a slow
2-core machine), about as long as the grant check and the read event's commit together, and
playback could only start it after the check. The context remembers, per process, where a
recording's ciphertext lies (region, object key, version, size, ETag: all fixed for a
recording's lifetime; :class:`vault.storage.Locations`) once an actor has read it under a
grant; that actor's next read of it starts its GET at once, beside the authorisation.

What leaves the server does not change:

- no key is unwrapped and nothing is decrypted before the authorisation and the committed read
  event, exactly as without an early GET; a refused read drops what was fetched;
- the row the authorisation finds must name the same object version, size and range, or the
  early GET is dropped and the read starts over from the row;
- only a pair (actor, recording) that was read under a grant is remembered: a principal who
  never held a grant on a recording cannot make the server fetch a byte of it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from crypto import streaming
from vault.context import Context
from vault.recordings.ranges import requested_range
from vault.recordings.windows import WindowReader, reader_for
from vault.storage import Location

__all__ = ["EarlyRead", "start"]


@dataclass(slots=True)
class EarlyRead:
    """A reader started before the authorisation, for the location and plaintext span it
    assumed."""

    location: Location
    start: int
    end: int
    reader: WindowReader

    def matches(self, location: Location, start: int, end: int) -> bool:
        return (self.location, self.start, self.end) == (location, start, end)


def start(
    ctx: Context,
    *,
    actor_id: uuid.UUID,
    recording_id: uuid.UUID,
    range_header: str | None,
    if_range: str | None,
) -> EarlyRead | None:
    """The early GETs of a read whose location this actor has seen, or None."""
    location = ctx.read_locations.get((actor_id, recording_id))
    if location is None:
        return None
    try:
        size = streaming.plaintext_size(location.ciphertext_size)
        chosen = requested_range(range_header, if_range, etag=location.etag, size=size)
        begin, end = chosen if chosen is not None else (0, size)
        store = ctx.store_for(location.region)
    except Exception:
        return None  # a 416, a region no longer configured: the authorised path answers
    reader = reader_for(
        store, object_key=location.object_key, version_id=location.version_id,
        ciphertext_size=location.ciphertext_size, start=begin, end=end,
        headers=ctx.stream_headers,
    )  # fmt: skip
    return EarlyRead(location=location, start=begin, end=end, reader=reader)
