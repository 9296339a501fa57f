"""A throwaway CA and a localhost server certificate, made with the openssl binary."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def self_signed(d: Path, name: str) -> Path:
    """``<name>.crt`` and ``<name>.key`` in ``d``: a self-signed certificate (CN ``name``),
    usable as a CA or as any PEM file a setting needs. Returns ``d``."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
             "-out", str(d / f"{name}.crt"), "-days", "1", "-subj", f"/CN={name}")
    return d


def make_pki(d: Path) -> Path:
    """``ca.crt``, ``other-ca.crt`` and ``server.crt``/``server.key`` (CN and SAN localhost,
    SAN 127.0.0.1, signed by ``ca``) in ``d``."""
    self_signed(d, "ca")
    self_signed(d, "other-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "server.key"),
             "-out", str(d / "server.csr"), "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
             "-out", str(d / "server.crt"), "-extfile", str(d / "ext"))
    return d
