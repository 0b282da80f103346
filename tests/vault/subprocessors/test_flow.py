"""The opt-in through the tenant's four-eyes authorisations, the stock ``age`` tool on the
sub-processor's side, and the transfer rule as a property."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from tests.vault.subprocessors.conftest import MEDIA, World
from vault.models import Handoff
from vault.subprocessors.transfers import check_transfer
from vault.tenants.policy import Authorisations, TransferPermission


def test_an_opt_in_counts_only_once_a_privacy_officer_of_another_owner_approves(
    lite: World,
) -> None:
    other = lite.ingest(tenant="globex")
    body = {
        "reason": "signed DPA annex 3",
        "subprocessors": [
            {"subprocessor": "scribe", "opted_in": True, "instruction_ref": "DPA-7 annex 3"}
        ],
    }
    change = lite.client.put("/v1/tenants/globex/authorisations", json=body,
                             headers=lite.h("admin"))  # fmt: skip
    assert change.status_code == 202, change.text
    lite.run_job()
    with lite.ctx.db.session() as s:
        assert other not in {h.recording_id for h in s.exec(select(Handoff)).all()}
    approved = lite.client.post(
        "/v1/tenants/globex/authorisations/approve",
        json={"change_id": change.json()["id"]},
        headers=lite.h("dpo"),
    )
    assert approved.status_code == 200, approved.text
    lite.run_job()
    with lite.ctx.db.session() as s:
        assert other in {h.recording_id for h in s.exec(select(Handoff)).all()}


def test_the_subprocessor_opens_token_and_media_with_the_stock_age_tool(
    lite: World, tmp_path: Path
) -> None:
    age = shutil.which("age")
    assert age, "Debian's age is needed (installed by .ci/run)"
    lite.run_job()
    (item,) = lite.handoffs()
    claim = lite.client.post(f"/v1/handoffs/{item['id']}/claim", headers=lite.h("sp"))
    key = tmp_path / "key.txt"
    key.write_text(str(lite.identity) + "\n")

    def age_d(data: bytes) -> bytes:
        return subprocess.run([age, "-d", "-i", str(key)], input=data, capture_output=True,
                              check=True, timeout=60).stdout  # fmt: skip

    token = age_d(base64.b64decode(claim.json()["sealed_token"])).decode()
    media = lite.media(item["id"], token)
    assert media.status_code == 200
    assert media.headers["content-disposition"].endswith('.age"')
    assert age_d(media.content) == MEDIA


REGIONS = st.sampled_from(["eu", "ch", "us", "uk"])


@given(source=st.none() | REGIONS, destination=REGIONS,
       listed=st.lists(REGIONS, max_size=3, unique=True))  # fmt: skip
def test_a_handoff_crosses_regions_only_as_listed(
    source: str | None, destination: str, listed: list[str]
) -> None:
    auth = Authorisations(transfers=[
        TransferPermission(destination=d, mechanism="SCC", instruction_ref="ORDER-1")
        for d in listed
    ])  # fmt: skip
    found = check_transfer(source_region=source, destination_region=destination,
                           authorisations=auth)  # fmt: skip
    assert found.crosses == (source != destination)  # no region counts as elsewhere
    assert found.allowed == (source == destination or destination in listed)
    if found.crosses and found.allowed:
        assert found.audit_details()["to_region"] == destination
        assert found.audit_details()["from_region"] == source
