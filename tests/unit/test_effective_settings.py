"""The start-up log line shows the effective settings, never a secret."""

from __future__ import annotations

import base64
import json

from sidecar.__main__ import REDACTED, effective_settings
from sidecar.settings import Settings

SIGNING = "k1:" + base64.b64encode(b"s" * 32).decode()
SEAL = "k1:" + base64.b64encode(b"e" * 32).decode()
PASSWORD = "hunter2-kafka-password"  # noqa: S105 - a test value


def test_secrets_are_replaced_and_the_rest_is_kept() -> None:
    settings = Settings.from_env({
        "REDRIVE_SIGNING_KEY": SIGNING, "REDRIVE_SEAL_KEY": SEAL,
        "REDRIVE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "REDRIVE_KAFKA_SASL_USERNAME": "sidecar", "REDRIVE_KAFKA_SASL_PASSWORD": PASSWORD,
    })
    out = effective_settings(settings)
    text = json.dumps(out, default=str)
    for secret in (SIGNING, SEAL, PASSWORD, SIGNING.split(":")[1], SEAL.split(":")[1]):
        assert secret not in text
    assert out["security"]["signing_key"] == REDACTED
    assert out["security"]["seal_key"] == REDACTED
    assert out["kafka"]["sasl_password"] == REDACTED
    assert out["kafka"]["sasl_username"] == "sidecar"


def test_unset_secrets_stay_visibly_unset() -> None:
    out = effective_settings(Settings.from_env({}))
    assert out["security"]["signing_key"] is None
    assert out["kafka"]["sasl_password"] is None
