"""The spool drain: spooled records to Kafka, in order, thousands in flight at once.

One drain step (:func:`drain_spool`) hands the spool's records to the publisher window by
window (:meth:`redrive.kafka.Publisher.publish_many`: one batch per partition, every batch
in flight), and says for each record whether it is handled. Kafka's answer decides:

- acknowledged: handled;
- refused for a reason that cannot change (:func:`redrive.kafka.publish_error`): the
  record is sent once more in a batch of its own (a real broker refuses a whole batch
  that is too large, not only the record that made it so); refused again, it is appended
  to the quarantine file (fsync'd), counted in
  ``redrive_sidecar_quarantined_records_total{reason}`` and handled: never retried
  forever, never dropped;
- anything else (Kafka gone, timeouts): the drain stops there; that record and the ones
  after it stay spooled, in order, for the next step (the caller backs off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from redrive import quarantine
from redrive.errors import PublishError
from redrive.kafka import Delivery, Publisher
from redrive.quarantine import Quarantined
from sidecar.metrics import SidecarMetrics
from sidecar.spool import Spool, SpooledRecord

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0
"""Longest wait for Kafka to acknowledge one drain window (aiokafka's request timeout):
a window is thousands of records, and giving up early only sends them twice."""

STEP_RECORDS = 50_000
"""Records one drain step handles at most, so the caller's loop comes round regularly."""


def quarantine_dir(spool: Spool) -> Path:
    """Where the sidecar keeps records Kafka refused for good."""
    return spool.directory / "quarantine"


async def drain_spool(spool: Spool, publisher: Publisher, metrics: SidecarMetrics, *,
                      topic: str, timeout: float = DRAIN_TIMEOUT,
                      max_records: int = STEP_RECORDS) -> int:
    """One drain step; returns how many records it handled (published or quarantined).

    Raises the first retriable :class:`PublishError` (the spool keeps that record and
    the rest), or SpoolError / OSError when the spool or the quarantine file fails.
    """
    where = quarantine_dir(spool)

    async def publish(records: Sequence[SpooledRecord]) -> list[BaseException | None]:
        items = [(r.key, r.value, r.headers) for r in records]
        results = await publisher.publish_many(topic, items, timeout)
        refused = [i for i, r in enumerate(results)
                   if isinstance(r, PublishError) and not r.retriable]
        if refused:
            again = await publisher.publish_many(topic, [items[i] for i in refused], timeout,
                                                 alone=True)
            for i, result in zip(refused, again, strict=True):
                results[i] = result
        outcomes: list[BaseException | None] = []
        moved: list[Quarantined] = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, Delivery):
                outcomes.append(None)
            elif result.retriable:
                # Stop here: what follows stays spooled (in order) and is tried again.
                outcomes.append(result)
                break
            else:
                moved.append(Quarantined(
                    topic=topic, key=record.key, value=record.value,
                    headers=tuple(record.headers), reason=result.reason,
                    detail=str(result), at=time.time()))
                outcomes.append(None)
        if moved:
            # Durable before the spool forgets them; an OSError stops the drain (kept).
            await asyncio.to_thread(quarantine.append, where, moved)
            for entry in moved:
                metrics.quarantined.labels(reason=entry.reason).inc()
                log.error("kafka refused a spooled record for good; quarantined", extra={
                    "capture_id": entry.id, "reason": entry.reason, "error": entry.detail,
                    "value_bytes": len(entry.value),
                    "quarantine_file": str(quarantine.path_in(where))})
        return outcomes

    handled = await spool.drain(publish, max_records=max_records)
    metrics.spool_drained.inc(handled)
    return handled
