"""The transfer rule itself (vault.residency.decide), for any authorisations and regions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.errors import TransferNotAuthorisedError
from vault.residency import Transfer, decide
from vault.tenants.policy import Authorisations, TransferPermission

REGIONS = st.sampled_from(["us", "eea", "ch", "uk", "apac"])
PERMISSIONS = st.builds(
    TransferPermission,
    destination=REGIONS,
    mechanism=st.sampled_from(["SCC", "adequacy decision", "BCR"]),
    instruction_ref=st.from_regex(r"DPA-[0-9]{1,4}", fullmatch=True),
)


@given(st.lists(PERMISSIONS, max_size=6), REGIONS, REGIONS)
def test_a_transfer_is_allowed_exactly_when_its_destination_is_authorised(
    allowed: list[TransferPermission], source: str, destination: str
) -> None:
    authorisations = Authorisations(transfers=allowed)
    if source == destination:  # no transfer at all, whatever is authorised
        assert decide(authorisations, source=source, destination=destination) is None
        return
    matching = [p for p in allowed if p.destination == destination]
    if not matching:
        with pytest.raises(TransferNotAuthorisedError):
            decide(authorisations, source=source, destination=destination)
        return
    first = matching[0]
    assert decide(authorisations, source=source, destination=destination) == Transfer(
        source, destination, first.mechanism, first.instruction_ref
    )
