"""Self-made webhook certificates: a short-lived CA and a serving certificate signed by it.

Used when no certificate files are given (no cert-manager): the injector needs no manual
step and no install-time secret. Each process makes its own CA at start and again after
two thirds of the validity; ``ca_bundle`` merges its CA into the webhook configuration's
caBundle next to the other replicas' unexpired CAs, so every replica stays trusted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_BUNDLE_CAS = 10
"""Most CAs kept in a caBundle (replicas and their recent rotations)."""


@dataclass(frozen=True)
class Issued:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    not_after: dt.datetime


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(dns_names: list[str], days: int, now: dt.datetime | None = None) -> Issued:
    """A new CA and a serving certificate for ``dns_names`` (the first is the CN)."""
    now = now or dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"redrive-injector-ca-{int(now.timestamp())}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(dns_names[0])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return Issued(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        not_after=end)


def ca_bundle(existing: bytes, ours: bytes, now: dt.datetime | None = None) -> bytes:
    """``existing`` bundle without expired or unreadable entries, plus ``ours``; the newest
    ``MAX_BUNDLE_CAS`` are kept."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        certs = x509.load_pem_x509_certificates(existing) if existing.strip() else []
    except ValueError:
        certs = []
    mine = x509.load_pem_x509_certificate(ours)
    keep = [c for c in certs if c.not_valid_after_utc > now and c != mine]
    keep.sort(key=lambda c: c.not_valid_before_utc)
    keep = [*keep[-(MAX_BUNDLE_CAS - 1):], mine]
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in keep)


def renew_at(issued: Issued, days: int) -> dt.datetime:
    """When to renew: after two thirds of the validity."""
    return issued.not_after - dt.timedelta(days=days) / 3
