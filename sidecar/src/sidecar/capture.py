"""Making a captured request safe: Kafka first, the on-disk spool second, never a lie.

:class:`Capturer` turns a failed request into a record v1 and *parks* it. The answer it
returns (``queued``) is true only once Kafka acknowledged the record (``acks=all``) or
the spool fsync'd it; everything else is counted as ``lost`` and logged, and the client
is told ``queued: false``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from redrive import envelope, logs, signing
from redrive.envelope import Failure, Record
from redrive.errors import PublishError
from redrive.kafka import Delivery
from sidecar import failures
from sidecar.metrics import SidecarMetrics
from sidecar.settings import Settings

log = logging.getLogger(__name__)


class Publish(Protocol):
    async def publish(self, topic: str, key: bytes, value: bytes,
                      headers: Sequence[tuple[str, bytes]], timeout: float) -> Delivery: ...


class SpoolSink(Protocol):
    async def append(self, key: bytes, value: bytes,
                     headers: Sequence[tuple[str, bytes]]) -> None: ...


@dataclass(slots=True)
class Captured:
    record_id: str
    result: str
    """``published``, ``spooled`` or ``lost``."""

    @property
    def queued(self) -> bool:
        return self.result != "lost"


@dataclass(slots=True)
class RequestInfo:
    """What the proxy knows about a request, enough to build the record."""

    id: str
    method: str
    uri: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes
    remote_addr: str
    idempotency_key: str


class Capturer:
    def __init__(self, settings: Settings, publisher: Publish, metrics: SidecarMetrics,
                 spool: SpoolSink | None = None,
                 spool_active: Callable[[], bool] = lambda: False,
                 kafka_up: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._publisher = publisher
        self._metrics = metrics
        self._spool = spool
        self._spool_active = spool_active
        self._kafka_up = kafka_up
        self._clock = clock
        self._redact = settings.security.redact_headers
        self._signing = settings.security.signing_keys
        self._sealing = settings.security.seal_keys
        self._topic = settings.kafka.topic
        self._timeout = settings.capture.publish_timeout
        self._results = {r: metrics.captures.labels(result=r)
                         for r in ("published", "spooled", "lost")}
        self.on_queued: Callable[[Record], None] = _ignore
        self._source = envelope.Source(settings.identity.pod, settings.identity.namespace)

    def build(self, req: RequestInfo, failure: Failure) -> Record:
        kept, redacted = envelope.redact(req.headers, self._redact)
        path, _ = envelope.split_uri(req.uri)
        sealed: str | None = None
        if self._sealing is not None and redacted:
            secret = {k.lower(): v for k, v in req.headers.items() if k.lower() in redacted}
            sealed = self._sealing.seal(secret, req.id)
        return Record(
            id=req.id,
            timestamp=self._clock(),
            method=req.method,
            uri=req.uri,
            path=path,
            query_string=req.query_string,
            headers=kept,
            body=req.body,
            remote_addr=req.remote_addr,
            backend_url=self._settings.upstream.url,
            error_reason=failures.reason(failure),
            error=failure,
            idempotency_key=req.idempotency_key,
            source=self._source,
            redacted_headers=redacted,
            sealed_headers=sealed,
        )

    async def capture(self, req: RequestInfo, failure: Failure) -> Captured:
        """Park the failed request; say truthfully where it went."""
        record = self.build(req, failure)
        value = envelope.encode(record)
        key = record.id.encode()
        headers = envelope.KAFKA_HEADERS if self._signing is None else \
            signing.with_signature(list(envelope.KAFKA_HEADERS), value, self._signing)
        started = time.perf_counter()
        result = await self._park(key, value, headers)
        self._results[result].inc()
        if result != "lost":
            self.on_queued(record)  # the `queued` status: queued for Kafka, never awaited
        level = logging.WARNING if result == "lost" else logging.INFO
        if log.isEnabledFor(level):
            logs.event(log, level, "request captured", {
                "capture_id": record.id, "kind": failure.kind, "status": failure.status,
                "method": record.method, "path": record.path, "body_bytes": len(record.body),
                "result": result, "duration_seconds": round(time.perf_counter() - started, 6)})
        return Captured(record.id, result)

    async def _park(self, key: bytes, value: bytes,
                    headers: Sequence[tuple[str, bytes]]) -> str:
        # While older records wait in the spool, new ones join them there, so the drain
        # keeps capture order and a slow Kafka is not asked twice per request.
        if self._spool is not None:
            if self._spool_active():
                return await self._to_spool(key, value, headers, "spool has a backlog")
            # Kafka is known to be down (the publisher's probe): waiting the publish
            # timeout would only delay an answer the spool can give in a millisecond.
            if not self._kafka_up():
                return await self._to_spool(key, value, headers, "kafka is unreachable")
        started = time.perf_counter()
        try:
            await self._publisher.publish(self._topic, key, value, headers, self._timeout)
        except PublishError as exc:
            if self._spool is None:
                log.warning("kafka did not take the record and no spool is configured",
                            extra={"capture_id": key.decode(), "error": str(exc)})
                return "lost"
            return await self._to_spool(key, value, headers, str(exc))
        self._metrics.publish_duration.observe(time.perf_counter() - started)
        return "published"

    async def _to_spool(self, key: bytes, value: bytes,
                        headers: Sequence[tuple[str, bytes]], why: str) -> str:
        assert self._spool is not None
        try:
            await self._spool.append(key, value, headers)
        except Exception as exc:
            log.error("record could not be spooled", extra={
                "capture_id": key.decode(), "error": repr(exc), "kafka_error": why})
            return "lost"
        return "spooled"


def _ignore(_record: Record) -> None:
    pass
