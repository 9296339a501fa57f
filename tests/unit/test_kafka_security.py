"""Kafka TLS and SASL settings: parsing, validation messages, aiokafka options."""
# ruff: noqa: S105, S106  (test passwords are throwaway literals)

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from redrive.errors import ConfigError
from redrive.kafka import consumer_options, producer_options, ssl_context
from redrive.settings import Env, KafkaSettings
from tests.support.pki import self_signed


def parse(**env: str) -> KafkaSettings:
    e = Env(env)
    settings = KafkaSettings.from_env(e)
    e.check()
    return settings


def problems(**env: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(**env)
    return str(info.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return self_signed(tmp_path_factory.mktemp("pki"), "ca")


def test_default_is_plaintext() -> None:
    s = parse()
    assert s.security_protocol == "PLAINTEXT" and s.sasl_mechanism is None
    opts = producer_options(s, client_id="c", max_record_bytes=1)
    assert opts["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in opts and "sasl_plain_password" not in opts


def test_sasl_ssl_scram_default(pki: Path) -> None:
    s = parse(REDRIVE_KAFKA_SECURITY_PROTOCOL="sasl_ssl", REDRIVE_KAFKA_SASL_USERNAME="u",
              REDRIVE_KAFKA_SASL_PASSWORD="s3cret", REDRIVE_KAFKA_SSL_CA_FILE=str(pki / "ca.crt"))
    assert s.security_protocol == "SASL_SSL" and s.sasl_mechanism == "SCRAM-SHA-512"
    assert "s3cret" not in repr(s)
    for opts in (producer_options(s, client_id="c", max_record_bytes=1),
                 consumer_options(s, client_id="c", group_id="g")):
        assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
        assert opts["sasl_plain_username"] == "u" and opts["sasl_plain_password"] == "s3cret"
        assert isinstance(opts["ssl_context"], ssl.SSLContext)
        assert opts["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(s) is ssl_context(s)  # built once


def test_password_file_strips_newline(tmp_path: Path) -> None:
    f = tmp_path / "password"
    f.write_text("from-file\n")
    s = parse(REDRIVE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", REDRIVE_KAFKA_SASL_USERNAME="u",
              REDRIVE_KAFKA_SASL_PASSWORD_FILE=str(f), REDRIVE_KAFKA_SASL_MECHANISM="plain")
    assert s.sasl_password == "from-file" and s.sasl_mechanism == "PLAIN"
    assert "ssl_context" not in producer_options(s, client_id="c", max_record_bytes=1)


def test_all_problems_reported_and_secret_never_echoed(tmp_path: Path) -> None:
    text = problems(REDRIVE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                    REDRIVE_KAFKA_SASL_MECHANISM="GSSAPI",
                    REDRIVE_KAFKA_SASL_PASSWORD="hunter2-secret",
                    REDRIVE_KAFKA_SSL_CA_FILE=str(tmp_path / "missing.crt"),
                    REDRIVE_KAFKA_SSL_CERT_FILE=str(tmp_path / "missing.crt"))
    assert "REDRIVE_KAFKA_SASL_MECHANISM" in text
    assert "REDRIVE_KAFKA_SASL_USERNAME: is required with SASL_SSL" in text
    assert "does not exist" in text
    assert "REDRIVE_KAFKA_SSL_KEY_FILE: is required too" in text
    assert "hunter2-secret" not in text


def test_sasl_variables_without_sasl_protocol() -> None:
    text = problems(REDRIVE_KAFKA_SASL_USERNAME="u", REDRIVE_KAFKA_SASL_PASSWORD="p")
    assert "REDRIVE_KAFKA_SASL_USERNAME: is set, but REDRIVE_KAFKA_SECURITY_PROTOCOL" in text
    assert "'p'" not in text


def test_bad_pem_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate")
    text = problems(REDRIVE_KAFKA_SECURITY_PROTOCOL="SSL", REDRIVE_KAFKA_SSL_CA_FILE=str(bad))
    assert "cannot build a TLS context" in text


def test_check_hostname_off(pki: Path) -> None:
    s = parse(REDRIVE_KAFKA_SECURITY_PROTOCOL="SSL", REDRIVE_KAFKA_SSL_CA_FILE=str(pki / "ca.crt"),
              REDRIVE_KAFKA_SSL_CHECK_HOSTNAME="false")
    context = ssl_context(s)
    assert context is not None and context.check_hostname is False


def test_key_partitioner_is_stable_spreads_and_handles_no_key() -> None:
    from redrive.kafka import key_partitioner

    parts = [0, 1, 2]
    keys = [f"0192f0c1-{i:04x}".encode() for i in range(300)]
    chosen = [key_partitioner(k, parts, parts) for k in keys]
    assert chosen == [key_partitioner(k, parts, [1]) for k in keys]  # keyed: all partitions
    assert set(chosen) == {0, 1, 2}
    assert min(chosen.count(p) for p in parts) > 50
    assert key_partitioner(None, parts, [2]) == 2
    assert key_partitioner(None, parts, []) in parts
