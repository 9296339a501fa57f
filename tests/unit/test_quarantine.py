"""Produce-error classification and the quarantine file format."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from aiokafka import errors as kafka_errors

from redrive import quarantine
from redrive.errors import PublishError
from redrive.kafka import PERMANENT_REASONS, publish_error
from redrive.quarantine import Quarantined


@pytest.mark.parametrize(("exc", "reason"), [
    (kafka_errors.MessageSizeTooLargeError(), "too_large"),
    (kafka_errors.RecordTooLargeError(), "too_large"),
    (kafka_errors.RecordListTooLargeError(), "too_large"),
    (kafka_errors.CorruptRecordException(), "invalid"),
    (kafka_errors.InvalidTimestampError(), "invalid"),
    (kafka_errors.TopicAuthorizationFailedError(), "unauthorized"),
    (kafka_errors.ClusterAuthorizationFailedError(), "unauthorized"),
    (kafka_errors.InvalidTopicError(), "rejected"),
    (kafka_errors.PolicyViolationError(), "rejected"),
])
def test_refusals_that_cannot_change_are_permanent(exc: Exception, reason: str) -> None:
    error = publish_error(exc)
    assert (error.retriable, error.reason) == (False, reason)
    assert reason in PERMANENT_REASONS


@pytest.mark.parametrize("exc", [
    kafka_errors.KafkaConnectionError(), kafka_errors.KafkaTimeoutError(),
    kafka_errors.NotEnoughReplicasError(), kafka_errors.NotLeaderForPartitionError(),
    kafka_errors.RequestTimedOutError(), kafka_errors.UnknownError(),
    kafka_errors.NodeNotReadyError(), ConnectionResetError(), TimeoutError(),
])
def test_everything_else_is_retried(exc: Exception) -> None:
    assert publish_error(exc).retriable


def test_a_publish_error_passes_through_unchanged() -> None:
    error = PublishError("x", retriable=False, reason="too_large")
    assert publish_error(error) is error


def entry(i: int, value: bytes = b"v") -> Quarantined:
    return Quarantined(topic="t", key=f"id-{i}".encode(), value=value,
                       headers=(("redrive-version", b"1"), ("bin", b"\xff\x00")),
                       reason="too_large", detail="d", at=1000.0 + i)


def test_entries_round_trip_byte_for_byte_and_stream_in_order(tmp_path: Path) -> None:
    where = tmp_path / "q"
    quarantine.append(where, [entry(0, b"\x00\xffbinary"), entry(1)])
    quarantine.append(where, [entry(2)])
    assert list(quarantine.read(where)) == [entry(0, b"\x00\xffbinary"), entry(1), entry(2)]
    assert stat.S_IMODE(quarantine.path_in(where).stat().st_mode) == 0o600
    assert stat.S_IMODE(where.stat().st_mode) == 0o700


def test_a_torn_line_is_reported_not_fatal_and_remove_keeps_it(tmp_path: Path) -> None:
    quarantine.append(tmp_path, [entry(0), entry(1)])
    with open(quarantine.path_in(tmp_path), "ab") as f:
        f.write(b'{"id": "torn", "at": 1')
    got = list(quarantine.read(tmp_path))
    assert got[:2] == [entry(0), entry(1)] and isinstance(got[2], ValueError)
    assert quarantine.remove(tmp_path, ["id-0"]) == 1
    got = list(quarantine.read(tmp_path))
    assert got[0] == entry(1) and isinstance(got[1], ValueError)


def test_reading_a_directory_without_a_file_yields_nothing(tmp_path: Path) -> None:
    assert list(quarantine.read(tmp_path / "none")) == []
    assert quarantine.remove(tmp_path / "none", ["x"]) == 0
