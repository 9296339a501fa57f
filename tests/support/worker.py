"""Helpers for retry-worker and CLI tests: record factory, producer, target server, worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from redrive.envelope import KAFKA_HEADERS, Failure, Record, encode, new_id
from retry_worker.running import run
from retry_worker.settings import Settings
from tests.support.procs import free_port


def make_record(**overrides: Any) -> Record:
    """A valid captured POST that never reached the upstream (safe to replay)."""
    rid = overrides.pop("id", None) or new_id()
    base = Record(
        id=rid, timestamp=time.time(), method="POST", uri="/api/users?x=1",
        path="/api/users", query_string="x=1",
        headers={"content-type": "application/json", "host": "localhost:8080",
                 "connection": "keep-alive, x-hop", "x-hop": "drop-me", "x-custom": "kept"},
        body=b'{"name":"ada"}', error=Failure(kind="connect_refused", reached_upstream=False),
        idempotency_key=f"key-{rid}", backend_url="http://127.0.0.1:3000",
    )
    return replace(base, **overrides)


async def produce(bootstrap: str, topic: str, values: list[bytes],
                  keys: list[bytes] | None = None,
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=(keys[i] if keys else str(i).encode()),
                                       headers=list(KAFKA_HEADERS if headers is None else headers))
                   for i, v in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_records(bootstrap: str, topic: str, records: list[Record]) -> None:
    await produce(bootstrap, topic, [encode(r) for r in records],
                  keys=[r.id.encode() for r in records])


@dataclass
class Seen:
    at: float
    method: str
    path_qs: str
    headers: Mapping[str, str]
    body: bytes


Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def ok(_: web.Request, __: int) -> web.StreamResponse:
    return web.Response(status=200, text="ok")


@dataclass
class Target:
    """A real aiohttp server on 127.0.0.1 that records every request it gets."""

    respond: Responder = ok
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def by_replay_id(self) -> dict[str, list[Seen]]:
        out: dict[str, list[Seen]] = {}
        for s in self.seen:
            out.setdefault(s.headers.get("X-Redrive-Replay", ""), []).append(s)
        return out

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(time.monotonic(), request.method, request.path_qs,
                              dict(request.headers), body))
        count = sum(1 for s in self.seen
                    if s.headers.get("X-Redrive-Replay") == request.headers.get("X-Redrive-Replay"))
        return await self.respond(request, count)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # chunked records are large
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met in {timeout}s; target saw "
                                   f"{len(self.seen)} requests")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def target(respond: Responder = ok) -> AsyncIterator[Target]:
    t = Target(respond=respond)
    await t.start()
    try:
        yield t
    finally:
        await t.stop()


def worker_env(bootstrap: str, topic: str, target_url: str, **overrides: str) -> dict[str, str]:
    """Fast settings for tests: short backoff, no jitter, limits off unless overridden."""
    env = {
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDRIVE_TOPIC": topic,
        "REDRIVE_DLQ_TOPIC": f"{topic}.dlq",
        "REDRIVE_RETRY_TOPIC": f"{topic}.retry",
        "REDRIVE_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "REDRIVE_TARGET_URL": target_url,
        "REDRIVE_TARGET_TIMEOUT_SECONDS": "3",
        "REDRIVE_BACKOFF_INITIAL_SECONDS": "0.1",
        "REDRIVE_BACKOFF_MULTIPLIER": "2",
        "REDRIVE_BACKOFF_MAX_SECONDS": "2",
        "REDRIVE_BACKOFF_JITTER": "0",
        "REDRIVE_MAX_ATTEMPTS": "4",
        "REDRIVE_REPLAY_RATE": "0",
        "REDRIVE_REPLAY_CONCURRENCY": "8",
        "REDRIVE_BREAKER_FAILURES": "0",
        "REDRIVE_ADMIN_HOST": "127.0.0.1",
        "REDRIVE_ADMIN_PORT": str(free_port()),
        "REDRIVE_STATUS_PORT": "0",  # off unless a test asks (several workers per test)
        "REDRIVE_DRAIN_TIMEOUT_SECONDS": "5",
        "REDRIVE_SESSION_TIMEOUT_SECONDS": "2",
        "REDRIVE_LOG_LEVEL": "info",
        "POD_NAME": "test-worker",
    }
    env.update(overrides)
    return env


@dataclass
class RunningWorker:
    settings: Settings
    registry: CollectorRegistry
    stopping: asyncio.Event
    task: asyncio.Task[None]

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels or None)
        return value if value is not None else 0.0


@contextlib.asynccontextmanager
async def worker(env: Mapping[str, str]) -> AsyncIterator[RunningWorker]:
    """The worker in this process (no signal handlers); stopped gracefully on exit."""
    settings = Settings.from_env(env)
    registry = CollectorRegistry()
    stopping = asyncio.Event()
    task = asyncio.create_task(run(settings, registry, stopping, handle_signals=False),
                               name="worker-under-test")
    running = RunningWorker(settings, registry, stopping, task)
    try:
        yield running
    finally:
        stopping.set()
        async with asyncio.timeout(30):
            await task


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)
