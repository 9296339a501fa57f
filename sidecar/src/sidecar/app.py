"""Assembling and running the sidecar: resources in an exit stack, in dependency order.

:func:`serve` opens the admin server, the upstream client, the Kafka publisher and the
spool drain, then the proxy's front door (``sidecar.server``). On SIGTERM or SIGINT it
stops accepting, turns ``/readyz`` unready, lets requests in progress finish (they may
still publish) for up to ``REDRIVE_DRAIN_TIMEOUT_SECONDS``, then closes the resources in
reverse order: a last spool drain while Kafka is reachable, the producer flush after the
last request, the admin server last. More signals while draining change nothing.

A supervised background task that dies (``redrive.runtime.supervise``) stops the process
the same way, with exit code 1, so the pod restarts instead of running half-alive.

Requests go through :meth:`Sidecar.dispatch`: routes the sidecar answers itself
(:meth:`Sidecar.add_route`, matched by path prefix before anything else) and then the
proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from redrive import runtime
from redrive.admin import AdminServer, Readiness, build_admin_app
from redrive.kafka import Publisher
from redrive.status import WELL_KNOWN_PREFIX
from sidecar.capture import Capturer
from sidecar.drain import DRAIN_TIMEOUT, drain_spool
from sidecar.metrics import SidecarMetrics
from sidecar.proxy import Proxy
from sidecar.server import FrontDoor, Handler, Limits, Request, Response
from sidecar.settings import Settings
from sidecar.status import SidecarStatus
from sidecar.upstream import UpstreamClient

if TYPE_CHECKING:
    from sidecar.spool import Spool

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class State:
    """Mutable process state shared by the handler, the drain task and the probes."""

    settings: Settings
    metrics: SidecarMetrics
    spool: Spool | None
    publisher: Publisher | None = None
    proxy: Proxy | None = None
    shutdown_deadline: float | None = None
    status: SidecarStatus | None = None

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


class Sidecar:
    """The process: state, request dispatch, and :meth:`serve`."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None,
                 spool: Spool | None = None, quarantined_bytes: int = 0) -> None:
        """``spool`` must already be opened (see ``Spool.open``); ``quarantined_bytes``
        is what that opening set aside, for the metric."""
        metrics = SidecarMetrics(registry or CollectorRegistry())
        metrics.spool_quarantined_bytes.inc(quarantined_bytes)
        self.state = State(settings=settings, metrics=metrics, spool=spool)
        self._routes: list[tuple[str, Handler]] = []
        self._stopping = asyncio.Event()
        self._fatal: str | None = None
        self._signals = 0

    def add_route(self, prefix: str, handler: Handler) -> None:
        """Answer requests whose target starts with ``prefix`` with ``handler`` instead of
        proxying them (never captured). Checked in the order added."""
        self._routes.append((prefix, handler))

    async def dispatch(self, request: Request) -> Response:
        if self._routes:
            target = request.target
            for prefix, handler in self._routes:
                if target.startswith(prefix):
                    return await handler(request)
        proxy = self.state.proxy
        assert proxy is not None  # the door opens after every resource started
        return await proxy.handle(request)

    def stop(self, reason: str) -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self._stopping.is_set():
            log.info("stopping", extra={"reason": reason})
            self._stopping.set()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.stop(f"signal {name}")
        else:
            log.info("signal received while shutting down; still draining",
                     extra={"signal": name, "count": self._signals})

    def _on_task_death(self, name: str, _error: BaseException | None) -> None:
        if self._fatal is None:
            self._fatal = name
        self.stop(f"background task {name} died")

    async def serve(self, *, handle_signals: bool = True) -> int:
        """Run until a signal (or :meth:`stop`) or a dead background task; returns the exit
        code (0 after a signal and a clean drain, 1 when a background task died).
        Embedders and tests pass ``handle_signals=False`` and call :meth:`stop`."""
        loop = asyncio.get_running_loop()
        signals = SIGNALS if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        remove_death_handler = runtime.on_task_death(self._on_task_death)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._open(stack)
                await self._stopping.wait()
                await self._drain()
        finally:
            remove_death_handler()
            for sig in signals:
                loop.remove_signal_handler(sig)
                # A supervisor that signals again while the loop closes finds us finishing.
                signal.signal(sig, signal.SIG_IGN)
        return 1 if self._fatal is not None else 0

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        state, s = self.state, self.state.settings
        admin = AdminServer(build_admin_app(state.metrics.registry, state.readiness),
                            s.admin.host, s.admin.port)
        await admin.start()
        stack.push_async_callback(admin.stop)

        client = UpstreamClient(s.upstream.url, connect_timeout=s.upstream.connect_timeout,
                                timeout=s.upstream.timeout, idle_timeout=30.0)
        # Captures larger than a Kafka record travel in chunks (redrive.chunks).
        # Capture ids are unique and the topic is never compacted: any partition will do.
        publisher = Publisher(s.kafka, client_id=f"redrive-sidecar-{s.identity.pod}",
                              max_record_bytes=s.records.max_record_bytes,
                              spread_topics={s.kafka.topic})
        await publisher.start()
        stack.push_async_callback(self._close_resources, client, publisher)
        capturer = Capturer(s, publisher, state.metrics, spool=state.spool,
                            spool_active=_spool_backlog(state.spool),
                            kafka_up=lambda: publisher.connected)
        # Read at scrape time: the gauge follows the publisher's probe even while the drain
        # task is busy with a long window.
        state.metrics.kafka_connected.set_function(
            lambda: 1.0 if publisher.connected else 0.0)
        state.status = SidecarStatus(s.status, publisher, source=_source(s),
                                     signing=s.security.signing_keys)
        await state.status.start()
        capturer.on_queued = state.status.queued
        self.add_route(WELL_KNOWN_PREFIX, state.status.forward)
        state.publisher = publisher
        state.proxy = Proxy(s, client, capturer, state.metrics)

        drain = runtime.supervise(
            asyncio.create_task(_drain_loop(state), name="spool-drain"))
        stack.push_async_callback(self._stop_drain, drain)

        listen = s.listen
        rejected = state.metrics.requests.labels(outcome="rejected")
        overloaded = state.metrics.requests.labels(outcome="overloaded")
        self._door = FrontDoor(
            self.dispatch,
            Limits(head_timeout=listen.client_read_timeout,
                   max_header_bytes=listen.max_header_bytes, max_headers=listen.max_headers,
                   max_body_bytes=listen.max_body_bytes,
                   max_buffered_body_bytes=listen.buffered_body_max_bytes,
                   overload_retry_after=max(1, s.capture.retry_after)),
            on_refused=lambda status: (overloaded if status == 503 else rejected).inc(),
            access_log=listen.access_log)
        bodies = self._door.bodies
        state.metrics.buffered_body_bytes.set_function(lambda: float(bodies.used))
        bound = await self._door.start(listen.host, listen.port)
        log.info("proxy listening", extra={
            "listen": f"{listen.host}:{bound[0][1]}", "upstream": s.upstream.url,
            "admin": f"{s.admin.host}:{s.admin.port}"})

    async def _drain(self) -> None:
        state = self.state
        timeout = state.settings.shutdown.drain_timeout_seconds
        state.shutdown_deadline = time.monotonic() + timeout
        log.info("shutting down: draining in-flight requests",
                 extra={"drain_timeout_seconds": timeout})
        await self._door.shutdown(timeout)

    async def _stop_drain(self, task: asyncio.Task[None]) -> None:
        runtime.release(task)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        state = self.state
        if state.spool is not None and state.spool.records and state.publisher is not None \
                and state.publisher.connected:
            try:
                async with asyncio.timeout(_remaining(state, minimum=2.0)):
                    await _drain_once(state)
            except TimeoutError:
                pass
            except Exception as exc:
                log.warning("last spool drain stopped", extra={"error": repr(exc)})
            log.info("spool at shutdown", extra={"records_left": state.spool.records})

    async def _close_resources(self, client: UpstreamClient, publisher: Publisher) -> None:
        state = self.state
        state.proxy = None
        if state.status is not None:
            await state.status.close()
        await client.close()
        # Requests in progress have finished (or were cut at the drain timeout): flush.
        await publisher.stop(timeout=_remaining(state, minimum=2.0))
        if state.spool is not None:
            await state.spool.close()


def _source(s: Settings) -> str:
    """The status record's ``namespace/pod``."""
    return f"{s.identity.namespace}/{s.identity.pod}".strip("/")


def _spool_backlog(spool: Spool | None) -> Callable[[], bool]:
    if spool is None:
        return lambda: False
    return lambda: spool.records > 0


def _remaining(state: State, minimum: float) -> float:
    if state.shutdown_deadline is None:
        return minimum
    return max(minimum, state.shutdown_deadline - time.monotonic())


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
