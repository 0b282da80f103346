"""A policy that lets a dev stack show its workers at work within seconds.

``troubleshooting`` keeps recordings a day (for playing); ``transcription`` expires after
``expire_seconds``, so the workers' expire-purposes and dispose jobs act while you watch; with
``kek_rotation_seconds`` the first kek-cycle rotates at once. Only purposes the privacy notice
names; the packaged erasure deadline is kept.
"""

from __future__ import annotations

DAY = 86_400.0


def fast_policy(*, expire_seconds: float, kek_rotation_seconds: float | None = None) -> str:
    """TOML for ``CALLVAULT_POLICY_FILE``."""
    kek = (
        ""
        if kek_rotation_seconds is None
        else f"kek_rotation_days = {kek_rotation_seconds / DAY:.8f}\n"
    )
    purposes = (("troubleshooting", 1.0), ("transcription", expire_seconds / DAY))
    return kek + "".join(
        f"[purposes.{name}]\nretention_days = {days:.8f}\nmax_access_minutes = 120\n"
        f'approvals = 1\napprover_roles = ["approver"]\non_expiry = "delete"\n'
        for name, days in purposes
    )
