"""HTTP ``Range`` (RFC 9110 §14) for playback: one range, or the whole body."""

from __future__ import annotations

import re

from vault.errors import RangeNotSatisfiableError

__all__ = ["parse_range", "requested_range"]

# One range-spec: "a-b", "a-" or "-n" (RFC 9110 §14.1.1), digits ASCII only.
_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
# Longer numbers are clamped: no recording comes near 10**18 bytes, and int() of a few thousand
# digits would raise (or burn CPU) on hostile input.
_MAX_DIGITS = 18
_HUGE = 10**18


def _number(digits: str) -> int:
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def requested_range(
    header: str | None, if_range: str | None, *, etag: str, size: int
) -> tuple[int, int] | None:
    """:func:`parse_range`, honoured only while ``If-Range`` (if sent) equals our ``etag``:
    strong comparison (RFC 9110 §13.1.5); an HTTP-date never matches, as we send no
    Last-Modified."""
    if if_range is not None and if_range.strip() != etag:
        return None
    return parse_range(header, size)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The half-open plaintext range ``[start, end)`` a ``Range`` header asks for, or None.

    None means "send the whole body with 200": no header, a unit other than ``bytes`` (RFC 9110
    §14.2: a server MUST ignore units it does not understand), or several ranges (the RFC lets a
    server ignore Range; multipart/byteranges would only help clients players are not). Raises
    ``RangeNotSatisfiableError`` (416) for a malformed ``bytes`` specifier (the RFC lets us
    reject it), a first byte at or past the end, ``last < first`` and a zero suffix. A suffix of a
    zero-length body is served whole. The end of ``a-b`` is clamped to the size.
    """
    if header is None or not header.strip():
        return None
    unit, sep, ranges = header.strip().partition("=")
    if not sep:
        raise _unsatisfiable("malformed Range header", size)
    if unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in ranges.split(",") if s.strip()]
    if not specs:
        raise _unsatisfiable("malformed Range header", size)
    for spec in specs:
        if _SPEC_RE.fullmatch(spec) is None or spec == "-":
            raise _unsatisfiable("malformed Range header", size)
    if len(specs) > 1:
        return None
    first, last = _SPEC_RE.fullmatch(specs[0]).groups()  # type: ignore[union-attr]
    if not first:  # suffix: the final n bytes
        n = _number(last)
        if n == 0:
            raise _unsatisfiable("a suffix range of 0 bytes selects nothing", size)
        if size == 0:
            return None
        return max(size - n, 0), size
    start = _number(first)
    end = size if not last else _number(last) + 1
    if last and end <= start:
        raise _unsatisfiable("the last byte is before the first", size)
    if start >= size:
        raise _unsatisfiable(f"the first byte is past the end ({size} bytes)", size)
    return start, min(end, size)


def _unsatisfiable(detail: str, size: int) -> RangeNotSatisfiableError:
    # The 416 names the representation's length, as RFC 9110 §15.5.17 asks.
    return RangeNotSatisfiableError(detail, headers={"Content-Range": f"bytes */{size}"})
