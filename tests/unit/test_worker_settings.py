"""Worker settings from REDRIVE_* variables: defaults, parsing, every problem at once."""

from __future__ import annotations

import pytest

from redrive.errors import ConfigError
from retry_worker.settings import Settings


def test_the_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert s.target.url == "http://127.0.0.1:8080"
    assert s.consumer.group_id == "redrive-retry-worker"
    assert s.consumer.retry_topic == "failed-requests.retry"
    assert s.kafka.dlq_topic == "failed-requests.dlq"
    assert (s.retry.max_attempts, s.retry.max_age_seconds) == (8, 86400)
    assert (s.retry.backoff_initial_seconds, s.retry.backoff_multiplier,
            s.retry.backoff_max_seconds) == (2, 4, 3600)
    assert (s.limits.replay_rate, s.limits.replay_concurrency) == (50, 8)
    assert (s.admin.host, s.admin.port) == ("0.0.0.0", 9902)
    assert s.shutdown.drain_timeout_seconds == 20


def test_the_retry_topic_follows_the_capture_topic_unless_set() -> None:
    assert Settings.from_env({"REDRIVE_TOPIC": "caps"}).consumer.retry_topic == "caps.retry"
    s = Settings.from_env({"REDRIVE_TOPIC": "caps", "REDRIVE_RETRY_TOPIC": "later"})
    assert s.consumer.retry_topic == "later"


def test_variables_are_parsed_into_typed_values() -> None:
    s = Settings.from_env({
        "REDRIVE_TARGET_URL": "https://svc.ns:8443/prefix/", "REDRIVE_GROUP_ID": "g",
        "REDRIVE_MAX_ATTEMPTS": "3", "REDRIVE_REPLAY_RATE": "0", "REDRIVE_ADMIN_PORT": "9999",
        "REDRIVE_BACKOFF_JITTER": "0.5", "REDRIVE_DRAIN_TIMEOUT_SECONDS": "7.5",
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": "a:1,b:2"})
    assert s.target.url == "https://svc.ns:8443/prefix"
    assert s.retry.max_attempts == 3 and s.limits.replay_rate == 0
    assert s.admin.port == 9999 and s.retry.backoff_jitter == 0.5
    assert s.shutdown.drain_timeout_seconds == 7.5
    assert s.kafka.bootstrap_servers == ("a:1", "b:2")


def test_every_invalid_variable_is_reported_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({
            "REDRIVE_TARGET_URL": "ftp://x", "REDRIVE_MAX_ATTEMPTS": "0",
            "REDRIVE_REPLAY_RATE": "-1", "REDRIVE_REPLAY_CONCURRENCY": "many",
            "REDRIVE_BACKOFF_MULTIPLIER": "0.5", "REDRIVE_BACKOFF_JITTER": "2",
            "REDRIVE_ADMIN_PORT": "70000", "REDRIVE_RETRY_TOPIC": "bad topic",
            "REDRIVE_DRAIN_TIMEOUT_SECONDS": "-3", "REDRIVE_LOG_LEVEL": "loud"})
    text = str(caught.value)
    for name in ("REDRIVE_TARGET_URL", "REDRIVE_MAX_ATTEMPTS", "REDRIVE_REPLAY_RATE",
                 "REDRIVE_REPLAY_CONCURRENCY", "REDRIVE_BACKOFF_MULTIPLIER",
                 "REDRIVE_BACKOFF_JITTER", "REDRIVE_ADMIN_PORT", "REDRIVE_RETRY_TOPIC",
                 "REDRIVE_DRAIN_TIMEOUT_SECONDS", "REDRIVE_LOG_LEVEL"):
        assert name in text
    assert len(caught.value.problems) == 10


def test_a_retry_topic_equal_to_another_topic_is_refused() -> None:
    with pytest.raises(ConfigError, match="REDRIVE_RETRY_TOPIC"):
        Settings.from_env({"REDRIVE_RETRY_TOPIC": "failed-requests.dlq"})


def test_a_cap_below_the_initial_delay_is_refused() -> None:
    with pytest.raises(ConfigError, match="REDRIVE_BACKOFF_MAX_SECONDS"):
        Settings.from_env({"REDRIVE_BACKOFF_INITIAL_SECONDS": "10",
                           "REDRIVE_BACKOFF_MAX_SECONDS": "5"})


def test_the_startup_summary_never_contains_keys() -> None:
    summary = str(Settings.from_env({}).summary())
    assert "key" not in summary.lower()


def test_a_schedule_with_too_many_retry_tiers_is_refused() -> None:
    with pytest.raises(ConfigError, match="REDRIVE_BACKOFF_MULTIPLIER"):
        Settings.from_env({"REDRIVE_BACKOFF_MULTIPLIER": "1.01", "REDRIVE_MAX_ATTEMPTS": "100"})
    assert Settings.from_env({"REDRIVE_MAX_ATTEMPTS": "100"}).retry.max_attempts == 100
