"""The spool's frame format: encoding, decoding, and scanning untrusted bytes."""

from __future__ import annotations

import asyncio
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.spool import (
    HEADER_SIZE,
    CorruptFrame,
    IncompleteFrame,
    Spool,
    SpooledRecord,
    decode_frame,
    encode_frame,
    scan_frames,
)

records = st.builds(
    SpooledRecord,
    key=st.binary(max_size=40),
    value=st.binary(max_size=300),
    headers=st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=20)), max_size=4)
    .map(tuple),
    spooled_at=st.floats(allow_nan=False, allow_infinity=False),
)


def record(i: int = 0) -> SpooledRecord:
    return SpooledRecord(f"id-{i}".encode(), b'{"body": "%d"}' % i,
                         (("redrive-version", b"1"),), 1_700_000_000.0 + i)


def segment(n: int) -> tuple[bytes, list[int]]:
    """n framed records back to back, and the end offset of each."""
    frames = [encode_frame(record(i)) for i in range(n)]
    ends, pos = [], 0
    for f in frames:
        pos += len(f)
        ends.append(pos)
    return b"".join(frames), ends


def test_a_frame_decodes_to_the_record_it_was_encoded_from() -> None:
    frame = encode_frame(record(7))
    assert decode_frame(frame) == (record(7), len(frame))


@given(records)
def test_any_record_survives_an_encode_decode_round_trip(rec: SpooledRecord) -> None:
    frame = encode_frame(rec)
    assert decode_frame(frame) == (rec, len(frame))
    assert scan_frames(frame).records == (rec,)


def test_a_frame_starts_with_the_magic_byte_and_format_version() -> None:
    frame = encode_frame(record())
    assert frame[0] == 0xD5
    assert frame[1] == 1


def test_a_flipped_bit_in_the_body_is_caught_by_the_checksum() -> None:
    frame = bytearray(encode_frame(record()))
    frame[-1] ^= 0x01
    with pytest.raises(CorruptFrame, match="checksum"):
        decode_frame(frame)


def test_a_frame_from_a_future_format_version_is_refused_not_misread() -> None:
    frame = bytearray(encode_frame(record()))
    frame[1] = 2
    with pytest.raises(CorruptFrame, match="version 2"):
        decode_frame(frame)


def test_a_cut_frame_is_reported_as_incomplete_with_the_size_it_needs() -> None:
    frame = encode_frame(record())
    with pytest.raises(IncompleteFrame) as info:
        decode_frame(frame[:-3])
    assert info.value.needed == len(frame)


def test_a_huge_length_field_is_corrupt_rather_than_a_reason_to_read_gigabytes() -> None:
    frame = bytearray(encode_frame(record()))
    frame[4:8] = b"\xff\xff\xff\xff"
    with pytest.raises(CorruptFrame, match="length"):
        decode_frame(frame)


def test_a_checksummed_body_with_inconsistent_fields_is_corrupt() -> None:
    frame = bytearray(encode_frame(record()))
    frame[HEADER_SIZE + 8:HEADER_SIZE + 12] = b"\x00\x00\xff\xff"  # key length past the body
    frame[8:12] = zlib.crc32(bytes(frame[HEADER_SIZE:]), zlib.crc32(bytes(frame[:8]))) \
        .to_bytes(4, "big")
    result = scan_frames(frame)
    assert isinstance(result.error, CorruptFrame)
    assert result.records == ()


def test_a_record_too_large_for_the_format_is_refused_at_encoding() -> None:
    too_many = tuple(("h", b"") for _ in range(70_000))
    with pytest.raises(ValueError, match="header count"):
        encode_frame(SpooledRecord(b"k", b"v", too_many, 0.0))


def test_scanning_a_clean_segment_finds_every_record_and_no_error() -> None:
    data, ends = segment(5)
    result = scan_frames(data)
    assert result.records == tuple(record(i) for i in range(5))
    assert result.ends == tuple(ends)
    assert result.valid_end == len(data)
    assert result.error is None


@given(st.binary(max_size=2000))
def test_scanning_arbitrary_bytes_never_raises(data: bytes) -> None:
    result = scan_frames(data)
    assert 0 <= result.valid_end <= len(data)
    assert (result.error is None) == (result.valid_end == len(data))


@given(st.data())
def test_damaging_any_byte_keeps_every_record_before_it(data: st.DataObject) -> None:
    buf, ends = segment(6)
    at = data.draw(st.integers(0, len(buf) - 1))
    damaged = bytearray(buf)
    damaged[at] ^= data.draw(st.integers(1, 255))
    result = scan_frames(damaged)
    intact = sum(1 for end in ends if end <= at)
    assert result.records[:intact] == tuple(record(i) for i in range(intact))
    assert len(result.records) == intact  # the damaged frame is never passed off as good
    assert result.error is not None


@given(st.data())
def test_truncating_at_any_offset_keeps_exactly_the_complete_records(
        data: st.DataObject) -> None:
    buf, ends = segment(6)
    cut = data.draw(st.integers(0, len(buf)))
    result = scan_frames(buf[:cut])
    complete = [end for end in ends if end <= cut]
    assert result.records == tuple(record(i) for i in range(len(complete)))
    assert result.valid_end == (complete[-1] if complete else 0)
    assert (result.error is None) == (cut in (0, *ends))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_segment_truncated_at_any_offset_recovers_the_prefix_and_quarantines_the_rest(
        data: st.DataObject) -> None:
    buf, ends = segment(6)
    cut = data.draw(st.integers(0, len(buf)))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        seg = directory / "segment-00000000000000000001.log"
        seg.write_bytes(buf[:cut])
        spool = Spool(directory, 1 << 20)
        report = spool.open()
        complete = [end for end in ends if end <= cut]
        boundary = complete[-1] if complete else 0
        assert report.records == len(complete)
        assert report.quarantined_bytes == cut - boundary
        if cut == boundary:
            assert report.quarantined_files == ()
        else:
            (bad,) = report.quarantined_files
            assert Path(bad).read_bytes() == buf[boundary:cut]
            assert Path(bad).name == f"{seg.name}.{boundary}.bad"
        if boundary:
            assert seg.read_bytes() == buf[:boundary]
        else:
            assert not seg.exists()  # nothing valid left: the empty segment is removed
        published: list[SpooledRecord] = []

        async def publish(recs: Sequence[SpooledRecord]) -> list[BaseException | None]:
            published.extend(recs)
            return [None] * len(recs)

        async def drain_and_close() -> None:
            await spool.drain(publish)
            await spool.close()

        asyncio.run(drain_and_close())
        assert published == [record(i) for i in range(len(complete))]
