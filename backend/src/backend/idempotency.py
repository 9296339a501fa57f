"""Idempotency-Key support as the IETF ``Idempotency-Key`` header draft describes it.

The first response to a key is stored with a fingerprint of the request (method, path
with query, body; JSON bodies compared by content, not spacing or key order). A repeat
with the same fingerprint gets that first response again; a repeat with a different
fingerprint is a client error (422). At most ``max_keys`` keys are kept, least recently
used first out.

:class:`IdempotencyStore` is plain data. :class:`KeyLocks` serialises requests that share
a key, so two concurrent requests cannot both do the work: the second waits and then
gets the first one's response (the draft allows a 409 instead; waiting lets a redriven
request that overlaps a slow original still get the original's answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 10_000
MAX_KEY_LENGTH = 255
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def canonical_body(body: bytes, content_type: str = "") -> bytes:
    """``body`` with JSON re-serialised canonically (sorted keys, no spaces), else as is.

    So a client that re-encodes the same JSON for a retry is not told it reused its key.
    """
    if "json" not in content_type.lower():
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    return json.dumps(data, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def fingerprint(method: str, path_qs: str, body: bytes, content_type: str = "") -> str:
    """A digest identifying the request a key was first used for (hex SHA-256)."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path_qs.encode(), canonical_body(body, content_type)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(raw: str) -> str | None:
    """The key to use from an ``Idempotency-Key`` header value, or ``None`` if invalid.

    The draft makes the value a structured-field string (``"abc"``); plain tokens are
    accepted too, since many clients send them unquoted.
    """
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        return None
    return key


@dataclass(frozen=True)
class StoredResponse:
    """The first response given for a key, and the request it answered."""

    fingerprint: str
    status: int
    body: bytes
    content_type: str


class IdempotencyStore:
    """Responses by key, bounded to ``max_keys`` with least-recently-used eviction."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, key: str) -> StoredResponse | None:
        """The stored response for ``key`` (marking it recently used), or ``None``."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, response: StoredResponse) -> None:
        """Remember ``response`` for ``key``, evicting the least recently used if full."""
        self._entries[key] = response
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class KeyLocks:
    """One :class:`asyncio.Lock` per key in use; a key's lock is dropped when unused."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the lock for ``key`` for the duration of the ``async with`` block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
