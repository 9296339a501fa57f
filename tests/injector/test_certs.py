"""Self-issued certificates and the caBundle merge (pure; no network)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509

from injector import certs, naming

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def cas(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def test_the_serving_certificate_is_for_the_service_and_signed_by_the_ca(tmp_path: Path) -> None:
    issued = certs.issue(["redrive-injector.redrive.svc", "localhost"], 30, NOW)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["redrive-injector.redrive.svc",
                                                       "localhost"]
    ca = x509.load_pem_x509_certificate(issued.ca_pem)
    cert.verify_directly_issued_by(ca)
    assert issued.not_after == NOW + dt.timedelta(days=30)
    assert certs.renew_at(issued, 30) == NOW + dt.timedelta(days=20)
    (tmp_path / "c.pem").write_bytes(issued.cert_pem)
    (tmp_path / "k.pem").write_bytes(issued.key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "c.pem", tmp_path / "k.pem")


def test_the_bundle_keeps_other_replicas_cas_and_drops_expired_ones() -> None:
    old = certs.issue(["a"], 1, NOW - dt.timedelta(days=2))   # expired
    other = certs.issue(["a"], 30, NOW - dt.timedelta(days=1))  # another replica's
    mine = certs.issue(["a"], 30, NOW)
    bundle = certs.ca_bundle(old.ca_pem + other.ca_pem, mine.ca_pem, NOW)
    assert cas(bundle) == cas(other.ca_pem) + cas(mine.ca_pem)
    # Publishing the same CA twice does not repeat it; garbage is dropped.
    assert cas(certs.ca_bundle(bundle, mine.ca_pem, NOW)) == cas(bundle)
    assert cas(certs.ca_bundle(b"not a pem", mine.ca_pem, NOW)) == cas(mine.ca_pem)


def test_the_bundle_is_bounded() -> None:
    bundle = b""
    issued = [certs.issue(["a"], 30, NOW + dt.timedelta(minutes=i)) for i in range(12)]
    for item in issued:
        bundle = certs.ca_bundle(bundle, item.ca_pem, NOW + dt.timedelta(hours=1))
    assert len(cas(bundle)) == certs.MAX_BUNDLE_CAS
    assert cas(bundle)[-1] == cas(issued[-1].ca_pem)[0]


def test_service_names_and_topics() -> None:
    pod = {"metadata": {"generateName": "orders-api-5d8f7c9b6-", "labels": {
        "pod-template-hash": "5d8f7c9b6"}}}
    assert naming.service_name(pod) == "orders-api"
    pod["metadata"]["labels"]["app.kubernetes.io/name"] = "orders"
    assert naming.service_name(pod) == "orders"
    assert naming.topic_for("shop", "a/b c") == "redrive.shop.a-b-c"
    assert len(naming.topic_for("n" * 200, "s" * 200)) + len(".status") <= 249
    assert naming.release_fullname("orders") == "orders-redrive"
    assert naming.release_fullname("redrive-orders") == "redrive-orders"
