"""Real processes on 127.0.0.1 for integration tests: start, wait until ready, stop by PID."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


_RESERVED: collections.deque[socket.socket] = collections.deque()
_RESERVED_KEEP = 512


def free_port() -> int:
    """A free TCP port on 127.0.0.1, kept from other ``free_port`` callers.

    The port stays bound (SO_REUSEADDR, not listening) by a socket held here, so no other
    test helper or parallel run is handed it, while the service it is meant for binds and
    listens on it as usual (asyncio, aiohttp, nginx and Tansu set SO_REUSEADDR; only a
    listening socket excludes them). Connecting to it before the service listens is
    refused. The oldest of the last 512 reservations is let go as new ones are made.
    """
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    _RESERVED.append(s)
    while len(_RESERVED) > _RESERVED_KEEP:
        _RESERVED.popleft().close()
    return int(s.getsockname()[1])


class ReservedPort:
    """A loopback port held by a bound, non-listening socket: connecting to it is refused,
    and no other process (a parallel test run, say) can take it until :meth:`release`."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])

    def release(self) -> int:
        """Free the port for the process about to listen on it; returns the port."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.port


_HELD: list[ReservedPort] = []


def refused_port() -> int:
    """A port where connections are refused for the rest of the test session."""
    held = ReservedPort()
    _HELD.append(held)
    return held.port


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Process:
    """A child process with its output in a temp file (read it with :meth:`output`)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None,
                 name: str = "proc") -> None:
        self.name = name
        self.args = list(args)
        self._log = tempfile.NamedTemporaryFile(prefix=f"redrive-{name}-", suffix=".log",
                                                delete=False)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("REDRIVE_")}
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.popen = subprocess.Popen(self.args, env=full_env, stdout=self._log,
                                      stderr=subprocess.STDOUT, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_http(self, url: str, timeout: float = 15.0, status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n"
                                   f"{self.output()[-4000:]}")
            try:
                code, body = http_get(url, timeout=0.5)
                if code == status:
                    return
                last = f"{code} {body}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: {url} not {status} after {timeout}s ({last})\n"
                           f"{self.output()[-4000:]}")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``. Returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()
        return self.popen.returncode


def python_module(module: str, env: Mapping[str, str], name: str | None = None) -> Process:
    return Process([sys.executable, "-m", module], env=env, name=name or module)
