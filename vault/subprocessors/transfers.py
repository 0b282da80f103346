"""A hand-off to a sub-processor in another region is a transfer: allowed only when the tenant's
approved authorisations list it (destination region, mechanism, instruction reference).

The decision is data residency's (:func:`vault.residency.decide`); this module only adapts it
to the hand-off's view. A tenant without a region is treated as being
anywhere but the destination: nobody can show that its data stays in the region, so it needs
the transfer listed too (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault import residency
from vault.errors import TransferNotAuthorisedError
from vault.tenants.policy import Authorisations

# A tenant without a region is "somewhere": never the destination's region (fail closed).
_NO_REGION = "(no region)"

__all__ = ["Transfer", "check_transfer"]


@dataclass(frozen=True, slots=True)
class Transfer:
    source: str | None
    destination: str
    permission: residency.Transfer | None  # the authorised transfer, if one is

    @property
    def crosses(self) -> bool:
        return self.source != self.destination

    @property
    def allowed(self) -> bool:
        return not self.crosses or self.permission is not None

    def audit_details(self) -> dict[str, str | None]:
        p = self.permission
        return {
            "from_region": self.source, "to_region": self.destination,
            "mechanism": p.mechanism if p else None,
            "instruction_ref": p.instruction_ref if p else None,
        }  # fmt: skip


def check_transfer(
    *, source_region: str | None, destination_region: str, authorisations: Authorisations
) -> Transfer:
    """Whether data of a tenant in ``source_region`` may go to ``destination_region``: the
    decision is :func:`vault.residency.decide`'s, the one owner of the transfer rule."""
    try:
        decided = residency.decide(
            authorisations, source=source_region or _NO_REGION, destination=destination_region
        )
    except TransferNotAuthorisedError:
        decided = None
    return Transfer(source_region, destination_region, decided)
