"""Playback's bytes (GET /v1/recordings/{id}/content): whole bodies, Range parsing and serving,
and reading only the covering segments."""

from __future__ import annotations

import math
import random
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import streaming
from tests.support.sealed import encrypted
from tests.vault.playback.conftest import (
    FIRST,
    SEG,
    Env,
    _consume,
    _problem,
    _segment_offset,
)
from vault import media
from vault.errors import (
    RangeNotSatisfiableError,
)
from vault.models import Recording
from vault.recordings import windows
from vault.recordings.ranges import parse_range


def test_media_helpers(tmp_path: Path) -> None:
    """vault.media: a small WebM clip probes as such; junk is a MediaError with ffmpeg's words."""
    webm = media.make_test_clip(tmp_path / "c.webm", seconds=1, fmt="webm")
    info = media.probe(webm)
    assert info["video_codec"] == "vp8" and info["audio_codec"] == "opus"
    assert (info["width"], info["height"]) == (320, 240)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(media.MediaError, match=r"Invalid data|moov atom"):
        media.probe(junk)
    with pytest.raises(ValueError):
        media.make_test_clip(tmp_path / "x.avi", fmt="avi")


# --- parse_range (pure) ---------------------------------------------------------------------------

SIZES = st.integers(min_value=1, max_value=10**13)
POS = st.integers(min_value=0, max_value=10**13)


@given(size=SIZES, first=POS, last=POS)
def test_parse_first_last(size: int, first: int, last: int) -> None:
    header = f"bytes={first}-{last}"
    if last < first or first >= size:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == (first, min(last + 1, size))


@given(size=SIZES, first=POS)
def test_parse_open_ended(size: int, first: int) -> None:
    if first >= size:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(f"bytes={first}-", size)
    else:
        assert parse_range(f"bytes={first}-", size) == (first, size)


@given(size=SIZES, n=POS)
def test_parse_suffix(size: int, n: int) -> None:
    if n == 0:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(f"bytes=-{n}", size)
    else:
        assert parse_range(f"bytes=-{n}", size) == (max(size - n, 0), size)


@given(size=st.integers(min_value=0, max_value=10**6), header=st.one_of(
    st.none(), st.text(max_size=40),
    st.from_regex(r"\A[Bb]ytes ?= ?[0-9]{0,25}-[0-9]{0,25}(, ?[0-9]{0,3}-[0-9]{0,3}){0,2}\Z"),
))  # fmt: skip
def test_parse_never_escapes(size: int, header: str | None) -> None:
    """Any header at all: the whole body, a range inside it, or a 416; nothing else."""
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if got is not None:
        start, end = got
        assert 0 <= start < end <= size


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("items=0-5", None),  # unknown unit: ignored (RFC 9110 §14.2)
        ("bytes=0-1,5-6", None),  # several ranges: whole body
        ("Bytes=2-3", (2, 4)),
        ("bytes= 2-3 ", (2, 4)),
        ("bytes=0-", (0, 100)),
        ("bytes=99-", (99, 100)),
        ("bytes=-1", (99, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=90-" + "9" * 40, (90, 100)),  # huge last byte: clamped, not int()-ed
    ],
)
def test_parse_examples(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header",
    ["bytes=100-", "bytes=-0", "bytes=5-2", "bytes=abc", "bytes=", "bytes=-", "bytes=0-1,x",
     "bytes", "bytes=1-2-3", "bytes=" + "9" * 5000 + "-"],
)  # fmt: skip
def test_parse_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 100)


# --- the read-ahead windows (in memory, no store) -------------------------------------------------

_PLAIN = random.Random(1).randbytes(5 * SEG + 12_345)
_DEK, _RID = bytes(range(32)), uuid.UUID(int=42)


_OBJECT = encrypted(_PLAIN, dek=_DEK, recording_id=_RID)


@given(data=st.data())
def test_windows_serve_exactly_the_covering_segments(data: st.DataObject) -> None:
    size = len(_PLAIN)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    calls: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return _OBJECT[offset : offset + length]

    reader = windows.WindowReader(read, *windows.ciphertext_span(len(_OBJECT), start, end))
    pieces = streaming.decrypt_range(
        reader, dek=_DEK, recording_id=_RID, ciphertext_size=len(_OBJECT), start=start, end=end
    )
    got = b"".join(pieces)
    reader.close()
    assert got == _PLAIN[start:end]
    segments = math.ceil((end - start) / SEG) + 1
    assert len(calls) <= 1 + segments
    assert sum(n for _, n in calls) <= streaming.HEADER_SIZE + segments * streaming.SEGMENT_SIZE + 1
    assert _only_covering_segments(calls, start)


# --- bytes ----------------------------------------------------------------------------------------


def test_full_body_headers_and_playable(env: Env, tmp_path: Path) -> None:
    gid = env.grant()
    r = env.get(grant=gid)
    assert r.status_code == 200, r.text
    assert r.content == env.clip
    with env.ctx.db.session() as s:
        rec = s.get(Recording, env.rid)
        assert rec is not None
    assert r.headers["content-type"] == "video/mp4"  # as ingested
    assert r.headers["content-length"] == str(len(env.clip))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f'"{rec.ciphertext_sha256}"'
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp
    assert r.headers["cache-control"] == "no-store"
    assert "content-range" not in r.headers
    # What came out is still the video that went in.
    out = tmp_path / "served.mp4"
    out.write_bytes(r.content)
    info = media.probe(out)
    assert info["has_video"] and info["has_audio"] and info["video_codec"] == "h264"
    assert info["duration"] == pytest.approx(4.0, abs=0.1)


def test_random_ranges(env: Env) -> None:
    gid = env.grant()
    size = len(env.clip)
    rng = random.Random(4)
    cases = [(0, 0), (FIRST - 1, FIRST), (FIRST, FIRST + SEG - 1), (size - 1, size - 1)]
    for _ in range(12):
        a = rng.randrange(size)
        cases.append((a, min(size - 1, a + rng.choice([1, 100, SEG, 2 * SEG + 7]))))
    for a, b in cases:
        r = env.get(grant=gid, Range=f"bytes={a}-{b}")
        assert r.status_code == 206, (a, b, r.text)
        assert r.headers["content-range"] == f"bytes {a}-{b}/{size}"
        assert r.headers["content-length"] == str(b - a + 1)
        assert r.content == env.clip[a : b + 1], (a, b)


def test_player_style_ranges(env: Env) -> None:
    """What browsers and players send: ``0-``, ``0-1`` probes, open-ended seeks, suffixes."""
    size = len(env.clip)
    clip = env.clip
    # No ?grant=: the caller's longest-lasting covering grant is used.
    env.grant(minutes=30)
    cases = {
        "bytes=0-": (0, size),  # Chrome's first request
        "bytes=0-1": (0, 2),  # Safari's probe
        f"bytes={size // 2}-": (size // 2, size),  # seek
        "bytes=-65536": (size - 65536, size),  # the tail (a moov atom at the end)
        f"bytes=-{size * 2}": (0, size),  # a suffix longer than the body
        f"bytes={size - 10}-{size + 10**6}": (size - 10, size),  # past the end: clamped
    }
    for header, (start, end) in cases.items():
        r = env.get(Range=header)
        assert r.status_code == 206, (header, r.text)
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}", header
        assert r.content == clip[start:end], header
    # Several ranges, or a unit we do not know: the whole body with 200.
    for header in ("bytes=0-1, 4-5", "frames=0-5"):
        r = env.get(Range=header)
        assert r.status_code == 200 and r.content == clip, header
    # If-Range: honoured only with our current ETag.
    etag = env.get(Range="bytes=0-0").headers["etag"]
    assert env.get(Range="bytes=5-9", **{"If-Range": etag}).content == clip[5:10]
    stale = env.get(Range="bytes=5-9", **{"If-Range": '"something-else"'})
    assert stale.status_code == 200 and stale.content == clip


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes=-0", "bytes=9-3", "bytes=x-y"])
def test_unsatisfiable_range_is_416(env: Env, header: str) -> None:
    gid = env.grant()
    size = len(env.clip)
    r = env.get(grant=gid, Range=header.format(size=size))
    _problem(r, 416, "range-not-satisfiable")
    assert r.headers["content-range"] == f"bytes */{size}"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert env.events("recording.read") == []  # nothing was read
    assert env.store.calls == []


def test_a_range_fetches_only_its_segments(env: Env) -> None:
    """L bytes cost the header plus at most ceil(L / 1,048,560) + 1 segment reads."""
    gid = env.grant()
    size = len(env.clip)
    rng = random.Random(7)
    ranges = [(0, size), (0, 1), (FIRST - 1, FIRST + 1), (FIRST, FIRST + SEG), (size - 1, size),
              (FIRST + SEG - 5, FIRST + 2 * SEG + 5)]  # fmt: skip
    ranges += [(a, rng.randrange(a + 1, size + 1)) for a in rng.sample(range(size), 10)]
    for start, end in ranges:
        env.store.calls.clear()
        r = env.get(grant=gid, Range=f"bytes={start}-{end - 1}")
        assert r.content == env.clip[start:end]
        segments = math.ceil((end - start) / SEG) + 1  # the most L bytes can touch
        # (sorted: the first window may be fetched while the header is still being read)
        calls = sorted(env.store.calls)
        # At most one read for the header (or the header together with the first segments;
        # none once this object version's header is cached), then windows of whole segments;
        # never more reads, nor more bytes, than that bound.
        assert len([c for c in calls if c[0] == 0]) <= 1
        assert all(n >= streaming.HEADER_SIZE for at, n in calls if at == 0)
        assert len(calls) <= 1 + segments, (start, end, calls)
        fetched = sum(n for _, n in calls)
        # (+1: the end-of-stream probe byte asked for with the object's last segment)
        assert fetched <= streaming.HEADER_SIZE + segments * streaming.SEGMENT_SIZE + 1
        # Nothing before the first covering segment is read, apart from the header.
        assert _only_covering_segments(calls, start), (start, end, calls)


def test_a_seek_reads_the_header_once_per_object_version(env: Env) -> None:
    """The stream header (public ciphertext) is cached by object version: a second seek into
    the recording makes one GET, its window; a store without versions reads it every time."""
    gid = env.grant()
    with env.ctx.db.session() as s:
        versioned = s.get(Recording, env.rid).version_id is not None  # SeaweedFS, not disk
    seeks = [(FIRST + SEG + 7, FIRST + SEG + 1000), (FIRST + 2 * SEG + 3, FIRST + 2 * SEG + 90)]
    for n, (start, end) in enumerate(seeks):
        env.store.calls.clear()
        r = env.get(grant=gid, Range=f"bytes={start}-{end - 1}")
        assert r.content == env.clip[start:end]
        header_reads = [c for c in env.store.calls if c[0] == 0]
        assert len(header_reads) == (0 if versioned and n > 0 else 1), env.store.calls
    # A wrong cached header could not open a segment: decryption authenticates each one.
    key = next(iter(env.ctx.stream_headers._items), None)
    if key is not None:
        real = env.ctx.stream_headers._items[key]
        env.ctx.stream_headers._items[key] = real[:-1] + bytes([real[-1] ^ 1])
        with env.client.stream(
            "GET",
            env.url(),
            params={"grant": str(gid)},
            headers={**env.h("eng"), "Range": f"bytes={FIRST + SEG}-"},
        ) as r:
            got, err = _consume(r)
        assert r.status_code != 206 or err is not None
        assert env.clip[FIRST + SEG : FIRST + SEG + 64] not in got


def _only_covering_segments(calls: list[tuple[int, int]], start: int) -> bool:
    """No read touches ciphertext before the segment holding ``start``, bar the header."""
    first = _segment_offset(start)
    return all(
        off >= first
        or (off == 0 and (n <= streaming.HEADER_SIZE or first == streaming.HEADER_SIZE))
        for off, n in calls
    )
