"""The admin server: ``/metrics``, ``/healthz`` and ``/readyz`` on their own port.

It runs as a separate aiohttp ``AppRunner`` with signal handling off (as kopf's probing
engine does), so scrapes and probes never queue behind proxied traffic and proxied
traffic can never reach them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str


ReadinessCheck = Callable[[], Readiness]


def build_admin_app(registry: CollectorRegistry, readiness: ReadinessCheck) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop is alive, which is what liveness means.
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        state = readiness()
        return web.Response(status=200 if state.ready else 503, text=state.reason + "\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


class AdminServer:
    """Start/stop wrapper around the admin app; ``stop`` is safe to call twice."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._host, self._port = host, port
        self._started = False

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._runner.cleanup()
