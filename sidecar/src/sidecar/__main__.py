"""``python -m sidecar``: read the environment, set up logging, open the spool, serve."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from typing import Any

import prometheus_client
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_runner import GracefulExit

from redrive import logs, runtime
from redrive.errors import ConfigError
from sidecar.app import STATE, build_app
from sidecar.server import Guard, GuardedRunner
from sidecar.settings import Settings

log = logging.getLogger("sidecar")


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string, which may hold secrets), status, duration."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("request", extra={
            "method": request.method, "path": request.path, "status": response.status,
            "duration_seconds": round(time, 6), "remote_addr": request.remote})


REDACTED = "<redacted>"


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Settings as a dict for the start-up log line, with secrets replaced."""
    out = dataclasses.asdict(settings)
    for section, key in (("security", "signing_key"), ("security", "seal_key"),
                         ("kafka", "sasl_password")):
        if out[section].get(key):
            out[section][key] = REDACTED
    return out


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve the proxy until cancelled; SIGTERM/SIGINT raise GracefulExit (aiohttp's
    signal handling), and cleanup drains in-flight requests for the drain timeout."""
    rejected = app[STATE].metrics.requests.labels(outcome="rejected")
    listen = settings.listen
    runner = GuardedRunner(
        app, guard=Guard(head_timeout=listen.client_read_timeout,
                         on_refused=lambda _status: rejected.inc()),
        handle_signals=True, shutdown_timeout=settings.shutdown.drain_timeout_seconds,
        keepalive_timeout=75.0, access_log_class=AccessLogger,
        access_log=logging.getLogger("sidecar.access") if listen.access_log else None,
        max_line_size=listen.max_header_bytes, max_field_size=listen.max_header_bytes,
        max_headers=listen.max_headers)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen.host, listen.port, backlog=1024)
        await site.start()
        log.info("proxy listening", extra={
            "listen": f"{listen.host}:{listen.port}", "upstream": settings.upstream.url,
            "admin": f"{settings.admin.host}:{settings.admin.port}"})
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()


def run(app: web.Application, settings: Settings) -> None:
    """Run ``serve`` on a fresh loop until a signal, as ``aiohttp.web.run_app`` does."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main_task = loop.create_task(serve(app, settings))
    try:
        loop.run_until_complete(main_task)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main_task.done():
            main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main_task)
        # Connections still open past the drain (a client lingering on keep-alive).
        rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"redrive sidecar: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.logging.level, settings.logging.format)
    # One process per container: the *_created series only add noise to every scrape.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    spool = None
    quarantined = 0
    if settings.spool.directory is not None:
        from sidecar.spool import Spool, SpoolError  # noqa: PLC0415 - only when configured

        spool = Spool(settings.spool.directory, settings.spool.max_bytes)
        try:
            report = spool.open()
        except SpoolError as exc:
            print(f"redrive sidecar: invalid configuration:\n  - REDRIVE_SPOOL_DIR: {exc}",
                  file=sys.stderr)
            raise SystemExit(2) from None
        quarantined = report.quarantined_bytes
        log.info("spool opened", extra={"records": report.records, "bytes": report.bytes,
                                        "quarantined_files": list(report.quarantined_files)})
    log.info("sidecar starting", extra={"settings": effective_settings(settings)})
    app = build_app(settings, spool=spool, quarantined_bytes=quarantined)
    runtime.tune_gc()
    run(app, settings)
    log.info("sidecar stopped")


if __name__ == "__main__":
    main()
