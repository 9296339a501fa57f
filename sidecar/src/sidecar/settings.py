"""Sidecar settings: every ``REDRIVE_*`` variable, parsed once into frozen groups."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redrive.chunks import DEFAULT_MAX_RECORD_BYTES, MIN_MAX_RECORD_BYTES
from redrive.settings import (
    AdminSettings,
    Env,
    KafkaSettings,
    LogSettings,
    PodIdentity,
    ProcessSettings,
    SecuritySettings,
    ShutdownSettings,
)
from sidecar.status import StatusSettings

FAILURE_RESPONSES = ("reject", "accept")
_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]*$")


@dataclass(frozen=True)
class ListenSettings:
    host: str = "0.0.0.0"
    """Address the proxy binds (``REDRIVE_LISTEN_HOST``); all interfaces, as in a pod."""
    port: int = 8080
    """Proxy port (``REDRIVE_LISTEN_PORT``); the Service targets it."""
    max_body_bytes: int = 1_048_576
    """Largest request body accepted (``REDRIVE_MAX_BODY_BYTES``); larger gets 413."""
    client_read_timeout: float = 30.0
    """Seconds a client has to send a request head (from its first byte) and, again, its
    body (``REDRIVE_CLIENT_READ_TIMEOUT_SECONDS``); late clients get 408."""
    max_header_bytes: int = 8190
    """Longest request line and longest header field (``REDRIVE_MAX_HEADER_BYTES``);
    longer gets 431."""
    max_headers: int = 128
    """Most header fields in one request (``REDRIVE_MAX_HEADERS``); more gets 431."""
    access_log: bool = False
    """Log every proxied request (``REDRIVE_ACCESS_LOG``). Off: metrics cover the happy path."""
    buffered_body_max_bytes: int = 64 * 1_048_576
    """Budget for request bodies held at once by all requests in progress
    (``REDRIVE_BUFFERED_BODY_MAX_BYTES``); a request whose body would pass it gets 503
    with ``queued: false`` and Retry-After. At least ``REDRIVE_MAX_BODY_BYTES``."""


@dataclass(frozen=True)
class UpstreamSettings:
    url: str = "http://127.0.0.1:3000"
    """The app container (``REDRIVE_UPSTREAM_URL``); a path prefix is kept."""
    connect_timeout: float = 2.0
    """Seconds to open a connection (``REDRIVE_UPSTREAM_CONNECT_TIMEOUT_SECONDS``)."""
    timeout: float = 30.0
    """Seconds for the whole exchange (``REDRIVE_UPSTREAM_TIMEOUT_SECONDS``)."""
    capture_statuses: frozenset[int] = frozenset({502, 503, 504})
    """Upstream statuses that count as failures (``REDRIVE_CAPTURE_STATUSES``)."""


@dataclass(frozen=True)
class CaptureSettings:
    failure_response: str = "reject"
    """``reject``: 503 + Retry-After; ``accept``: 202 once queued (``REDRIVE_FAILURE_RESPONSE``)."""
    retry_after: int = 5
    """Retry-After seconds in our own 503s (``REDRIVE_RETRY_AFTER_SECONDS``)."""
    publish_timeout: float = 5.0
    """Longest wait for Kafka's acknowledgement (``REDRIVE_PUBLISH_TIMEOUT_SECONDS``)."""
    methods: frozenset[str] = frozenset({"POST", "PUT", "PATCH", "DELETE"})
    """Methods whose failures are captured (``REDRIVE_CAPTURE_METHODS``). Safe methods are
    not by default: a GET replayed an hour later helps nobody. Other methods get the
    failure passed through with ``queued: false``."""
    exclude_paths: tuple[str, ...] = ()
    """Paths never captured (``REDRIVE_CAPTURE_EXCLUDE_PATHS``): exact paths, or prefixes
    with a trailing ``*``; e.g. kubelet probe paths through an intercepted port."""


@dataclass(frozen=True)
class SpoolSettings:
    directory: Path | None = None
    """On-disk spool for captures Kafka did not acknowledge (``REDRIVE_SPOOL_DIR``)."""
    max_bytes: int = 1_073_741_824
    """Cap on the spool's size (``REDRIVE_SPOOL_MAX_BYTES``); past it captures are lost."""


@dataclass(frozen=True)
class RecordSettings:
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    """Largest Kafka record the sidecar produces, as the broker counts it (value, key,
    headers, batch overhead) (``REDRIVE_MAX_RECORD_BYTES``). A capture larger than that
    travels in ordered chunks (``redrive.chunks``). Keep it at or below the topic's
    ``max.message.bytes`` (1,048,588 by default on Kafka and Strimzi)."""


@dataclass(frozen=True)
class Settings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    logging: LogSettings = field(default_factory=LogSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    identity: PodIdentity = field(default_factory=PodIdentity)
    status: StatusSettings = field(default_factory=StatusSettings)
    records: RecordSettings = field(default_factory=RecordSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse every variable; raise ConfigError naming all invalid ones."""
        env = Env(environ)
        listen = ListenSettings(
            host=env.string("REDRIVE_LISTEN_HOST", "0.0.0.0"),
            port=env.port("REDRIVE_LISTEN_PORT", 8080),
            max_body_bytes=env.integer("REDRIVE_MAX_BODY_BYTES", 1_048_576, minimum=0,
                                       maximum=64 * 1_048_576),
            client_read_timeout=env.number("REDRIVE_CLIENT_READ_TIMEOUT_SECONDS", 30.0,
                                           positive=True),
            access_log=env.boolean("REDRIVE_ACCESS_LOG", False),
            max_header_bytes=env.integer("REDRIVE_MAX_HEADER_BYTES", 8190, minimum=256,
                                         maximum=1_048_576),
            max_headers=env.integer("REDRIVE_MAX_HEADERS", 128, minimum=8, maximum=10_000),
            buffered_body_max_bytes=env.integer("REDRIVE_BUFFERED_BODY_MAX_BYTES",
                                                64 * 1_048_576, minimum=0),
        )
        if listen.buffered_body_max_bytes < listen.max_body_bytes:
            env.problem("REDRIVE_BUFFERED_BODY_MAX_BYTES",
                        "must be at least REDRIVE_MAX_BODY_BYTES "
                        f"({listen.max_body_bytes}): else a request of the largest allowed "
                        "size could never be accepted")
        upstream = UpstreamSettings(
            url=env.url("REDRIVE_UPSTREAM_URL", "http://127.0.0.1:3000"),
            connect_timeout=env.number("REDRIVE_UPSTREAM_CONNECT_TIMEOUT_SECONDS", 2.0,
                                       positive=True),
            timeout=env.number("REDRIVE_UPSTREAM_TIMEOUT_SECONDS", 30.0, positive=True),
            capture_statuses=env.statuses("REDRIVE_CAPTURE_STATUSES", "502,503,504"),
        )
        capture = CaptureSettings(
            failure_response=env.string("REDRIVE_FAILURE_RESPONSE", "reject",
                                        choices=FAILURE_RESPONSES),
            retry_after=env.integer("REDRIVE_RETRY_AFTER_SECONDS", 5, minimum=0),
            publish_timeout=env.number("REDRIVE_PUBLISH_TIMEOUT_SECONDS", 5.0, positive=True),
            methods=_methods(env),
            exclude_paths=_exclude_paths(env),
        )
        spool_dir = env.optional("REDRIVE_SPOOL_DIR")
        spool = SpoolSettings(
            directory=Path(spool_dir) if spool_dir else None,
            max_bytes=env.integer("REDRIVE_SPOOL_MAX_BYTES", 1_073_741_824, minimum=1024),
        )
        admin = AdminSettings.from_env(env, default_port=9901)
        if admin.port == listen.port:
            env.problem("REDRIVE_ADMIN_PORT", "must differ from REDRIVE_LISTEN_PORT: "
                        "proxied traffic never shares a port with the admin endpoints")
        shutdown = ShutdownSettings.from_env(env)
        kafka = KafkaSettings.from_env(env)
        status = StatusSettings.from_env(env, kafka.topic)
        settings = cls(
            listen=listen, upstream=upstream, capture=capture, spool=spool,
            kafka=kafka, admin=admin, shutdown=shutdown,
            logging=LogSettings.from_env(env), security=SecuritySettings.from_env(env),
            identity=PodIdentity.from_env(env), status=status,
            records=RecordSettings(max_record_bytes=env.integer(
                "REDRIVE_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES,
                minimum=MIN_MAX_RECORD_BYTES, maximum=64 * 1_048_576)),
            process=ProcessSettings.from_env(env),
        )
        env.check()
        return settings


def _methods(env: Env) -> frozenset[str]:
    methods = env.csv("REDRIVE_CAPTURE_METHODS", "POST,PUT,PATCH,DELETE")
    bad = [m for m in methods if not _METHOD.match(m.upper())]
    if bad:
        env.problem("REDRIVE_CAPTURE_METHODS", f"not HTTP method names: {', '.join(bad)}")
    return frozenset(m.upper() for m in methods)


def _exclude_paths(env: Env) -> tuple[str, ...]:
    paths = env.csv("REDRIVE_CAPTURE_EXCLUDE_PATHS", "")
    bad = [p for p in paths if not p.startswith("/") or "*" in p[:-1] or "?" in p]
    if bad:
        env.problem("REDRIVE_CAPTURE_EXCLUDE_PATHS",
                    "each entry must be a path starting with '/', without a query, with at "
                    f"most a trailing '*': {', '.join(bad)}")
    return paths
