"""A cache of stream headers by object *version* (issue #12), held by the runtime context and
used by playback's read-ahead (:mod:`vault.recordings.windows`): a seek past the first segment
then makes one GET instead of two."""

from __future__ import annotations

from vault.storage.lru import BoundedLru

__all__ = ["HeaderCache"]


class HeaderCache(BoundedLru[tuple[str, str], bytes]):
    """The stream headers of recently read object *versions*, so that a seek past the first
    segment makes one GET instead of two (issue #12). A header is public ciphertext (the salt
    and nonce prefix, no key material) and every segment it opens is authenticated against the
    DEK; an object version never changes, and a store without versions is never cached."""
