"""Wiring request status into the worker: view, feed, writer, status port, console.

:func:`open_status` is the worker's one entry point (called from ``running.py``): it
starts the status writer (the engine's outcomes become status records), the status port
(API and, with a token, the console) and returns the feed's coroutine, which the worker
runs as a root task beside the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from redrive.admin import AdminServer
from redrive.kafka import Publisher
from redrive.status_writer import StatusWriter
from retry_worker.console import build_console
from retry_worker.consumer import Engine
from retry_worker.settings import Settings
from retry_worker.status_api import build_status_app
from retry_worker.status_hooks import RequestStatus
from retry_worker.status_store import StatusFeed, StatusView

log = logging.getLogger(__name__)

WRITE_RESULTS = ("written", "dropped", "failed")
FEED_RESULTS = ("applied", "superseded", "unreadable", "unverified")


class StatusMetrics:
    def __init__(self, registry: CollectorRegistry, view: StatusView) -> None:
        ns, sub = "redrive", "retry_worker"
        self.tracked = Gauge(
            "status_tracked_requests", "Requests this replica's status view knows.",
            namespace=ns, subsystem=sub, registry=registry)
        self.tracked.set_function(lambda: len(view))
        self.writes = Counter(
            "status_writes", "Status records this worker wrote, by result (dropped: the "
            "queue was full; status is best effort, the records are the truth).",
            ["result"], namespace=ns, subsystem=sub, registry=registry)
        self.reads = Counter(
            "status_records_read", "Status-topic records read into the view, by result.",
            ["result"], namespace=ns, subsystem=sub, registry=registry)
        for result in WRITE_RESULTS:
            self.writes.labels(result)
        for result in FEED_RESULTS:
            self.reads.labels(result)


async def open_status(settings: Settings, registry: CollectorRegistry, publisher: Publisher,
                      engine: Engine, stack: contextlib.AsyncExitStack,
                      ) -> Coroutine[Any, Any, None]:
    """Start status writes and the status port; return the feed to run as a root task.

    The status port is closed (and the writer flushed) by ``stack``."""
    s = settings.status
    view = StatusView(max_tracked=s.max_tracked, max_age=s.max_age_seconds)
    metrics = StatusMetrics(registry, view)
    writer = StatusWriter(publisher, s.topic, signing=settings.security.signing_keys,
                          on_result=lambda r, n: metrics.writes.labels(r).inc(n))
    await writer.start()
    stack.push_async_callback(writer.stop)
    engine.status = RequestStatus(writer)
    if not s.port:
        log.info("status port off (REDRIVE_STATUS_PORT=0); status records are still written")
        return _idle()
    console = None
    if s.console_token:
        console = build_console(view, token=s.console_token, kafka=settings.kafka,
                                signing=settings.security.signing_keys)
    server = AdminServer(build_status_app(view, console), s.host, s.port)
    await server.start()
    stack.push_async_callback(server.stop)
    log.info("status port listening", extra={"port": s.port, "status_topic": s.topic,
                                             "console": console is not None})
    feed = StatusFeed(settings.kafka, s.topic, view,
                      client_id=f"redrive-retry-worker-status-{settings.pod.pod}",
                      signing=settings.security.signing_keys,
                      on_record=lambda r: metrics.reads.labels(r).inc())
    # Never set: the feed runs until its root task is cancelled, so it never ends first
    # and cuts the consumer's graceful drain short.
    return feed.run(asyncio.Event())


async def _idle() -> None:
    await asyncio.Event().wait()
