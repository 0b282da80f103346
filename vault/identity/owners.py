"""Owner identity as everything outside the principal row sees it: a keyed pseudonym.

Four-eyes compares owners (the person or service behind a key), so every access table and every
audit event needs *some* owner value, but the audit chain cannot be erased and the access tables
outlive people. They hold ``owner_ref``: HMAC-SHA256 of the normalised owner under the provider's
pseudonym key, which the KEK cycle never rotates, so one person's value compares equal forever
while nothing outside the key can map it back (or test a guessed e-mail). The e-mail itself lives
only on the principal row, where ``principal clear-owner`` removes it.

The provider call happens before any transaction opens (keys are never called under a lock), so
callers build an :class:`Owner` first and hand it to the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vault.errors import InvalidInputError
from vault.keys import Keys

__all__ = ["OWNER_DOMAIN", "Owner", "normalise_owner", "owner_of", "owner_refs"]

# Domain separation: the same key may one day pseudonymise other kinds of value.
OWNER_DOMAIN = b"callvault/v1/owner\x00"
_EMAIL_RE = re.compile(r"[^\s@]+@[^\s@]+")
_SERVICE_RE = re.compile(r"[a-z0-9][a-z0-9._:/-]*")


def normalise_owner(owner: object) -> str:
    """Lower-cased e-mail or service id: "Alice@X" and "alice@x" are one person for four-eyes."""
    value = owner.strip().lower() if isinstance(owner, str) else ""
    if not 3 <= len(value) <= 256 or not (
        _EMAIL_RE.fullmatch(value) or _SERVICE_RE.fullmatch(value)
    ):
        raise InvalidInputError("owner must be an email address or a service id (no spaces)")
    return value


@dataclass(frozen=True, slots=True)
class Owner:
    email: str  # normalised; stored on the principal row only
    ref: str  # the pseudonym stored everywhere else

    def __repr__(self) -> str:  # never print the e-mail by accident
        return f"Owner(ref={self.ref[:12]}...)"


def owner_of(keys: Keys, owner: object) -> Owner:
    """Normalise and pseudonymise (one key-provider call; make it outside any transaction)."""
    email = normalise_owner(owner)
    return Owner(email=email, ref=keys.pseudonym(OWNER_DOMAIN + email.encode("utf-8")))


def owner_refs(keys: Keys, owners: Iterable[str]) -> dict[str, str]:
    """Pseudonyms for stored (already normalised) owner values, for the 0005 migration."""
    return {o: keys.pseudonym(OWNER_DOMAIN + o.encode("utf-8")) for o in sorted(set(owners))}
