"""Running the backend: listeners for the main and control ports, refuse mode, shutdown.

:func:`serve` runs until its ``stop`` event is set (``__main__`` sets it on SIGTERM or
SIGINT), then stops accepting, lets in-flight requests finish for a short grace period
and returns. :class:`MainListener` owns the main port's listening socket so that
``refuse`` mode can close it (clients get "connection refused") and reopen it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest

from backend.app import BackendState, apply_fault, build_app, build_control_app
from backend.faults import FaultMode
from backend.settings import Settings

log = logging.getLogger(__name__)

REOPEN_RETRY_SECONDS = 0.5
"""How often to retry reopening the main port if something else holds it meanwhile."""


class JsonAccessLogger(AbstractAccessLogger):
    """One log line per request, with fields rather than a format string."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Log method, path, status and duration (seconds) of one request."""
        self.logger.info("request", extra={
            "method": request.method, "path": request.path, "status": response.status,
            "duration_seconds": round(time, 6), "remote_addr": request.remote})


class MainListener:
    """The main port's listening socket, which ``refuse`` mode closes and reopens.

    Implements ``backend.app.PortSwitch``. Closing stops new connections and closes the
    open ones once their current request is answered; nothing in flight is cut off.
    """

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._site: web.TCPSite | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def is_open(self) -> bool:
        """Whether the main port accepts connections now."""
        return self._site is not None

    async def open(self) -> None:
        """Listen on the main port; raises :class:`OSError` if it cannot bind."""
        if self._site is None:
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            self._site = site

    async def refuse(self, seconds: float | None) -> None:
        """Close the main port now; reopen it after ``seconds``, or at :meth:`reopen`."""
        self._cancel_reopen()
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
            server = self._runner.server
            for connection in server.connections if server is not None else []:
                # Idle keep-alive connections close now, busy ones once their response is
                # sent (this one included), so clients reconnect and are refused. close()
                # wakes an idle connection; shutdown() then waits for any handler and
                # closes the transport (aiohttp's own shutdown does the same two steps).
                connection.close()
                task = asyncio.create_task(connection.shutdown(None),
                                           name="backend-close-connection")
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            log.info("main port closed", extra={"port": self._port,
                                                "reopen_in_seconds": seconds})
        if seconds is not None:
            self._reopen_task = asyncio.create_task(self._reopen_after(seconds),
                                                    name="backend-reopen-main-port")

    async def reopen(self) -> None:
        """Listen on the main port again now; retries in the background if it cannot."""
        self._cancel_reopen()
        if self._site is not None:
            return
        try:
            await self.open()
        except OSError as exc:
            log.warning("main port could not be reopened; retrying",
                        extra={"port": self._port, "error": str(exc)})
            self._reopen_task = asyncio.create_task(self._reopen_after(REOPEN_RETRY_SECONDS),
                                                    name="backend-reopen-main-port")
            return
        log.info("main port reopened", extra={"port": self._port})

    async def close(self) -> None:
        """Stop any pending reopen (at shutdown; the runner closes the socket)."""
        self._cancel_reopen()
        for task in list(self._closing):
            task.cancel()
        self._site = None

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.reopen()

    def _cancel_reopen(self) -> None:
        task, self._reopen_task = self._reopen_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()


def _runner_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"handle_signals": False,
                               "shutdown_timeout": settings.shutdown_timeout_seconds}
    if settings.access_log:
        options.update(access_log_class=JsonAccessLogger,
                       access_log=logging.getLogger("backend.access"))
    else:
        options["access_log"] = None
    return options


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then shut down gracefully.

    Raises :class:`OSError` if a port cannot be bound at start.
    """
    state = BackendState()
    runner = web.AppRunner(build_app(state), **_runner_options(settings))
    control_runner: web.AppRunner | None = None
    main = MainListener(runner, settings.host, settings.port)
    state.port_switch = main
    await runner.setup()
    try:
        if settings.control_port is not None:
            control_runner = web.AppRunner(build_control_app(state),
                                           **_runner_options(settings))
            await control_runner.setup()
            await web.TCPSite(control_runner, settings.host, settings.control_port).start()
        if settings.initial_fault.mode is not FaultMode.REFUSE:
            await main.open()
        await apply_fault(state, settings.initial_fault)
        log.info("backend listening", extra={
            "url": f"http://{settings.host}:{settings.port}",
            "main_port_open": main.is_open,
            "control_url": (None if settings.control_port is None
                            else f"http://{settings.host}:{settings.control_port}"),
            "fault": settings.initial_fault.to_json(),
            "access_log": settings.access_log})
        await stop.wait()
        log.info("backend stopping")
        state.stopping.set()
    finally:
        await main.close()
        if control_runner is not None:
            with contextlib.suppress(Exception):
                await control_runner.cleanup()
        await runner.cleanup()
    log.info("backend stopped")
