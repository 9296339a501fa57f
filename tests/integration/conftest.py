"""Fixtures for tests that run the sidecar as a real process."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.support.kafka import Broker, unique_topic
from tests.support.procs import Process, free_port
from tests.support.sidecar import Sidecar, start_sidecar


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[str]:
    """The scriptable upstream app as its own process; yields its base URL."""
    port = free_port()
    proc = Process([sys.executable, "-m", "tests.support.echo_upstream", str(port)],
                   name="echo-upstream")
    proc.wait_http(f"http://127.0.0.1:{port}/count")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="module")
def proxy(broker: Broker, echo_upstream: str) -> Iterator[Sidecar]:
    """One sidecar in front of the echo upstream, shared by a module's tests."""
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("proxy"),
                       upstream=echo_upstream)
    yield sc
    sc.process.stop()
