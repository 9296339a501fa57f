"""Shared fixtures: one real broker per test session, each test its own topic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kafka import Broker, start_broker, unique_topic


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A real Kafka-protocol broker (Tansu, memory storage) on a free loopback port."""
    b = start_broker()
    yield b
    b.process.stop()


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses (the broker auto-creates it on first produce)."""
    return unique_topic()
