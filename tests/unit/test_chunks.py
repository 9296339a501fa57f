"""Chunking records to fit the broker's limit, and putting them back together."""

from __future__ import annotations

import os

import pytest
from aiokafka.codec import has_zstd
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from redrive.chunks import (
    CHUNK_HEADER,
    CHUNK_OF_HEADER,
    ChunkSet,
    chunk_info,
    encoded_size,
    split,
    without_chunk_headers,
)
from redrive.kafka import producer_options
from redrive.settings import KafkaSettings

HEADERS = [("redrive-version", b"1"), ("redrive-signature", b"v1;kid=a;sig=" + b"x" * 43)]


def test_a_record_that_fits_is_left_alone() -> None:
    assert split(b"k", b"v" * 100, HEADERS, 16_384) == [(b"k", b"v" * 100, HEADERS)]


@settings(deadline=None, max_examples=50)  # megabytes of hashing on a shared machine
@given(size=st.integers(0, 300_000), limit=st.integers(16_384, 120_000))
def test_every_chunk_fits_and_the_chunks_join_to_the_value(size: int, limit: int) -> None:
    value = os.urandom(size)
    parts = split(b"capture-id", value, HEADERS, limit)
    for key, part, headers in parts:
        assert key == b"capture-id"
        assert encoded_size(key, part, headers) <= limit
        # Our bound is never below aiokafka's own estimate of what the broker counts.
        assert DefaultRecordBatchBuilder.estimate_size_in_bytes(
            key, part, list(headers)) <= encoded_size(key, part, headers)
    if len(parts) == 1:
        return
    chunks = None
    for offset, (_, part, headers) in enumerate(parts):
        info = chunk_info(headers)
        assert info is not None and info.count == len(parts) and info.index == offset
        assert without_chunk_headers(headers) == HEADERS
        chunks = chunks or ChunkSet(info.count, info.digest)
        chunks.add(info.index, part, offset)
    assert chunks is not None and chunks.complete and chunks.join() == value


def test_duplicate_chunks_count_once_and_keep_every_offset() -> None:
    parts = split(b"k", os.urandom(100_000), [], 20_000)
    info = chunk_info(parts[0][2])
    assert info is not None
    chunks = ChunkSet(info.count, info.digest)
    for offset, (_, part, headers) in enumerate(parts + parts[:2]):
        chunk = chunk_info(headers)
        assert chunk is not None
        chunks.add(chunk.index, part, offset)
    assert chunks.complete and chunks.offsets == list(range(len(parts) + 2))
    assert chunks.join() == b"".join(p for _, p, _ in parts)


def test_altered_bytes_fail_the_digest() -> None:
    parts = split(b"k", os.urandom(50_000), [], 20_000)
    info = chunk_info(parts[0][2])
    assert info is not None
    chunks = ChunkSet(info.count, info.digest)
    for i, (_, part, _) in enumerate(parts):
        chunks.add(i, part if i else b"X" + part[1:], i)
    with pytest.raises(ValueError, match="digest"):
        chunks.join()


@pytest.mark.parametrize("headers", [
    [(CHUNK_HEADER, b"1/1"), (CHUNK_OF_HEADER, b"a" * 64)],
    [(CHUNK_HEADER, b"x/2"), (CHUNK_OF_HEADER, b"a" * 64)],
    [(CHUNK_HEADER, b"0/2")],
    [(CHUNK_OF_HEADER, b"a" * 64)],
    [(CHUNK_HEADER, b"0/2"), (CHUNK_OF_HEADER, b"short")],
])
def test_malformed_chunk_headers_are_refused(headers: list[tuple[str, bytes]]) -> None:
    with pytest.raises(ValueError, match="malformed chunk headers"):
        chunk_info(headers)


def test_headers_too_large_for_any_chunk_are_refused() -> None:
    with pytest.raises(ValueError, match="exceed"):
        split(b"k", b"v" * 40_000, [("h", b"x" * 20_000)], 20_000)


def test_producers_compress_with_zstd_and_never_batch_past_the_record_limit() -> None:
    options = producer_options(KafkaSettings(), client_id="c", max_record_bytes=100_000)
    assert options["compression_type"] == "zstd" and has_zstd()
    assert options["max_batch_size"] <= 100_000
