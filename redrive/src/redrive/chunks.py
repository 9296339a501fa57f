"""Records that fit the broker: a value too large for one Kafka record travels in chunks.

Kafka refuses a record batch larger than the topic's ``max.message.bytes`` (about 1 MB by
default, Strimzi's too). The publisher measures each record as Kafka will see it (value,
key and headers, plus the worst-case record and batch overhead) and, when that passes
``REDRIVE_MAX_RECORD_BYTES``, splits the value into ordered chunks. Every chunk:

- has the record's **key** (the capture id), so all chunks land on the same partition, in
  order;
- carries the record's own headers (``redrive-version``, ``redrive-signature``, ...: the
  signature covers the whole value) plus two more:

  ``redrive-chunk``      ``<index>/<count>``, index from 0, e.g. ``0/3``, ``1/3``, ``2/3``
  ``redrive-chunk-of``   hex SHA-256 of the whole value: names the set (a record published
                         twice makes two identical sets; a reader keeps one) and verifies
                         the reassembled bytes

- has a value that is the next slice of the record's bytes; concatenated in index order
  they are the record's value, byte for byte.

A reader (the worker, the CLI) holds chunks until a set is complete, checks the digest,
and then treats the result as one record at the offset of the set's first chunk. A value
that fits is published as it is, without these headers, so readers that predate chunking
see every small record unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

CHUNK_HEADER = "redrive-chunk"
CHUNK_OF_HEADER = "redrive-chunk-of"

DEFAULT_MAX_RECORD_BYTES = 1_000_000
"""Kafka's and Strimzi's default ``max.message.bytes`` is 1,048,588; a little below it
leaves room for a broker that counts slightly differently."""
MIN_MAX_RECORD_BYTES = 16 * 1024
"""Below this, chunk headers and overhead would dominate every chunk."""

# Kafka's record batch v2: a 61-byte batch header, then per record at most 21 bytes of
# varints (length 5, attributes 1, timestamp delta 10, offset delta 5), key and value
# lengths (5 each), the header count (5) and, per header, two lengths (5 each).
_BATCH_OVERHEAD = 61
_RECORD_OVERHEAD = 21 + 5 + 5 + 5
_HEADER_OVERHEAD = 5 + 5

Headers = Sequence[tuple[str, bytes]]


def encoded_size(key: bytes | None, value: bytes, headers: Headers) -> int:
    """An upper bound on the bytes Kafka counts for this record alone in a batch."""
    return (_BATCH_OVERHEAD + _RECORD_OVERHEAD + len(key or b"") + len(value)
            + sum(_HEADER_OVERHEAD + len(n.encode()) + len(v) for n, v in headers))


def split(key: bytes, value: bytes, headers: Headers,
          max_record_bytes: int) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """``[(key, value, headers)]`` when the record fits ``max_record_bytes``; else its
    chunks, each of which fits. Raises ValueError when even an empty chunk would not fit
    (a key or headers nearly as large as the limit)."""
    if encoded_size(key, value, headers) <= max_record_bytes:
        return [(key, value, list(headers))]
    digest = hashlib.sha256(value).hexdigest().encode()
    # The longest chunk headers this split can have: index and count of up to 10 digits.
    worst = [*headers, (CHUNK_HEADER, b"9999999999/9999999999"), (CHUNK_OF_HEADER, digest)]
    room = max_record_bytes - encoded_size(key, b"", worst)
    if room <= 0:
        raise ValueError(f"key and headers alone exceed {max_record_bytes} bytes")
    count = -(-len(value) // room)
    view = memoryview(value)
    return [(key, bytes(view[i * room:(i + 1) * room]),
             [*headers, (CHUNK_HEADER, f"{i}/{count}".encode()), (CHUNK_OF_HEADER, digest)])
            for i in range(count)]


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    index: int
    count: int
    digest: str


def chunk_info(headers: Headers) -> ChunkInfo | None:
    """The chunk headers of a record; None for a whole record. Raises ValueError when
    they are present but malformed."""
    part = digest = None
    for name, value in headers:
        if name == CHUNK_HEADER:
            part = value
        elif name == CHUNK_OF_HEADER:
            digest = value
    if part is None and digest is None:
        return None
    try:
        index_text, count_text = (part or b"").decode().split("/")
        index, count = int(index_text), int(count_text)
        digest_text = (digest or b"").decode()
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"malformed chunk headers: {part!r} {digest!r}") from None
    if not (0 <= index < count) or len(digest_text) != 64:
        raise ValueError(f"malformed chunk headers: {part!r} {digest!r}")
    return ChunkInfo(index, count, digest_text)


def without_chunk_headers(headers: Headers) -> list[tuple[str, bytes]]:
    return [(n, v) for n, v in headers if n not in (CHUNK_HEADER, CHUNK_OF_HEADER)]


@dataclass(slots=True)
class ChunkSet:
    """The chunks of one record seen so far (reader side)."""

    count: int
    digest: str
    parts: dict[int, bytes] = field(default_factory=dict)
    offsets: list[int] = field(default_factory=list)
    """Every offset that delivered a chunk of this set, duplicates included."""
    size: int = 0

    def add(self, index: int, value: bytes, offset: int) -> None:
        self.offsets.append(offset)
        if index not in self.parts:
            self.parts[index] = value
            self.size += len(value)

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.count

    def join(self) -> bytes:
        """The record's value. Raises ValueError when the bytes do not match the digest."""
        value = b"".join(self.parts[i] for i in range(self.count))
        if hashlib.sha256(value).hexdigest() != self.digest:
            raise ValueError("reassembled chunks do not match their redrive-chunk-of digest")
        return value
