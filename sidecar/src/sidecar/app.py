"""Assembling the sidecar: resources as aiohttp cleanup contexts, in dependency order.

aiohttp enters the contexts in order and exits them in reverse, cleaning up only what
started: admin server, upstream session, Kafka publisher, spool drain. On SIGTERM,
``run_app`` stops accepting, lets in-flight handlers finish (they may still publish)
for up to the drain timeout, then exits the contexts, so the producer flushes after the
last request and the spool gets a last drain while Kafka is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from redrive.admin import AdminServer, Readiness, build_admin_app
from redrive.kafka import Publisher
from sidecar.capture import Capturer
from sidecar.drain import DRAIN_TIMEOUT, drain_spool
from sidecar.metrics import SidecarMetrics
from sidecar.proxy import Proxy
from sidecar.settings import Settings
from sidecar.upstream import UpstreamClient

if TYPE_CHECKING:
    from sidecar.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class State:
    """Mutable process state shared by the handler, the drain task and the probes."""

    settings: Settings
    metrics: SidecarMetrics
    spool: Spool | None
    publisher: Publisher | None = None
    proxy: Proxy | None = None
    shutdown_deadline: float | None = None
    drain_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def readiness(self) -> Readiness:
        if self.shutdown_deadline is not None:
            return Readiness(False, "draining: shutting down")
        if self.proxy is None:
            return Readiness(False, "starting")
        parts = ["ready"]
        kafka_ok = self.publisher is not None and self.publisher.connected
        parts.append("kafka: connected" if kafka_ok else "kafka: unreachable")
        if self.spool is not None:
            if self.spool.records:
                parts.append(f"spooling: {self.spool.records} record(s) on disk")
            else:
                parts.append("spool: empty")
        elif not kafka_ok:
            parts.append("captures are not durable until Kafka is back (no spool configured)")
        # Ready even while Kafka is down: traffic must keep flowing, and failures are still
        # answered honestly (queued or not).
        return Readiness(True, "; ".join(parts))


STATE = web.AppKey("state", State)


def build_app(settings: Settings, *, registry: CollectorRegistry | None = None,
              spool: Spool | None = None, quarantined_bytes: int = 0) -> web.Application:
    """The proxy application. ``spool`` must already be opened (see ``Spool.open``);
    ``quarantined_bytes`` is what that opening set aside, for the metric."""
    metrics = SidecarMetrics(registry or CollectorRegistry())
    metrics.spool_quarantined_bytes.inc(quarantined_bytes)
    state = State(settings=settings, metrics=metrics, spool=spool)
    app = web.Application(client_max_size=settings.listen.max_body_bytes + 1)
    app[STATE] = state

    async def handler(request: web.Request) -> web.StreamResponse:
        proxy = state.proxy
        assert proxy is not None  # routes only serve after every context started
        return await proxy.handle(request)

    app.router.add_route("*", "/{path:.*}", handler)
    app.cleanup_ctx.append(_admin_ctx)
    app.cleanup_ctx.append(_proxy_ctx)
    app.cleanup_ctx.append(_drain_ctx)
    app.on_shutdown.append(_begin_shutdown)
    return app


async def _begin_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.shutdown_deadline = time.monotonic() + state.settings.shutdown.drain_timeout_seconds
    log.info("shutting down: draining in-flight requests",
             extra={"drain_timeout_seconds": state.settings.shutdown.drain_timeout_seconds})


async def _admin_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    admin = AdminServer(build_admin_app(state.metrics.registry, state.readiness),
                        state.settings.admin.host, state.settings.admin.port)
    await admin.start()
    yield
    await admin.stop()


async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    s = state.settings
    client = UpstreamClient(s.upstream.url, connect_timeout=s.upstream.connect_timeout,
                            timeout=s.upstream.timeout, idle_timeout=30.0)
    # Captures larger than a Kafka record travel in chunks (redrive.chunks).
    publisher = Publisher(s.kafka, client_id=f"redrive-sidecar-{s.identity.pod}",
                          max_record_bytes=s.records.max_record_bytes)
    await publisher.start()
    spool = state.spool
    capturer = Capturer(s, publisher, state.metrics, spool=spool,
                        spool_active=_spool_backlog(spool),
                        kafka_up=lambda: publisher.connected)
    state.publisher = publisher
    # Read at scrape time: the gauge follows the publisher's probe even while the drain
    # task is busy with a long window.
    state.metrics.kafka_connected.set_function(lambda: 1.0 if publisher.connected else 0.0)
    state.proxy = Proxy(s, client, capturer, state.metrics)
    yield
    state.proxy = None
    await client.close()
    # In-flight handlers have finished (or were cut at the drain timeout): flush.
    await publisher.stop(timeout=_remaining(state, minimum=2.0))
    if spool is not None:
        await spool.close()


def _spool_backlog(spool: Spool | None) -> Callable[[], bool]:
    if spool is None:
        return lambda: False
    return lambda: spool.records > 0


def _remaining(state: State, minimum: float) -> float:
    if state.shutdown_deadline is None:
        return minimum
    return max(minimum, state.shutdown_deadline - time.monotonic())


async def _drain_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    task = asyncio.create_task(_drain_loop(state), name="spool-drain")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if state.spool is not None and state.spool.records and state.publisher is not None \
            and state.publisher.connected:
        budget = _remaining(state, minimum=2.0)
        try:
            async with asyncio.timeout(budget):
                await _drain_once(state)
        except TimeoutError:
            pass
        except Exception as exc:
            log.warning("last spool drain stopped", extra={"error": repr(exc)})
        log.info("spool at shutdown", extra={"records_left": state.spool.records})


async def _drain_once(state: State) -> int:
    assert state.spool is not None and state.publisher is not None
    return await drain_spool(state.spool, state.publisher, state.metrics,
                             topic=state.settings.kafka.topic,
                             timeout=max(DRAIN_TIMEOUT, state.settings.capture.publish_timeout))


async def _drain_loop(state: State) -> None:
    """Keep gauges fresh and move spooled records to Kafka whenever it is reachable."""
    metrics, spool, backoff = state.metrics, state.spool, 0.5
    while True:
        publisher = state.publisher
        if spool is not None:
            metrics.spool_records.set(spool.records)
            metrics.spool_bytes.set(spool.bytes)
            oldest = spool.oldest_spooled_at
            metrics.spool_oldest_age.set(max(0.0, time.time() - oldest) if oldest else 0.0)
            if spool.records and publisher is not None and publisher.connected:
                try:
                    if await _drain_once(state):
                        backoff = 0.5
                        continue
                except Exception as exc:
                    log.warning("spool drain paused: kafka did not acknowledge",
                                extra={"error": repr(exc), "retry_in_seconds": backoff})
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
        await asyncio.sleep(0.5)
