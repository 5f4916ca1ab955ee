import itertools
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pm_server.edge import EdgePolicy, FrameMaskCheck, close_frame, json_http_response


def frame(payload: bytes, *, masked: bool = True, opcode: int = 0x2, fin: bool = True) -> bytes:
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([first, bit | size])
    elif size < 65536:
        head = bytes([first, bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, bit | 127]) + size.to_bytes(8, "big")
    return head + (os.urandom(4) if masked else b"") + payload


def scan(chunks: list[bytes]) -> int:
    """Feed `chunks` in order; the stream offset reported for the first unmasked frame, or -1."""
    check = FrameMaskCheck()
    start = 0
    for chunk in chunks:
        found = check.feed(chunk)
        if found >= 0:
            return start + found
        start += len(chunk)
    return -1


def test_masked_frames_of_every_length_encoding_pass() -> None:
    stream = frame(b"") + frame(b"x" * 125) + frame(b"y" * 126) + frame(b"z" * 70_000)

    assert scan([stream]) == -1


def test_an_unmasked_frame_is_found_where_it_begins() -> None:
    before = frame(b"a" * 300) + frame(b"b")

    assert scan([before + frame(b"ping", masked=False) + frame(b"after")]) == len(before)


def test_a_masked_payload_that_looks_like_an_unmasked_header_is_skipped() -> None:
    trap = bytes([0x82, 0x05]) * 40  # what an unmasked binary frame's header looks like

    assert scan([frame(trap), frame(trap)]) == -1


def test_an_unmasked_control_frame_counts_too() -> None:
    assert scan([frame(b"", masked=False, opcode=0x9)]) == 0


def test_a_header_split_across_reads_reports_the_start_of_the_read() -> None:
    stream = frame(b"x" * 10) + frame(b"y" * 200, masked=False)
    split = len(frame(b"x" * 10)) + 1  # the unmasked header's first byte ends a read

    assert scan([stream[:split], stream[split:]]) == split


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, int, list[int]]:
    sizes = st.one_of(
        st.integers(0, 130), st.integers(65_530, 65_540), st.sampled_from([0, 125, 126, 127])
    )
    frames = draw(st.lists(st.tuples(sizes, st.booleans()), min_size=1, max_size=8))
    stream = b""
    first_unmasked = -1
    for size, masked in frames:
        if not masked and first_unmasked < 0:
            first_unmasked = len(stream)
        stream += frame(bytes(size), masked=masked)
    cuts = draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=12, unique=True))
    return stream, first_unmasked, sorted(cuts)


@given(streams())
def test_any_chunking_finds_the_first_unmasked_frame_as_soon_as_its_mask_bit_arrives(
    case: tuple[bytes, int, list[int]],
) -> None:
    stream, first_unmasked, cuts = case
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    found = scan(chunks)

    if first_unmasked < 0:
        assert found == -1
    else:
        mask_byte = first_unmasked + 1
        chunk_start = max(start for start in bounds if start <= mask_byte)
        assert found == max(first_unmasked, chunk_start)


def test_close_frame_carries_the_code_and_a_reason_of_at_most_123_bytes() -> None:
    assert close_frame(1002, "masked") == b"\x88\x08\x03\xeamasked"
    long = close_frame(1002, "é" * 100)  # 2 bytes each: cut whole characters only
    assert long[1] == 2 + 122
    assert long[4:].decode() == "é" * 61


def test_a_raw_json_response_is_complete_and_closes() -> None:
    raw = json_http_response(429, "Too Many Requests", "TOO_MANY_PENDING", "wait")
    head, _, body = raw.partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"code": "TOO_MANY_PENDING", "message": "wait"}


@pytest.mark.parametrize("bad", [{"header_timeout_secs": 0}, {"max_pending_per_address": -1}])
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="header_timeout_secs"):
        EdgePolicy(**bad)  # type: ignore[arg-type]
