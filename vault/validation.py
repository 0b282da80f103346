"""Input rules for every value a client sends, written once (floor 1: imports nothing of vault).

- **Text**: no NUL, no other control character (C0, DEL, C1) and no lone surrogate; tabs and
  newlines only in multi-line staff text (reasons, comments). PostgreSQL refuses NUL in text, and
  control characters have no place in ids, names, tickets or filters.
- **Datetimes**: timezone-aware, and between 1970 and 9000 once converted to UTC, so that
  converting them, or adding any policy period to them, never overflows.
- **Integers**: within a signed 64-bit column.
- **Numbers**: a boolean is never a number (``true`` is not one minute).

Used as ``Annotated`` types in the API shapes and query parameters: a violation is a 422
``invalid-input`` problem naming the field, before any service runs.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = [
    "BIGINT_MAX", "Count", "MultilineText", "Number", "Text", "Timestamp", "check_datetime",
    "check_text",
]  # fmt: skip

BIGINT_MAX = 2**63 - 1
_EARLIEST, _LATEST = 1970, 9000


def check_text(value: str, *, multiline: bool = False) -> str:
    allowed = "\n\t\r" if multiline else ""
    for ch in value:
        if ch in allowed:
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError("must not contain control characters")
    return value


def _multiline(value: str) -> str:
    return check_text(value, multiline=True)


def check_datetime(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone (e.g. Z)")
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"must lie between {_EARLIEST} and {_LATEST}") from None
    if not _EARLIEST <= utc.year <= _LATEST:
        raise ValueError(f"must lie between {_EARLIEST} and {_LATEST}")
    return utc


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Text = Annotated[str, AfterValidator(check_text)]
MultilineText = Annotated[str, AfterValidator(_multiline)]
Timestamp = Annotated[datetime, AfterValidator(check_datetime)]
Number = Annotated[float, BeforeValidator(_not_bool)]
Count = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=BIGINT_MAX)]
