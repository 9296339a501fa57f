"""The worker's lifecycle: resources in an exit stack, root tasks, signals.

:func:`run` opens the admin server, the Kafka producer (for retry and dead-letter
records) and the HTTP session in an :class:`~contextlib.AsyncExitStack`, then runs two
named root tasks: ``consume`` (the engine) and ``signals``. When a root task ends, the
others are cancelled with a short grace period and the first real error is re-raised, so
the pod exits non-zero and restarts (kopf's reactor). SIGTERM or SIGINT asks the engine to
stop fetching, finish in-flight replays (bounded), commit and return: exit code 0. A second
signal skips the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from redrive.admin import AdminServer, build_admin_app
from redrive.kafka import Publisher
from redrive.retrytopics import tier_topic
from retry_worker.consumer import Engine
from retry_worker.metrics import Metrics
from retry_worker.policy import RetryPolicy
from retry_worker.replay import Replayer, new_client
from retry_worker.settings import Settings
from retry_worker.status_service import open_status

log = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 5.0


async def run(settings: Settings, registry: CollectorRegistry | None = None,
              stopping: asyncio.Event | None = None, *, handle_signals: bool = True) -> None:
    """Run the worker until a signal (or ``stopping``) ends it. Raises on a fatal error.

    Embedders and tests pass their own ``stopping`` event and ``handle_signals=False``.
    """
    registry = registry if registry is not None else CollectorRegistry()
    stopping = stopping if stopping is not None else asyncio.Event()
    tiers = tuple(tier_topic(settings.consumer.retry_topic, tier)
                  for tier in RetryPolicy.from_settings(settings.retry).tiers())
    metrics = Metrics(registry, topics=(settings.kafka.topic, *tiers,
                                        settings.consumer.retry_topic))
    with contextlib.ExitStack() as outer:
        watch = outer.enter_context(SignalWatch(stopping)) if handle_signals else None
        await _run(settings, registry, metrics, stopping, watch)
    log.info("retry worker stopped")


async def _run(settings: Settings, registry: CollectorRegistry, metrics: Metrics,
               stopping: asyncio.Event, watch: SignalWatch | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        publisher = Publisher(settings.kafka, client_id=f"redrive-retry-worker-{settings.pod.pod}",
                              max_record_bytes=settings.records.max_record_bytes)
        client = new_client(settings.target, settings.limits.replay_concurrency)
        stack.push_async_callback(client.close)
        replayer = Replayer(client, settings.target.url, sealing=settings.security.seal_keys)
        engine = Engine(settings, publisher, replayer, metrics)
        admin = AdminServer(build_admin_app(registry, engine.readiness),
                            settings.admin.host, settings.admin.port)
        await admin.start()
        stack.push_async_callback(admin.stop)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        log.info("retry worker starting", extra=settings.summary())
        status = await open_status(settings, registry, publisher, engine, stack)
        roots = {"consume": engine.run(stopping), "status": status}
        if watch is not None:
            roots["signals"] = watch.second_signal()
        await run_root_tasks(roots)


class SignalWatch:
    """SIGTERM/SIGINT handling for the whole of :func:`run`, teardown included.

    The first signal sets ``stopping`` (graceful: drain, commit, exit 0); a second one ends
    :meth:`second_signal`, which as a root task cuts the drain short. The handlers stay
    installed until the exit stack is closed and are then replaced by "ignore", so a
    supervisor that signals twice (honcho does) cannot kill a worker that is already
    finishing cleanly.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._again = asyncio.Event()
        self._count = 0

    def _handle(self, signum: int) -> None:
        self._count += 1
        log.info("signal received", extra={"signal": signal.Signals(signum).name,
                                           "count": self._count})
        self._stopping.set()
        if self._count >= 2:
            self._again.set()

    def __enter__(self) -> SignalWatch:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self._handle, sig)
        return self

    def __exit__(self, *_: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    async def second_signal(self) -> None:
        await self._again.wait()


async def run_root_tasks(coros: dict[str, Coroutine[Any, Any, None]]) -> None:
    """Run named tasks until the first ends; cancel the rest; re-raise the first error."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in coros.items()]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        _, late = await asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS)
        for task in late:
            log.warning("root task ignored cancellation", extra={"task": task.get_name()})
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
