"""Settings: defaults match the contract; one bad start names every invalid variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from redrive.errors import ConfigError
from retry_worker.settings import Settings as WorkerSettings
from sidecar.settings import Settings


def test_defaults_match_the_public_contract() -> None:
    s = Settings.from_env({})
    assert s.kafka.bootstrap_servers == ("localhost:9092",)
    assert s.kafka.topic == "failed-requests"
    assert s.kafka.dlq_topic == "failed-requests.dlq"
    assert s.listen.port == 8080 and s.admin.port == 9901
    assert s.upstream.url == "http://127.0.0.1:3000"
    assert s.upstream.capture_statuses == {502, 503, 504}
    assert s.capture.failure_response == "reject"
    assert s.spool.directory is None and s.spool.max_bytes == 1073741824
    assert s.capture.publish_timeout == 5
    assert s.listen.max_body_bytes == 1048576
    assert s.listen.client_read_timeout == 30
    assert s.upstream.connect_timeout == 2 and s.upstream.timeout == 30
    assert s.logging.level == "info" and s.logging.format == "json"
    assert s.security.redact_headers == {"authorization", "proxy-authorization", "cookie",
                                         "x-api-key"}


def test_variables_are_parsed_into_typed_values() -> None:
    s = Settings.from_env({
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": "a:1, b:2",
        "REDRIVE_CAPTURE_STATUSES": "500,502",
        "REDRIVE_FAILURE_RESPONSE": "ACCEPT",
        "REDRIVE_SPOOL_DIR": "/var/spool/redrive",
        "REDRIVE_UPSTREAM_URL": "http://app:3000/prefix/",
        "REDRIVE_REDACT_HEADERS": "X-Secret, Authorization",
        "POD_NAME": "web-0", "POD_NAMESPACE": "shop",
    })
    assert s.kafka.bootstrap_servers == ("a:1", "b:2")
    assert s.upstream.capture_statuses == {500, 502}
    assert s.capture.failure_response == "accept"
    assert s.spool.directory == Path("/var/spool/redrive")
    assert s.upstream.url == "http://app:3000/prefix"
    assert s.security.redact_headers == {"x-secret", "authorization"}
    assert (s.identity.pod, s.identity.namespace) == ("web-0", "shop")


def test_every_invalid_variable_is_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({
            "REDRIVE_LISTEN_PORT": "eighty",
            "REDRIVE_ADMIN_PORT": "70000",
            "REDRIVE_UPSTREAM_URL": "ftp://x",
            "REDRIVE_CAPTURE_STATUSES": "503,abc",
            "REDRIVE_FAILURE_RESPONSE": "maybe",
            "REDRIVE_PUBLISH_TIMEOUT_SECONDS": "-1",
            "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": "nohost",
            "REDRIVE_LOG_LEVEL": "loud",
            "REDRIVE_TOPIC": "bad topic!",
        })
    problems = info.value.problems
    names = [p.split("=")[0].split(":")[0] for p in problems]
    assert sorted(names) == sorted([
        "REDRIVE_LISTEN_PORT", "REDRIVE_ADMIN_PORT", "REDRIVE_UPSTREAM_URL",
        "REDRIVE_CAPTURE_STATUSES", "REDRIVE_FAILURE_RESPONSE",
        "REDRIVE_PUBLISH_TIMEOUT_SECONDS", "REDRIVE_KAFKA_BOOTSTRAP_SERVERS",
        "REDRIVE_LOG_LEVEL", "REDRIVE_TOPIC"])
    assert "must be one of reject, accept" in str(info.value)


def test_the_admin_port_may_not_share_the_proxy_port() -> None:
    with pytest.raises(ConfigError, match="REDRIVE_ADMIN_PORT: must differ"):
        Settings.from_env({"REDRIVE_LISTEN_PORT": "9000", "REDRIVE_ADMIN_PORT": "9000"})


def test_the_dlq_topic_must_differ_from_the_topic() -> None:
    with pytest.raises(ConfigError, match="REDRIVE_DLQ_TOPIC"):
        Settings.from_env({"REDRIVE_TOPIC": "x", "REDRIVE_DLQ_TOPIC": "x"})


BOTH = pytest.mark.parametrize("settings_class", [Settings, WorkerSettings],
                               ids=["sidecar", "worker"])


@BOTH
def test_a_malformed_signing_key_stops_the_start_without_echoing_it(
        settings_class: type[Settings] | type[WorkerSettings]) -> None:
    with pytest.raises(ConfigError, match="REDRIVE_SIGNING_KEY") as info:
        settings_class.from_env({"REDRIVE_SIGNING_KEY": "k", "REDRIVE_SEAL_KEY": "short"})
    assert "'k'" not in str(info.value) and "short" not in str(info.value)
    assert "REDRIVE_SEAL_KEY" in str(info.value)


@BOTH
def test_valid_signing_and_seal_keys_are_accepted(
        settings_class: type[Settings] | type[WorkerSettings]) -> None:
    import base64
    key = base64.b64encode(bytes(range(32))).decode()
    settings = settings_class.from_env({"REDRIVE_SIGNING_KEY": f"v1:{key}",
                                        "REDRIVE_SEAL_KEY": key})
    assert settings.security.signing_keys is not None
    assert settings.security.signing_keys.signing_kid == "v1"
    assert settings.security.seal_keys is not None


def test_empty_values_mean_the_default() -> None:
    assert Settings.from_env({"REDRIVE_TOPIC": "  "}).kafka.topic == "failed-requests"
