"""Retention and access policy: per-purpose rules loaded from TOML and validated.

The packaged defaults live in ``vault/default_policy.toml``. An operator file
(``CALLVAULT_POLICY_FILE``) overrides them key by key at the top level only: if it defines
``purposes`` at all, those purposes replace the packaged ones entirely. Merging purpose by purpose
would let a typo in a purpose name silently keep a default purpose alive, and would make it
impossible to drop one.

Every problem in a file is reported as one ``PolicyError`` line naming the file and the dotted
key, e.g. ``policy /etc/p.toml: purposes.fraud.approvals: must be >= 1 (got 0)``.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from vault.errors import (
    PurposeDisabledError,
    UnknownProfileError,
    UnknownPurposeError,
)
from vault.profiles import RedactionProfile

__all__ = [
    "PURPOSE_NAME_PATTERN",
    "ROLES",
    "Policy",
    "PolicyError",
    "PurposePolicy",
    "RedactionProfile",
    "UnknownPurposeError",
    "load_policy",
]


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid (a startup error, not an HTTP one)."""


# Mirrors vault.models.Role; floor 2 may import only vault.errors, and a test keeps them equal.
Role = Literal[
    "admin", "ingest", "engineer", "approver", "security", "privacy", "auditor", "monitor",
    "subprocessor",
]  # fmt: skip
ROLES: tuple[str, ...] = get_args(Role)
PURPOSE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
PurposeName = Annotated[str, StringConstraints(pattern=PURPOSE_NAME_PATTERN)]
ProfileName = Annotated[str, StringConstraints(pattern=PURPOSE_NAME_PATTERN)]

# The purposes the privacy notice names: troubleshooting and network diagnosis, security
# investigations, fraud/spam/abuse detection, and transcription (a sub-processor feature).
NOTICE_PURPOSES = frozenset({"troubleshooting", "security", "fraud", "transcription"})
# The privacy notice promises deletion within 30 days; no policy may loosen that.
PROMISED_ERASURE_DAYS = 30
# How long a de-identified derivative made on expiry keeps the expired purpose, unless the purpose
# sets derivative_retention_days: long enough for trend analysis, short of forever.
DEFAULT_DERIVATIVE_RETENTION_DAYS = 365
# The privacy notice deletes a closed account's data within 60 days.
PROMISED_OFFBOARDING_DAYS = 60
# What a tenant's shorter erasure deadline must still leave beyond the KEK rotation period: the
# erasure job's own period and the retirement that follows rotation.
JOB_SLACK_DAYS = 1
# Upper bound for periods, so that `now + period` can never overflow a datetime.
_MAX_DAYS = 36_500
_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)


def _days(default: Any = ...) -> Any:
    return Field(default, gt=0, le=_MAX_DAYS, allow_inf_nan=False)


class PurposePolicy(BaseModel):
    """Rules for one purpose tag."""

    model_config = _CONFIG

    retention_days: float = _days()  # fractional, so tests can work in seconds
    max_access_minutes: float = Field(gt=0, le=_MAX_DAYS * 24 * 60, allow_inf_nan=False)
    approvals: int = Field(ge=1)
    approver_roles: list[Role] = Field(min_length=1)
    on_expiry: Literal["delete", "redact"]
    # With "redact": the de-identifying profile that makes the derivative kept after expiry.
    redaction_profile: str | None = Field(None, min_length=1)
    derivative_retention_days: float | None = _days(None)

    @field_validator("approver_roles")
    @classmethod
    def _distinct_roles(cls, roles: list[str]) -> list[str]:
        dupes = sorted({r for r in roles if roles.count(r) > 1})
        if dupes:
            raise PydanticCustomError(
                "policy", "role {role} listed twice", {"role": _show(dupes[0])}
            )
        return roles

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @property
    def max_access(self) -> timedelta:
        return timedelta(minutes=self.max_access_minutes)

    @property
    def derivative_retention(self) -> timedelta:
        """How long a de-identified derivative keeps this purpose (see the module constant)."""
        days = self.derivative_retention_days
        return timedelta(days=DEFAULT_DERIVATIVE_RETENTION_DAYS if days is None else days)


class VocabularyEntry(BaseModel):
    """A purpose beyond the notice's four, allowed only with the notice clause that allows it."""

    model_config = _CONFIG

    notice_clause: str = Field(min_length=3, max_length=500)


class Policy(BaseModel):
    """The whole policy: global deadlines and the known purposes."""

    model_config = _CONFIG

    erasure_deadline_days: float = _days(30)
    kek_rotation_days: float = _days(7)
    offboarding_days: float = _days(PROMISED_OFFBOARDING_DAYS)
    # The operator's explicit extensions of the notice's vocabulary, each citing its clause.
    vocabulary: dict[PurposeName, VocabularyEntry] = Field(default_factory=dict)
    redaction_profiles: dict[ProfileName, RedactionProfile] = Field(default_factory=dict)
    purposes: dict[PurposeName, PurposePolicy] = Field(min_length=1)
    # Set only on a tenant's effective policy (:func:`effective`), never from a file.
    tenant_disabled: tuple[str, ...] = Field((), exclude=True)

    @field_validator("purposes")
    @classmethod
    def _named_by_the_notice(
        cls, purposes: dict[str, PurposePolicy], info: ValidationInfo
    ) -> dict[str, PurposePolicy]:
        if "vocabulary" not in info.data:
            return purposes  # the vocabulary itself is wrong: that is the error to report
        allowed = NOTICE_PURPOSES | set(info.data["vocabulary"])
        unknown = sorted(set(purposes) - allowed)
        if unknown:
            raise PydanticCustomError(
                "policy",
                "{name} is not a purpose the privacy notice names ({known}); to use it anyway, "
                'add [vocabulary.{name}] notice_clause = "..." citing the clause that allows it',
                {"name": unknown[0], "known": ", ".join(sorted(NOTICE_PURPOSES))},
            )
        return purposes

    @field_validator("purposes")
    @classmethod
    def _profiles_exist(
        cls, purposes: dict[str, PurposePolicy], info: ValidationInfo
    ) -> dict[str, PurposePolicy]:
        if "redaction_profiles" not in info.data:
            return purposes  # a profile itself is wrong: that is the error to report
        profiles: dict[str, RedactionProfile] = info.data["redaction_profiles"]
        for name, rules in sorted(purposes.items()):
            profile = rules.redaction_profile
            if rules.on_expiry == "redact" and profile is None:
                raise PydanticCustomError(
                    "policy", '{name}: on_expiry = "redact" needs a redaction_profile',
                    {"name": name},
                )  # fmt: skip
            if profile is not None and profile not in profiles:
                raise PydanticCustomError(
                    "policy", "{name}: redaction_profile {shown} is not defined "
                    "(no [redaction_profiles.{profile}])",
                    {"name": name, "shown": _show(profile), "profile": profile},
                )  # fmt: skip
            if rules.on_expiry == "redact" and not profiles[profile].deidentifying:  # type: ignore[index]
                raise PydanticCustomError(
                    "policy", "{name}: on_expiry = \"redact\" keeps the derivative after the "
                    "original is gone, so its profile must be deidentifying; {profile} is not",
                    {"name": name, "profile": _show(profile)},
                )  # fmt: skip
        return purposes

    def profile(self, name: str) -> RedactionProfile:
        try:
            return self.redaction_profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.redaction_profiles)) or "none"
            raise UnknownProfileError(
                f"unknown redaction profile {name!r} (known: {known})"
            ) from None

    @field_validator("erasure_deadline_days")
    @classmethod
    def _within_promise(cls, days: float) -> float:
        if days > PROMISED_ERASURE_DAYS:
            raise PydanticCustomError(
                "policy",
                "must be <= {limit}, the deadline the privacy notice promises (got {got})",
                {"limit": PROMISED_ERASURE_DAYS, "got": _show(days)},
            )
        return days

    @field_validator("offboarding_days")
    @classmethod
    def _within_offboarding_promise(cls, days: float, info: ValidationInfo) -> float:
        if days > PROMISED_OFFBOARDING_DAYS:
            raise PydanticCustomError(
                "policy",
                "must be <= {limit}, the deadline the privacy notice promises after account "
                "closure (got {got})",
                {"limit": PROMISED_OFFBOARDING_DAYS, "got": _show(days)},
            )
        # Offboarding crypto-shreds like an erasure: it cannot finish before a KEK rotation.
        rotation = info.data.get("kek_rotation_days")
        if rotation is not None and days <= rotation:
            raise PydanticCustomError(
                "policy",
                "must be > kek_rotation_days ({rotation}) (got {got})",
                {"rotation": _show(rotation), "got": _show(days)},
            )
        return days

    @field_validator("kek_rotation_days")
    @classmethod
    def _rotates_before_deadline(cls, days: float, info: ValidationInfo) -> float:
        # Crypto-shredding completes only when the wrapping KEK version is retired, so rotation
        # must come strictly sooner than the erasure deadline.
        deadline = info.data.get("erasure_deadline_days")
        if deadline is not None and days >= deadline:
            raise PydanticCustomError(
                "policy",
                "must be < erasure_deadline_days ({deadline}) (got {got})",
                {"deadline": _show(deadline), "got": _show(days)},
            )
        return days

    def purpose(self, name: str) -> PurposePolicy:
        if name in self.tenant_disabled:
            raise PurposeDisabledError(
                f"purpose {name!r} is disabled by the tenant's policy", purpose=name
            )
        try:
            return self.purposes[name]
        except KeyError:
            known = ", ".join(self.names)
            raise UnknownPurposeError(
                f"unknown purpose {name!r} (known: {known})", purpose=name
            ) from None

    @property
    def names(self) -> list[str]:
        return sorted(self.purposes)

    @property
    def erasure_deadline(self) -> timedelta:
        return timedelta(days=self.erasure_deadline_days)

    @property
    def kek_rotation(self) -> timedelta:
        return timedelta(days=self.kek_rotation_days)

    @property
    def offboarding(self) -> timedelta:
        return timedelta(days=self.offboarding_days)


_DEFAULT_RESOURCE = "default_policy.toml"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_POS = re.compile(r"\(at (line \d+, column \d+|end of document)\)")


def load_policy(path: Path | str | None = None) -> Policy:
    """Load the packaged defaults, overlaid with ``path`` when given (see module docstring)."""
    defaults = _read_defaults()
    if path is None:
        return _validate(defaults, "<packaged default_policy.toml>")
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"policy {where}: policy file not found") from None
    except OSError as exc:
        raise PolicyError(f"policy {where}: cannot read ({exc.strerror or exc})") from None
    return _validate({**defaults, **_parse(data, where)}, where)


def _read_defaults() -> dict[str, Any]:
    where = f"<packaged {_DEFAULT_RESOURCE}>"
    return _parse(resources.files("vault").joinpath(_DEFAULT_RESOURCE).read_bytes(), where)


def _parse(data: bytes, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"policy {where}: not valid TOML (not UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's error carries the position only inside its message.
        text = str(exc)
        m = _TOML_POS.search(text)
        reason = _TOML_POS.sub("", text).strip()
        pos = f" ({m.group(1)})" if m else ""
        raise PolicyError(f"policy {where}: not valid TOML{pos}: {reason}") from None


def _validate(raw: dict[str, Any], where: str) -> Policy:
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PolicyError(f"policy {where}: {_describe(errors[0])}{more}") from None


# pydantic error type -> message; "{got}" is the offending value, other fields come from ctx.
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required key",
    "too_short": "must not be empty",
    "float_type": "expected a number{got}",
    "int_type": "expected an integer{got}",
    "string_type": "expected a string{got}",
    "list_type": "expected an array{got}",
    "dict_type": "expected a table{got}",
    "model_type": "expected a table{got}",
    "finite_number": "must be a finite number{got}",
    "greater_than": "must be > {gt}{got}",
    "greater_than_equal": "must be >= {ge}{got}",
    "less_than_equal": "must be <= {le}{got}",
    "literal_error": "must be one of {expected}{got}",
    "union_tag_invalid": "unknown operation {tag} (one of {expected_tags})",
    "union_tag_not_found": "each operation needs an op",
    "tuple_type": "expected an array{got}",
    "too_long": "too many entries",
}


def _describe(err: Any) -> str:
    loc = list(err["loc"])
    dotted = "".join(
        f"[{p}]" if isinstance(p, int) else ("." if i else "") + _toml_key(str(p))
        for i, p in enumerate(loc)
        if p != "[key]"
    )
    if loc and loc[-1] == "[key]":  # only purpose names are validated as keys
        message = f"not a valid purpose name (must match {PURPOSE_NAME_PATTERN})"
    elif err["type"] in _MESSAGES:
        ctx = {k: v if isinstance(v, str) else _show(v) for k, v in (err.get("ctx") or {}).items()}
        message = _MESSAGES[err["type"]].format(**ctx, got=f" (got {_show(err['input'])})")
    else:  # our own PydanticCustomError("policy", ...) and anything unmapped
        message = err["msg"]
    return f"{dotted or '<top level>'}: {message}"


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _show(value: Any) -> str:
    """A value as it would look in TOML, shortened: error messages must stay one line."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = str(int(value))  # strict float fields turn 45 into 45.0; show what was written
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except ValueError:
            text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
