"""TLS handshake path of the Kafka settings against a loopback asyncio TLS server.

The embedded Tansu 0.6 broker does not speak TLS on its listener (its --cert flag exists
but a TLS client gets "early eof"), so no Kafka round trip over TLS is proven here: this
proves the SSLContext that producer_options/consumer_options hand to aiokafka verifies the
server against REDRIVE_KAFKA_SSL_CA_FILE and its host name.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from redrive.kafka import producer_options
from redrive.settings import Env, KafkaSettings
from tests.support.pki import make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return make_pki(tmp_path)


async def _handshake(ca: Path, pki: Path, host: str) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki / "server.crt", pki / "server.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    env = Env({"REDRIVE_KAFKA_SECURITY_PROTOCOL": "SSL", "REDRIVE_KAFKA_SSL_CA_FILE": str(ca),
               "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": f"{host}:{port}"})
    kafka = KafkaSettings.from_env(env)
    env.check()
    context = producer_options(kafka, client_id="t", max_record_bytes=1)["ssl_context"]
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=host), 5)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_handshake_verifies_against_the_ca(pki: Path) -> None:
    await _handshake(pki / "ca.crt", pki, "localhost")


async def test_handshake_refuses_another_ca(pki: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(pki / "other-ca.crt", pki, "localhost")


async def test_handshake_checks_the_host_name(pki: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(pki / "ca.crt", pki, "not-the-server.example")
