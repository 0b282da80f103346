"""The shipped alert rules (deploy/prometheus/alerts.yml): valid for Prometheus, each one tested
firing and not firing by ``promtool test rules`` (Debian's ``prometheus`` package), over metric
names that ``/metrics`` really exports. Without promtool these tests fail; they never skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vault.ops.metrics import FAMILIES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES, RULE_TESTS = DEPLOY / "alerts.yml", DEPLOY / "alerts.test.yml"
# One alert per condition of issue #13, the scrape's own, and #15's emergency disclosures.
EXPECTED = {
    "CallvaultErasureNearDeadline", "CallvaultErasureOverdue", "CallvaultDisposalLag",
    "CallvaultJobFailing", "CallvaultJobNotSucceeding", "CallvaultBreakGlassReviewOverdue",
    "CallvaultIntegrityAlarm", "CallvaultAuditCheckpointTooOld", "CallvaultAuditUnsequenced",
    "CallvaultKekTooOld", "CallvaultMetricsScrapeErrors", "CallvaultDisclosureReviewOverdue",
}  # fmt: skip


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is required: apt-get install --no-install-recommends prometheus",
            pytrace=False,
        )
    return subprocess.run(
        [exe, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False
    )


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    r = _promtool("check", "rules", RULES.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(EXPECTED)} rules found" in r.stdout


def test_every_rule_fires_and_stays_quiet_as_its_tests_expect() -> None:
    r = _promtool("test", "rules", RULE_TESTS.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_each_alert_has_a_firing_and_a_quiet_case() -> None:
    assert {rule["alert"] for rule in _rules()} == EXPECTED
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert cases == {name: {True, False} for name in EXPECTED}


def test_the_rules_use_only_exported_metric_names() -> None:
    exported = set(FAMILIES) | {"callvault_metrics_scrape_errors_total"}
    used = {name for rule in _rules() for name in re.findall(r"callvault_\w+", rule["expr"])}
    assert used and used <= exported, used - exported


def test_promtool_catches_a_broken_expectation(tmp_path: Path) -> None:
    """The harness can fail: a test expecting an alert that the rules do not raise fails."""
    (tmp_path / RULES.name).write_text(RULES.read_text())
    broken = RULE_TESTS.read_text().replace(
        "      - eval_time: 5m\n        alertname: CallvaultErasureOverdue\n        exp_alerts: []",
        "      - eval_time: 5m\n        alertname: CallvaultErasureOverdue\n        exp_alerts:\n"
        "          - exp_labels: {severity: critical}",
    )
    assert broken != RULE_TESTS.read_text()
    (tmp_path / RULE_TESTS.name).write_text(broken)
    exe = shutil.which("promtool") or pytest.fail("promtool is required", pytrace=False)
    r = subprocess.run([exe, "test", "rules", RULE_TESTS.name], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode != 0 and "CallvaultErasureOverdue" in r.stdout + r.stderr
