"""Produce errors the local broker cannot produce, injected at the aiokafka boundary.

:class:`FaultyProducer` is the real ``AIOKafkaProducer`` talking to the real broker; only
a batch holding a *poisoned* key (or every batch, while ``refuse_all`` is set) is
answered with the error aiokafka would raise for a real broker's refusal (for example
``MessageSizeTooLargeError`` from a broker with a 1 MB ``message.max.bytes``). A whole
batch fails, as on a real broker. Everything else is delivered for real.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer


class _Spy:
    """A BatchBuilder that remembers the keys appended to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.keys: list[bytes | None] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None,
               headers: Any = None) -> Any:
        meta = self.inner.append(key=key, value=value, timestamp=timestamp, headers=headers)
        if meta is not None:
            self.keys.append(key)
        return meta

    def close(self) -> None:
        self.inner.close()

    def size(self) -> int:
        return int(self.inner.size())

    def record_count(self) -> int:
        return int(self.inner.record_count())


class FaultyProducer(AIOKafkaProducer):  # type: ignore[misc]
    poison: dict[bytes, BaseException] = {}
    """key -> the exception a batch holding it fails with (set per test)."""
    refuse_all: BaseException | None = None
    refused_batches = 0

    def create_batch(self) -> Any:
        return _Spy(super().create_batch())

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        error = type(self).refuse_all
        if error is None:
            error = next((self.poison[k] for k in batch.keys
                          if k is not None and k in self.poison), None)
        if error is not None:
            type(self).refused_batches += 1
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed
        return await super().send_batch(batch.inner, topic, partition=partition)


def faulty(poison: dict[bytes, BaseException] | None = None,
           refuse_all: BaseException | None = None) -> type[FaultyProducer]:
    """A fresh FaultyProducer class with its own fault table (no state between tests)."""
    return type("Faulty", (FaultyProducer,), {
        "poison": dict(poison or {}), "refuse_all": refuse_all, "refused_batches": 0})
