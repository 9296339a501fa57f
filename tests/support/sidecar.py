"""Start a real ``python -m sidecar`` process and in-process upstreams on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.procs import Process, free_port, python_module, refused_port


@dataclass
class Sidecar:
    process: Process
    port: int
    admin_port: int
    topic: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.process.output().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


def start_sidecar(*, bootstrap: str, topic: str, upstream: str,
                  env: Mapping[str, str] | None = None, wait_kafka: bool = True) -> Sidecar:
    """A sidecar process on two free loopback ports. A port found free can be taken by
    another process before the sidecar binds it (free_port's race): then the sidecar
    exits saying so, and it is started again on other ports."""
    for attempt in range(3):
        try:
            return _start_sidecar(bootstrap, topic, upstream, env, wait_kafka)
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    pass


def _start_sidecar(bootstrap: str, topic: str, upstream: str,
                   env: Mapping[str, str] | None, wait_kafka: bool) -> Sidecar:
    port, admin = free_port(), free_port()
    full = {
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDRIVE_TOPIC": topic,
        "REDRIVE_DLQ_TOPIC": topic + ".dlq",
        "REDRIVE_UPSTREAM_URL": upstream,
        "REDRIVE_LISTEN_HOST": "127.0.0.1",
        "REDRIVE_ADMIN_HOST": "127.0.0.1",
        "REDRIVE_LISTEN_PORT": str(port),
        "REDRIVE_ADMIN_PORT": str(admin),
        "REDRIVE_DRAIN_TIMEOUT_SECONDS": "5",
        # Tests written before the capture policy send failing GETs and expect captures;
        # the policy's own tests (test_capture_policy.py) set the variable themselves.
        "REDRIVE_CAPTURE_METHODS": "GET,HEAD,OPTIONS,POST,PUT,PATCH,DELETE",
        "POD_NAME": "sidecar-test-0",
        "POD_NAMESPACE": "tests",
    }
    full.update(env or {})
    proc = python_module("sidecar", full, name="sidecar")
    sc = Sidecar(proc, port, admin, topic)
    try:
        proc.wait_http(sc.admin + "/readyz", timeout=20)
    except RuntimeError as exc:  # it exited
        if "address already in use" in proc.output().lower():
            raise PortTaken(str(exc)) from exc
        raise
    if wait_kafka:
        wait_for_log(sc, "kafka producer connected", timeout=20)
    return sc


def wait_for_log(sc: Sidecar, message: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in sc.logs():
            if entry.get("message") == message:
                return entry
        time.sleep(0.05)
    raise TimeoutError(f"no log line {message!r} within {timeout}s:\n"
                       f"{sc.process.output()[-3000:]}")


def unused_port_url() -> str:
    """An http URL on a loopback port where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{refused_port()}"


class RawServer:
    """A TCP server with scripted misbehaviour, for failure kinds aiohttp cannot produce."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.connections = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.mode == "garbage":
                writer.write(b"THIS IS NOT HTTP\r\n\r\n")
                await writer.drain()
            # "reset": close without a byte of answer.
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket that never accepts, with its backlog filled: new connects hang,
    which is how a connect timeout looks on loopback."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(lsock.getsockname())
        fillers.append(s)
    return lsock, fillers
