"""``python -m backend``: read the environment, set up JSON logging, serve until SIGTERM.

Exit codes: 0 after SIGTERM or SIGINT, 2 for an invalid environment (one message on
stderr naming every bad variable), 1 if a port cannot be bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from backend.server import serve
from backend.settings import Settings, SettingsError

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.created % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update((k, v) for k, v in record.__dict__.items()
                   if k not in _STANDARD_ATTRS and not k.startswith("_"))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging() -> None:
    """One JSON-lines handler on stdout for every logger, at INFO."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


async def _run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main() -> int:
    """Run the backend; returns the process exit code."""
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"backend: {exc}", file=sys.stderr)
        return 2
    configure_logging()
    try:
        asyncio.run(_run(settings))
    except OSError as exc:
        logging.getLogger("backend").error("cannot listen", extra={"error": str(exc)})
        print(f"backend: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
