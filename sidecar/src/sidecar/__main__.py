"""``python -m sidecar``: read the environment, set up logging, open the spool, serve."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import prometheus_client

from redrive import logs, runtime
from redrive.errors import ConfigError
from sidecar.app import Sidecar
from sidecar.settings import Settings

log = logging.getLogger("sidecar")


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
    log.info("sidecar starting", extra={
        "settings": effective_settings(settings),
        "event_loop": runtime.event_loop_name(settings.process.event_loop)})
    sidecar = Sidecar(settings, spool=spool, quarantined_bytes=quarantined)
    runtime.tune_gc()
    try:
        code = runtime.run(sidecar.serve(), settings.process.event_loop)
    except OSError as exc:  # a port taken, an address not on this host
        log.error("sidecar failed", extra={"error": str(exc)})
        code = 1
    log.info("sidecar stopped", extra={"exit_code": code})
    logs.shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
