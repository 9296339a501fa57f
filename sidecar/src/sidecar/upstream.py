"""The sidecar's client for the app it fronts: :mod:`redrive.http1`, shared with the
retry worker (services do not import each other), re-exported under its old name."""

from redrive.http1 import (
    ConnectError,
    ConnectionReset,
    ConnectRefused,
    ConnectTimeout,
    ProtocolError,
    ReadTimeout,
    Response,
    UpstreamClient,
    UpstreamError,
    serialize_request,
)

__all__ = [
    "ConnectError",
    "ConnectRefused",
    "ConnectTimeout",
    "ConnectionReset",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "UpstreamClient",
    "UpstreamError",
    "serialize_request",
]
