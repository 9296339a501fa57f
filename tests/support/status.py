"""Helpers for request-status tests: worker processes with a status port, a gated app."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.procs import Process, free_port, python_module
from tests.support.worker import worker_env


@dataclass
class WorkerProc:
    process: Process
    status_port: int
    admin_port: int

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"


def start_worker_process(bootstrap: str, topic: str, target_url: str, *, group: str,
                         **overrides: str) -> WorkerProc:
    """``python -m retry_worker`` with its status port on a free loopback port."""
    status_port = free_port()
    env = worker_env(bootstrap, topic, target_url, REDRIVE_GROUP_ID=group,
                     REDRIVE_STATUS_HOST="127.0.0.1", REDRIVE_STATUS_PORT=str(status_port),
                     REDRIVE_LOG_FORMAT="json", **overrides)
    proc = python_module("retry_worker", env, name="retry-worker")
    w = WorkerProc(proc, status_port, int(env["REDRIVE_ADMIN_PORT"]))
    proc.wait_http(w.status_url + "/healthz", timeout=20)
    return w


def get_json(url: str, headers: Mapping[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, Any, Mapping[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def wait_for_state(url: str, predicate: Callable[[int, Any], bool], timeout: float = 30.0,
                   what: str = "status") -> Any:
    """Poll ``url`` until ``predicate(http_status, body)``; the last body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        try:
            code, body, _ = get_json(url, timeout=2.0)
            last = (code, body)
            if predicate(code, body):
                return body
        except (OSError, ValueError) as exc:
            last = (0, repr(exc))
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached within {timeout}s at {url}; last: {last}")


class GatedApp:
    """A real aiohttp app on loopback that hangs every request while "down" and, once
    "up", answers 400 on paths under ``/refuse`` and 201 elsewhere."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.port = free_port()
        self.seen: list[tuple[str, str, str | None]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append((request.method, request.path,
                          request.headers.get("X-Redrive-Replay")))
        await self.up.wait()
        if request.path.startswith("/refuse"):
            return web.json_response({"error": "bad_request"}, status=400)
        return web.json_response({"created": True}, status=201)

    async def __aenter__(self) -> GatedApp:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.up.set()
        if self._runner is not None:
            await self._runner.cleanup()
