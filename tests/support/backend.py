"""The demo backend as a real process, and a tiny urllib client for talking to it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from tests.support.procs import Process, free_port, python_module


@dataclass
class Backend:
    """A running ``python -m backend``; ``control_url`` is set when it has a control port."""

    process: Process
    port: int
    control_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        assert self.control_port is not None, "started without a control port"
        return f"http://127.0.0.1:{self.control_port}"

    def stop(self) -> int | None:
        return self.process.stop()


def start_backend(env: Mapping[str, str] | None = None, *, control_port: bool = False,
                  ready_path: str = "/_faults") -> Backend:
    """Start the backend on free loopback ports and wait until it answers ``ready_path``."""
    port = free_port()
    full_env = {"PORT": str(port), "HOST": "127.0.0.1"}
    ctl = free_port() if control_port else None
    if ctl is not None:
        full_env["BACKEND_CONTROL_PORT"] = str(ctl)
    full_env.update(env or {})
    backend = Backend(python_module("backend", full_env, name="backend"), port, ctl)
    backend.process.wait_http((backend.control_url if ctl else backend.url) + ready_path)
    return backend


@dataclass
class Reply:
    """An HTTP answer: status, headers and raw body."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, url: str, body: object = None, *, data: bytes | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> Reply:
    """One request on a new connection; ``body`` is sent as JSON, ``data`` as is.

    Error statuses are returned, not raised; connection errors raise as urllib raises
    them (``URLError`` when connecting fails, ``ConnectionResetError`` after sending).
    """
    all_headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.headers, exc.read())
