"""The policy loader: packaged defaults, one-line errors for every bad file, and a round trip."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.errors import UnknownPurposeError, VaultError
from vault.models import Role
from vault.policy import (
    NOTICE_PURPOSES,
    ROLES,
    Policy,
    PolicyError,
    PurposePolicy,
    load_policy,
)

DEFAULT_PURPOSES = ["fraud", "security", "transcription", "troubleshooting"]


def purpose_block(name: str = "fraud", **overrides: str | None) -> str:
    """A valid ``[purposes.NAME]`` table; overrides give raw TOML values, None drops a key."""
    keys: dict[str, str | None] = {
        "retention_days": "10",
        "max_access_minutes": "60",
        "approvals": "1",
        "approver_roles": '["approver"]',
        "on_expiry": '"delete"',
    }
    keys.update(overrides)
    lines = [f"[purposes.{name}]"] + [f"{k} = {v}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"policy {path}: "
    assert message.startswith(prefix), message
    return message.removeprefix(prefix)


# --- packaged defaults ---------------------------------------------------------------------------


def test_defaults_load_with_the_designed_shape() -> None:
    policy = load_policy()
    assert policy.names == DEFAULT_PURPOSES
    assert policy.erasure_deadline == timedelta(days=30)
    assert policy.kek_rotation == timedelta(days=7)
    ts = policy.purpose("troubleshooting")
    assert ts == PurposePolicy(
        retention_days=30,
        max_access_minutes=240,
        approvals=1,
        approver_roles=["approver", "security"],
        on_expiry="delete",
    )
    assert ts.retention == timedelta(days=30)
    assert ts.max_access == timedelta(hours=4)
    for name in policy.names:
        rule = policy.purpose(name)
        assert rule.approvals >= 1 and rule.on_expiry == "delete"
        assert rule.retention_days <= 365


def test_defaults_are_packaged_as_a_resource() -> None:
    text = resources.files("vault").joinpath("default_policy.toml").read_text(encoding="utf-8")
    assert "erasure_deadline_days = 30" in text
    for name in DEFAULT_PURPOSES:
        assert f"[purposes.{name}]" in text


def test_unknown_purpose_is_the_domain_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownPurposeError, match=r"marketing.*fraud, security") as info:
        load_policy().purpose("marketing")
    assert isinstance(info.value, VaultError)
    assert info.value.extra == {"purpose": "marketing"}


def test_roles_match_the_role_enum() -> None:
    assert set(ROLES) == {r.value for r in Role}


def test_policy_is_immutable() -> None:
    policy = load_policy()
    with pytest.raises(ValueError, match="frozen"):
        policy.kek_rotation_days = 1  # type: ignore[misc]


# --- overriding the defaults ---------------------------------------------------------------------


def test_file_without_purposes_keeps_the_default_purposes(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "erasure_deadline_days = 20\nkek_rotation_days = 2.5\n"))
    assert policy.erasure_deadline_days == 20
    assert policy.kek_rotation == timedelta(days=2.5)
    assert policy.names == DEFAULT_PURPOSES


def test_file_with_purposes_replaces_them_entirely(tmp_path: Path) -> None:
    policy = load_policy(str(write(tmp_path, purpose_block("fraud", retention_days="5"))))
    assert policy.names == ["fraud"]
    assert policy.purpose("fraud").retention_days == 5
    assert policy.kek_rotation_days == 7  # top-level keys still come from the defaults
    with pytest.raises(UnknownPurposeError):
        policy.purpose("troubleshooting")


def test_fractional_periods_are_accepted(tmp_path: Path) -> None:
    text = '[vocabulary.quick]\nnotice_clause = "test clause"\n' + purpose_block(
        "quick",
        retention_days="0.0001",
        max_access_minutes="0.05",
        derivative_retention_days="0.5",
        redaction_profile='"faces-blurred"',
    )
    rule = load_policy(write(tmp_path, text)).purpose("quick")
    assert rule.retention == timedelta(seconds=8.64)
    assert rule.max_access == timedelta(seconds=3)
    assert rule.derivative_retention == timedelta(hours=12)
    assert rule.redaction_profile == "faces-blurred"


def test_deadline_limits_are_inclusive_where_they_should_be(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "erasure_deadline_days = 30\nkek_rotation_days = 29.9\n"))
    assert policy.erasure_deadline_days == 30 and policy.kek_rotation_days == 29.9


# --- bad files -----------------------------------------------------------------------------------

BAD_CASES: list[tuple[str, str, str]] = [
    ("unknown top-level key", 'colour = "red"\n', "colour: unknown key"),
    (
        "unknown purpose key",
        purpose_block(colour='"red"'),
        "purposes.fraud.colour: unknown key",
    ),
    (
        "unknown nested table",
        purpose_block() + "[purposes.fraud.extra]\nx = 1\n",
        "purposes.fraud.extra: unknown key",
    ),
    (
        "missing key",
        purpose_block(approvals=None),
        "purposes.fraud.approvals: missing required key",
    ),
    (
        "string for a number",
        purpose_block(retention_days='"ten"'),
        'purposes.fraud.retention_days: expected a number (got "ten")',
    ),
    (
        "bool for a number",
        purpose_block(max_access_minutes="true"),
        "purposes.fraud.max_access_minutes: expected a number (got true)",
    ),
    (
        "float for an integer",
        purpose_block(approvals="1.5"),
        "purposes.fraud.approvals: expected an integer (got 1.5)",
    ),
    (
        "bool for an integer",
        purpose_block(approvals="true"),
        "purposes.fraud.approvals: expected an integer (got true)",
    ),
    (
        "string for roles",
        purpose_block(approver_roles='"security"'),
        'purposes.fraud.approver_roles: expected an array (got "security")',
    ),
    (
        "zero approvals",
        purpose_block(approvals="0"),
        "purposes.fraud.approvals: must be >= 1 (got 0)",
    ),
    (
        "zero retention",
        purpose_block(retention_days="0"),
        "purposes.fraud.retention_days: must be > 0 (got 0)",
    ),
    (
        "negative retention",
        purpose_block(retention_days="-1.5"),
        "purposes.fraud.retention_days: must be > 0 (got -1.5)",
    ),
    (
        "infinite retention",
        purpose_block(retention_days="inf"),
        "purposes.fraud.retention_days: must be a finite number (got Infinity)",
    ),
    (
        "nan access",
        purpose_block(max_access_minutes="nan"),
        "purposes.fraud.max_access_minutes: must be a finite number (got NaN)",
    ),
    (
        "zero access",
        purpose_block(max_access_minutes="0"),
        "purposes.fraud.max_access_minutes: must be > 0 (got 0)",
    ),
    (
        "negative derivative retention",
        purpose_block(derivative_retention_days="-1"),
        "purposes.fraud.derivative_retention_days: must be > 0 (got -1)",
    ),
    (
        "unknown role",
        purpose_block(approver_roles='["approver", "root"]'),
        "purposes.fraud.approver_roles[1]: must be one of 'admin', 'ingest', 'engineer', "
        "'approver', 'security', 'privacy', 'auditor', 'monitor' or 'subprocessor' "
        "(got \"root\")",
    ),
    (
        "no roles",
        purpose_block(approver_roles="[]"),
        "purposes.fraud.approver_roles: must not be empty",
    ),
    (
        "role twice",
        purpose_block(approver_roles='["security", "security"]'),
        'purposes.fraud.approver_roles: role "security" listed twice',
    ),
    (
        "redact without a profile",
        purpose_block(on_expiry='"redact"'),
        'purposes: fraud: on_expiry = "redact" needs a redaction_profile',
    ),
    (
        "redact with a profile that only minimises",
        purpose_block(on_expiry='"redact"', redaction_profile='"faces-blurred"'),
        'purposes: fraud: on_expiry = "redact" keeps the derivative after the original is gone, '
        'so its profile must be deidentifying; "faces-blurred" is not',
    ),
    (
        "undefined profile",
        purpose_block(redaction_profile='"voices-only"'),
        'purposes: fraud: redaction_profile "voices-only" is not defined '
        "(no [redaction_profiles.voices-only])",
    ),
    (
        "unknown operation",
        '[redaction_profiles.x]\noperations = [{ op = "explode" }]\n',
        "redaction_profiles.x.operations[0]: unknown operation explode (one of 'drop_audio', "
        "'mute', 'audio_envelope', 'black_box', 'blur_box', 'pixelate', 'blur_faces', "
        "'strip_metadata')",
    ),
    (
        "a de-identification claim the operations do not back",
        '[redaction_profiles.x]\ndeidentifying = true\n'
        'operations = [{ op = "blur_faces" }, { op = "drop_audio" }, { op = "strip_metadata" }]\n',
        "redaction_profiles.x: deidentifying = true needs a profile that removes every "
        "identifying channel; this one does not pixelate the whole frame",
    ),
    (
        "a rect outside the frame",
        '[redaction_profiles.x]\noperations = [{ op = "black_box", rect = [0.5, 0, 0.6, 1] }]\n',
        "redaction_profiles.x.operations[0].black_box: rect [x, y, w, h] must lie inside [0, 1]",
    ),
    (
        "unknown on_expiry",
        purpose_block(on_expiry='"shred"'),
        "purposes.fraud.on_expiry: must be one of 'delete' or 'redact' (got \"shred\")",
    ),
    (
        "bad purpose name",
        purpose_block('"Fraud Team"'),
        'purposes."Fraud Team": not a valid purpose name (must match ^[a-z][a-z0-9_-]{0,31}$)',
    ),
    ("no purposes", "[purposes]\n", "purposes: must not be empty"),
    ("purposes not a table", "purposes = 3\n", "purposes: expected a table (got 3)"),
    (
        "purpose not a table",
        "[purposes]\nfraud = 1\n",
        "purposes.fraud: expected a table (got 1)",
    ),
    (
        "deadline beyond the promise",
        "erasure_deadline_days = 45\n",
        "erasure_deadline_days: must be <= 30, the deadline the privacy notice promises (got 45)",
    ),
    (
        "zero deadline",
        "erasure_deadline_days = 0\n",
        "erasure_deadline_days: must be > 0 (got 0)",
    ),
    (
        "rotation equal to the deadline",
        "erasure_deadline_days = 10\nkek_rotation_days = 10\n",
        "kek_rotation_days: must be < erasure_deadline_days (10) (got 10)",
    ),
    (
        "rotation beyond the default deadline",
        "kek_rotation_days = 31.5\n",
        "kek_rotation_days: must be < erasure_deadline_days (30) (got 31.5)",
    ),
    (
        "deadline below the default rotation",
        "erasure_deadline_days = 5\n",
        "kek_rotation_days: must be < erasure_deadline_days (5) (got 7)",
    ),
    (
        "negative rotation",
        "kek_rotation_days = -1\n",
        "kek_rotation_days: must be > 0 (got -1)",
    ),
    ("bad TOML", "a = 1\nb = \n", "not valid TOML (line 2, column 5): Invalid value"),
    (
        "duplicate key",
        "a = 1\na = 2\n",
        "not valid TOML (line 2, column 6): Cannot overwrite a value",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_file_gives_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


def test_several_problems_are_counted_but_one_is_named(tmp_path: Path) -> None:
    text = purpose_block(approvals="0", colour="1", on_expiry='"shred"')
    assert (
        load_error(tmp_path, text) == "purposes.fraud.approvals: must be >= 1 (got 0) (and 2 more)"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=r"^policy .*nope\.toml: policy file not found$"):
        load_policy(path)


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path)
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'a = "\xe9"\n')
    with pytest.raises(PolicyError, match=r"not valid TOML \(not UTF-8\)$"):
        load_policy(path)


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


# --- round trip ----------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr gives the shortest round-tripping form, which TOML accepts
    if isinstance(value, str):
        escaped = "".join(
            f"\\u{ord(c):04X}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    tables = ("purposes", "vocabulary")
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if k not in tables]
    for name, entry in data.get("vocabulary", {}).items():
        lines.append(f"\n[vocabulary.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    for name, rule in data["purposes"].items():
        lines.append(f"\n[purposes.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


periods = st.floats(min_value=0, max_value=36_500, exclude_min=True) | st.integers(1, 36_500)
_rules = {
    "retention_days": periods,
    "max_access_minutes": st.floats(0, 1e6, exclude_min=True) | st.integers(1, 10_000),
    "approvals": st.integers(1, 5),
    "approver_roles": st.lists(st.sampled_from(ROLES), min_size=1, unique=True),
}
# The packaged profiles: any may be named; only a de-identifying one may redact on expiry.
purposes = st.fixed_dictionaries(
    {**_rules, "on_expiry": st.just("delete")},
    optional={
        "redaction_profile": st.sampled_from(["faces-blurred", "network-diagnostics"]),
        "derivative_retention_days": periods,
    },
) | st.fixed_dictionaries(
    {**_rules, "on_expiry": st.just("redact"), "redaction_profile": st.just("network-diagnostics")},
    optional={"derivative_retention_days": periods},
)
names = st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    deadline = draw(st.floats(min_value=1e-6, max_value=30))
    rotation = draw(st.floats(0, deadline, exclude_min=True, exclude_max=True))
    chosen = draw(st.dictionaries(names, purposes, min_size=1, max_size=4))
    clauses = st.text(st.characters(exclude_categories=("Cs",)), min_size=3, max_size=40)
    # Purposes beyond the notice's are allowed only through the vocabulary, each with a clause.
    vocabulary = {n: {"notice_clause": draw(clauses)} for n in chosen if n not in NOTICE_PURPOSES}
    return {
        "erasure_deadline_days": deadline,
        "kek_rotation_days": rotation,
        "vocabulary": vocabulary,
        "purposes": chosen,
    }


@settings(
    deadline=None, max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=policies())
def test_valid_policies_round_trip_through_toml(tmp_path: Path, data: dict[str, Any]) -> None:
    policy = load_policy(write(tmp_path, to_toml(data)))
    optional = {"redaction_profile": None, "derivative_retention_days": None}
    profiles = load_policy().model_dump()["redaction_profiles"]  # the packaged ones stay
    expected = {"offboarding_days": 60, **data,  # the notice's promise unless the file sets it
                "purposes": {n: {**optional, **r} for n, r in data["purposes"].items()},
                "redaction_profiles": profiles}  # fmt: skip
    assert policy.model_dump() == expected
    assert policy == Policy.model_validate({**data, "redaction_profiles": profiles})
    assert policy.names == sorted(data["purposes"])


# --- the notice's vocabulary ----------------------------------------------------------------------


def test_a_purpose_the_notice_does_not_name_is_refused_naming_it(tmp_path: Path) -> None:
    message = load_error(tmp_path, purpose_block("fraud") + purpose_block("marketing"))
    assert message.startswith("purposes: marketing is not a purpose the privacy notice names")
    assert "[vocabulary.marketing]" in message


def test_the_vocabulary_is_extended_only_with_a_notice_clause(tmp_path: Path) -> None:
    clause = '[vocabulary.marketing]\nnotice_clause = "section 4.2: product analytics"\n'
    policy = load_policy(write(tmp_path, clause + purpose_block("marketing")))
    assert policy.names == ["marketing"]
    assert policy.vocabulary["marketing"].notice_clause.startswith("section 4.2")
    missing = load_error(tmp_path, "[vocabulary.marketing]\n" + purpose_block("marketing"))
    assert missing == "vocabulary.marketing.notice_clause: missing required key"


def test_the_packaged_purposes_are_the_notices(tmp_path: Path) -> None:
    assert set(load_policy().names) == NOTICE_PURPOSES
