"""``python -m retry_worker``: read the environment, configure logging, run the worker.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for an invalid configuration
(every problem listed on stderr), 1 for a fatal error at run time.
"""

from __future__ import annotations

import logging
import os
import sys

from redrive import logs, runtime
from redrive.errors import ConfigError
from retry_worker.running import run
from retry_worker.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"retry-worker: {exc.render()}", file=sys.stderr)
        return 2
    logs.configure(settings.log.level, settings.log.format)
    runtime.tune_gc(gen0_threshold=None)  # see tune_gc: memory stays flat
    try:
        runtime.run(run(settings), settings.process.event_loop)
    except OSError as exc:
        # Typically the admin port is taken: say so plainly.
        logging.getLogger("retry_worker").critical("cannot start", extra={"error": str(exc)})
        return 1
    except Exception:
        logging.getLogger("retry_worker").critical("fatal error", exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
