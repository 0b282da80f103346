"""A hand-off to a sub-processor in another region is a transfer: allowed only when the tenant's
approved authorisations list it (destination region, mechanism, instruction reference).

One small pure function over the two regions and the authorisations, so that it can move to a
shared owner (data residency) without change. A tenant without a region is treated as being
anywhere but the destination: nobody can show that its data stays in the region, so it needs
the transfer listed too (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.tenants.policy import Authorisations, TransferPermission

__all__ = ["Transfer", "check_transfer"]


@dataclass(frozen=True, slots=True)
class Transfer:
    source: str | None
    destination: str
    permission: TransferPermission | None  # the authorisation that allows it, if one does

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
    """Whether data of a tenant in ``source_region`` may go to ``destination_region``."""
    if source_region == destination_region:
        return Transfer(source_region, destination_region, None)
    listed = next(
        (t for t in authorisations.transfers if t.destination == destination_region), None
    )
    return Transfer(source_region, destination_region, listed)
