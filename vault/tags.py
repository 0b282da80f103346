"""Audit action tags and outcomes (floor 1: imported by services, API and jobs alike)."""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    # principals and tenants
    tenant_create = "tenant.create"
    principal_create = "principal.create"
    principal_revoke = "principal.revoke"
    principal_set_role = "principal.set_role"
    principal_clear_owner = "principal.clear_owner"
    principal_rotate_key = "principal.rotate_key"
    console_sign_in = "console.sign_in"
    console_sign_out = "console.sign_out"
    console_session_end = "console.session_end"  # idle, lifetime, key or role change
    auth_denied = "auth.denied"
    auth_denied_aggregate = "auth.denied.aggregate"
    permission_denied = "permission.denied"
    permission_denied_aggregate = "permission.denied.aggregate"
    # recordings
    recording_ingest = "recording.ingest"
    recording_ingest_failed = "recording.ingest.failed"
    recording_purpose_end = "recording.purpose.end"
    recording_read = "recording.read"
    recording_sweep = "recording.sweep"
    integrity_alarm = "integrity.alarm"
    # access
    access_request = "access.request"
    access_approve = "access.approve"
    access_deny = "access.deny"
    access_expire = "access.expire"
    grant_create = "grant.create"
    grant_revoke = "grant.revoke"
    grant_expire = "grant.expire"
    break_glass = "grant.break_glass"
    break_glass_review = "grant.break_glass.review"
    break_glass_overdue = "grant.break_glass.overdue"
    # retention
    purpose_expire = "purpose.expire"
    disposal_deferred = "disposal.deferred"
    dek_destroy = "dek.destroy"
    media_destroy = "media.destroy"
    hold_create = "hold.create"
    hold_release = "hold.release"
    erasure_request = "erasure.request"
    erasure_complete = "erasure.complete"
    restore_reconcile = "restore.reconcile"  # erasures and disposals re-applied after a restore
    # privacy office
    restriction_place = "restriction.place"
    restriction_lift = "restriction.lift"
    subject_access = "privacy.subject_access"  # counts and an opaque id, never the call ids
    # tenants (privacy office): four-eyes changes, policy, offboarding
    tenant_change_propose = "tenant.change.propose"
    tenant_change_approve = "tenant.change.approve"
    tenant_policy_apply = "tenant.policy.apply"  # stored recordings' expiries shortened
    tenant_offboard_start = "tenant.offboard.start"
    tenant_scope_remove = "tenant.scope.remove"  # a multi-tenant principal loses the tenant
    tenant_offboard_receipt = "tenant.offboard.receipt"
    tenant_key_delete = "tenant.key.delete"
    # exports (issue #15): a recording re-encrypted to a recipient's age key, one-time download
    export_produce = "export.produce"
    export_download = "export.download"
    export_complete = "export.complete"  # the receipt: bytes, hash, who, when
    export_revoke = "export.revoke"
    export_delete = "export.delete"
    # the legal-disclosure register (issue #15): never a call id, never a token
    disclosure_receive = "disclosure.receive"
    disclosure_amend = "disclosure.amend"  # a change to the request: approvals reset
    disclosure_object = "disclosure.object"
    disclosure_approval = "disclosure.approval"  # one approver's approval of a revision
    disclosure_approve = "disclosure.approve"  # the request is approved (enough approvals)
    disclosure_disclose = "disclosure.disclose"
    disclosure_close = "disclosure.close"
    disclosure_review = "disclosure.review"  # an emergency disclosure's after-review
    disclosure_notify = "disclosure.notify"
    disclosure_notification_barred = "disclosure.notification.barred"
    disclosure_notification_review_due = "disclosure.notification.review_due"
    # redaction
    redaction_request = "redaction.request"
    redaction_start = "redaction.start"  # the system reads the original under a profile
    redaction_verified = "redaction.verified"
    redaction_failed = "redaction.failed"
    # sub-processors and hand-offs
    subprocessor_add = "subprocessor.add"
    subprocessor_remove = "subprocessor.remove"  # with its hand-offs revoked, principals revoked
    handoff_issue = "handoff.issue"  # the worker made a recording available to a sub-processor
    handoff_transfer = "handoff.transfer"  # that hand-off crossed regions (both named)
    handoff_fail = "handoff.fail"
    handoff_cancel = "handoff.cancel"  # a rule changed while the export was produced
    handoff_withdraw = "handoff.withdraw"  # revoked at redemption: a rule no longer holds
    handoff_claim = "handoff.claim"  # the sealed token collected (once)
    handoff_forget = "handoff.forget"  # an unclaimed sealed token, past its expiry
    handoff_transcript = "handoff.transcript"  # the transcript stored as a derivative
    # keys and audit
    kek_rotate = "kek.rotate"
    kek_rewrap = "kek.rewrap"
    kek_retire = "kek.retire"
    audit_checkpoint = "audit.checkpoint"
    scrub = "integrity.scrub"
    # reports
    report_evidence = "report.evidence"
    # data residency: a read served to another region than the recording's (vault.residency)
    residency_transfer = "residency.transfer"


class Outcome(StrEnum):
    ok = "ok"
    denied = "denied"
    failed = "failed"
