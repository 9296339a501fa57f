"""``python -m sidecar``: read the environment, set up logging, open the spool, serve."""

from __future__ import annotations

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

from redrive import logs
from redrive.errors import ConfigError
from sidecar.app import build_app
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
    web.run_app(
        app, host=settings.listen.host, port=settings.listen.port,
        shutdown_timeout=settings.shutdown.drain_timeout,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("sidecar.access") if settings.listen.access_log else None,
        print=lambda _: log.info("proxy listening", extra={
            "listen": f"{settings.listen.host}:{settings.listen.port}",
            "upstream": settings.upstream.url,
            "admin": f"{settings.admin.host}:{settings.admin.port}"}),
        backlog=1024,
    )
    log.info("sidecar stopped")


if __name__ == "__main__":
    main()
