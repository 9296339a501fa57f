"""``python -m injector``: read the environment, load the template, serve the webhook."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import prometheus_client
from aiohttp import web

from injector.app import Tls, build_app
from injector.metrics import InjectorMetrics
from injector.settings import Settings
from injector.template import Template, TemplateError
from redrive import logs
from redrive.admin import AdminServer, Readiness, build_admin_app
from redrive.errors import ConfigError

log = logging.getLogger("injector")


async def serve(settings: Settings, template: Template) -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics = InjectorMetrics(registry)
    tls = Tls(settings, metrics)
    admin = AdminServer(
        build_admin_app(registry, lambda: Readiness(tls.ready, "ready" if tls.ready
                                                    else "waiting for a certificate")),
        settings.admin.host, settings.admin.port)
    await admin.start()
    runner = web.AppRunner(build_app(settings, template, metrics), handle_signals=False,
                           access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    renewals: asyncio.Task[None] | None = None
    try:
        await tls.start()
        await runner.setup()
        site = web.TCPSite(runner, settings.webhook.host, settings.webhook.port,
                           ssl_context=tls.context)
        await site.start()
        renewals = asyncio.create_task(tls.run(), name="certificate-renewals")
        log.info("webhook listening", extra={
            "listen": f"{settings.webhook.host}:{settings.webhook.port}",
            "admin": f"{settings.admin.host}:{settings.admin.port}",
            "native_sidecar": template.native})
        stopped = asyncio.create_task(stop.wait(), name="signal-waiter")
        await asyncio.wait({stopped, renewals}, return_when=asyncio.FIRST_COMPLETED)
        if renewals.done():
            renewals.result()  # a renewal loop never ends on its own: re-raise its error
        stopped.cancel()
    finally:
        for task in (renewals,):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await runner.cleanup()
        await admin.stop()


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"redrive injector: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        template = Template.load(settings.injection.template_file)
    except TemplateError as exc:
        print(f"redrive injector: invalid configuration:\n  - REDRIVE_INJECTOR_TEMPLATE_FILE: "
              f"{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.injection.native_sidecar != "auto":
        template = template.with_native(settings.injection.native_sidecar == "true")
    logs.configure(settings.logging.level, settings.logging.format)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    log.info("starting", extra={"template": str(settings.injection.template_file or "default"),
                                "namespace": settings.identity.namespace})
    asyncio.run(serve(settings, template))


if __name__ == "__main__":
    main()
