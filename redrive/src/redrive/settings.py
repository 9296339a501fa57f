"""Reading ``REDRIVE_*`` environment variables into typed, frozen settings.

Every component builds its settings once, at start, through an :class:`Env` reader that
collects *all* problems before raising one :class:`~redrive.errors.ConfigError`, so an
operator fixes a bad Deployment in one round instead of one variable per crash loop.
The settings groups shared by every component live here; each service adds its own.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redrive.errors import ConfigError
from redrive.sealing import SealKeys
from redrive.signing import KeyFormatError, SigningKeys

T = TypeVar("T")

PREFIX = "REDRIVE_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
DEFAULT_REDACT_HEADERS = "authorization,proxy-authorization,cookie,x-api-key"


class Env:
    """Typed accessors over an environment mapping that accumulate problems.

    Each accessor returns a usable value even when the variable is invalid (the default),
    so parsing can go on and report every problem; call :meth:`check` at the end.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value != "" else None

    def _parse(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            self.problems.append(f"{name}={raw!r}: {exc}")
            return default

    def problem(self, name: str, message: str) -> None:
        """Record a problem that spans variables or needs context the accessors lack."""
        self.problems.append(f"{name}: {message}")

    def string(self, name: str, default: str, *, choices: tuple[str, ...] = ()) -> str:
        def parse(raw: str) -> str:
            if choices and raw.lower() not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}")
            return raw.lower() if choices else raw

        return self._parse(name, default, parse)

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def integer(self, name: str, default: int, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        def parse(raw: str) -> int:
            try:
                value = int(raw)
            except ValueError:
                raise ValueError("must be a whole number") from None
            _check_range(value, minimum, maximum)
            return value

        return self._parse(name, default, parse)

    def number(self, name: str, default: float, *, minimum: float | None = None,
               maximum: float | None = None, positive: bool = False) -> float:
        def parse(raw: str) -> float:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError("must be a number") from None
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            if positive and value <= 0:
                raise ValueError("must be greater than 0")
            _check_range(value, minimum, maximum)
            return value

        return self._parse(name, default, parse)

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("must be true or false")

        return self._parse(name, default, parse)

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=1, maximum=65535)

    def url(self, name: str, default: str) -> str:
        return self._parse(name, default, parse_base_url)

    def csv(self, name: str, default: str) -> tuple[str, ...]:
        raw = self._raw(name)
        text = default if raw is None else raw
        return tuple(item.strip() for item in text.split(",") if item.strip())

    def statuses(self, name: str, default: str) -> frozenset[int]:
        def parse(raw: str) -> frozenset[int]:
            codes: set[int] = set()
            for part in raw.split(","):
                item = part.strip()
                if not item:
                    continue
                if not item.isdigit() or not 100 <= int(item) <= 599:
                    raise ValueError(f"{item!r} is not an HTTP status code (100-599)")
                codes.add(int(item))
            return frozenset(codes)

        return self._parse(name, parse(default), parse)

    def bootstrap_servers(self, name: str, default: str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            servers = tuple(s.strip() for s in raw.split(",") if s.strip())
            if not servers:
                raise ValueError("must list at least one host:port")
            for server in servers:
                host, sep, port = server.rpartition(":")
                if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                    raise ValueError(f"{server!r} is not host:port")
            return servers

        return self._parse(name, parse(default), parse)

    def check(self) -> None:
        """Raise :class:`ConfigError` naming every problem found so far, if any."""
        if self.problems:
            raise ConfigError(self.problems)


def _check_range(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"must be at least {minimum:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum:g}")


def parse_base_url(raw: str) -> str:
    """Validate an ``http(s)://host[:port][/prefix]`` URL; return it without a trailing slash."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return raw.rstrip("/")


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaSettings:
    """Where records go, and how to reach Kafka safely. Shared by every component."""

    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    """Kafka brokers to bootstrap from (``REDRIVE_KAFKA_BOOTSTRAP_SERVERS``)."""
    topic: str = "failed-requests"
    """Topic of captured requests (``REDRIVE_TOPIC``); the original demo's name."""
    dlq_topic: str = "failed-requests.dlq"
    """Topic of requests that will not be redriven (``REDRIVE_DLQ_TOPIC``)."""
    security_protocol: str = "PLAINTEXT"
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``
    (``REDRIVE_KAFKA_SECURITY_PROTOCOL``)."""
    sasl_mechanism: str | None = None
    """``SCRAM-SHA-512`` (the default with SASL), ``SCRAM-SHA-256`` or ``PLAIN``
    (``REDRIVE_KAFKA_SASL_MECHANISM``); None without SASL."""
    sasl_username: str | None = None
    """SASL user name (``REDRIVE_KAFKA_SASL_USERNAME``)."""
    sasl_password: str | None = field(default=None, repr=False)
    """SASL password (``REDRIVE_KAFKA_SASL_PASSWORD``, or the content of
    ``REDRIVE_KAFKA_SASL_PASSWORD_FILE``, read once at start); never logged."""
    ssl_ca_file: str | None = None
    """PEM bundle of CAs that sign the brokers' certificates (``REDRIVE_KAFKA_SSL_CA_FILE``);
    None trusts the system's CAs."""
    ssl_cert_file: str | None = None
    """PEM client certificate for mutual TLS (``REDRIVE_KAFKA_SSL_CERT_FILE``)."""
    ssl_key_file: str | None = None
    """PEM (unencrypted) private key of :attr:`ssl_cert_file` (``REDRIVE_KAFKA_SSL_KEY_FILE``)."""
    ssl_check_hostname: bool = True
    """Check that a broker's certificate names the host dialled
    (``REDRIVE_KAFKA_SSL_CHECK_HOSTNAME``)."""

    @property
    def uses_ssl(self) -> bool:
        """True when connections to Kafka are TLS (``SSL`` or ``SASL_SSL``)."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        """True when clients authenticate with SASL (``SASL_PLAINTEXT`` or ``SASL_SSL``)."""
        return self.security_protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Env) -> KafkaSettings:
        servers = env.bootstrap_servers("REDRIVE_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
        topic = env.string("REDRIVE_TOPIC", "failed-requests")
        dlq = env.string("REDRIVE_DLQ_TOPIC", "failed-requests.dlq")
        for name, value in (("REDRIVE_TOPIC", topic), ("REDRIVE_DLQ_TOPIC", dlq)):
            if not _valid_topic(value):
                env.problem(name, f"{value!r} is not a valid Kafka topic name "
                                  "(letters, digits, '.', '_', '-'; at most 249)")
        if topic == dlq:
            env.problem("REDRIVE_DLQ_TOPIC", "must differ from REDRIVE_TOPIC")
        return cls(bootstrap_servers=servers, topic=topic, dlq_topic=dlq,
                   **_kafka_security_from_env(env))


def _kafka_security_from_env(env: Env) -> dict[str, Any]:
    """The TLS and SASL fields of :class:`KafkaSettings`; problems go to ``env``.

    Secrets are never echoed in a problem: only variable names and file paths are.
    """
    def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw.upper() not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}")
            return raw.upper()

        return env._parse(name, default, parse)

    protocol = choice("REDRIVE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", KAFKA_SECURITY_PROTOCOLS)
    sasl = protocol.startswith("SASL_")
    tls = protocol in ("SSL", "SASL_SSL")
    mechanism: str | None = choice("REDRIVE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512",
                                   KAFKA_SASL_MECHANISMS)
    username = env.optional("REDRIVE_KAFKA_SASL_USERNAME")
    password = _sasl_password(env)
    ca_file = _readable_file(env, "REDRIVE_KAFKA_SSL_CA_FILE")
    cert_file = _readable_file(env, "REDRIVE_KAFKA_SSL_CERT_FILE")
    key_file = _readable_file(env, "REDRIVE_KAFKA_SSL_KEY_FILE")
    check_hostname = env.boolean("REDRIVE_KAFKA_SSL_CHECK_HOSTNAME", True)

    if sasl:
        if username is None:
            env.problem("REDRIVE_KAFKA_SASL_USERNAME", f"is required with {protocol}")
        if password is None and not _set(env, "REDRIVE_KAFKA_SASL_PASSWORD_FILE"):
            env.problem("REDRIVE_KAFKA_SASL_PASSWORD", f"is required with {protocol} "
                        "(or REDRIVE_KAFKA_SASL_PASSWORD_FILE)")
    else:
        mechanism = None
        for name in ("REDRIVE_KAFKA_SASL_MECHANISM", "REDRIVE_KAFKA_SASL_USERNAME",
                     "REDRIVE_KAFKA_SASL_PASSWORD", "REDRIVE_KAFKA_SASL_PASSWORD_FILE"):
            if _set(env, name):
                env.problem(name, f"is set, but REDRIVE_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                                  "use SASL_SSL (or SASL_PLAINTEXT) or unset it")
    if not tls:
        for name in ("REDRIVE_KAFKA_SSL_CA_FILE", "REDRIVE_KAFKA_SSL_CERT_FILE",
                     "REDRIVE_KAFKA_SSL_KEY_FILE", "REDRIVE_KAFKA_SSL_CHECK_HOSTNAME"):
            if _set(env, name):
                env.problem(name, f"is set, but REDRIVE_KAFKA_SECURITY_PROTOCOL is {protocol}: "
                                  "use SSL or SASL_SSL, or unset it")
    if _set(env, "REDRIVE_KAFKA_SSL_CERT_FILE") != _set(env, "REDRIVE_KAFKA_SSL_KEY_FILE"):
        missing = ("REDRIVE_KAFKA_SSL_KEY_FILE" if _set(env, "REDRIVE_KAFKA_SSL_CERT_FILE")
                   else "REDRIVE_KAFKA_SSL_CERT_FILE")
        env.problem(missing, "is required too: mutual TLS needs both a certificate "
                             "(REDRIVE_KAFKA_SSL_CERT_FILE) and its key "
                             "(REDRIVE_KAFKA_SSL_KEY_FILE)")
    elif tls and all(path is not None or not _set(env, name) for name, path in (
            ("REDRIVE_KAFKA_SSL_CA_FILE", ca_file), ("REDRIVE_KAFKA_SSL_CERT_FILE", cert_file),
            ("REDRIVE_KAFKA_SSL_KEY_FILE", key_file))):
        try:
            kafka_ssl_context(ca_file, cert_file, key_file, check_hostname)
        except (ssl.SSLError, OSError, ValueError) as exc:
            env.problem("REDRIVE_KAFKA_SSL_*", f"cannot build a TLS context from the CA, "
                        f"certificate and key files: {_ssl_reason(exc)}")
    return {"security_protocol": protocol, "sasl_mechanism": mechanism,
            "sasl_username": username if sasl else None,
            "sasl_password": password if sasl else None,
            "ssl_ca_file": ca_file if tls else None, "ssl_cert_file": cert_file if tls else None,
            "ssl_key_file": key_file if tls else None, "ssl_check_hostname": check_hostname}


def _set(env: Env, name: str) -> bool:
    return env.optional(name) is not None


def _sasl_password(env: Env) -> str | None:
    """The SASL password from the variable or the file; never echoed in a problem."""
    # Not env.optional: a password may legitimately start or end with spaces.
    inline = env.environ.get("REDRIVE_KAFKA_SASL_PASSWORD") or None
    path = env.optional("REDRIVE_KAFKA_SASL_PASSWORD_FILE")
    if inline is not None and path is not None:
        env.problem("REDRIVE_KAFKA_SASL_PASSWORD_FILE",
                    "set only one of REDRIVE_KAFKA_SASL_PASSWORD and "
                    "REDRIVE_KAFKA_SASL_PASSWORD_FILE")
        return inline
    if path is None:
        return inline
    if _readable_file(env, "REDRIVE_KAFKA_SASL_PASSWORD_FILE") is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        env.problem("REDRIVE_KAFKA_SASL_PASSWORD_FILE",
                    f"{path!r} cannot be read: {type(exc).__name__}")
        return None
    # A Secret written with `echo` or an editor ends with a newline that is not the password.
    text = text.rstrip("\r\n")
    if not text:
        env.problem("REDRIVE_KAFKA_SASL_PASSWORD_FILE", f"{path!r} is empty")
        return None
    return text


def _readable_file(env: Env, name: str) -> str | None:
    """The path in ``name`` when it is a readable regular file; a problem otherwise."""
    path = env.optional(name)
    if path is None:
        return None
    if not os.path.exists(path):
        env.problem(name, f"{path!r} does not exist")
    elif not os.path.isfile(path):
        env.problem(name, f"{path!r} is not a regular file")
    elif not os.access(path, os.R_OK):
        env.problem(name, f"{path!r} is not readable by this process (uid {os.getuid()})")
    else:
        return path
    return None


def _ssl_reason(exc: BaseException) -> str:
    """A short reason for a TLS loading failure; never file contents."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return f"{type(exc).__name__}: {exc}"


def kafka_ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                      check_hostname: bool = True) -> ssl.SSLContext:
    """A client TLS context for Kafka: verifies brokers against ``ca_file`` (else the system
    CAs), presents ``cert_file``/``key_file`` when given (mutual TLS), TLS 1.2 at least.

    Raises :class:`ssl.SSLError` or :class:`OSError` when a file is not valid PEM, or the
    key does not match the certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return context


def _valid_topic(name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return 0 < len(name) <= 249 and name not in (".", "..") and set(name) <= allowed


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    """Minimum level logged (``REDRIVE_LOG_LEVEL``)."""
    format: str = "json"
    """``json`` (one object per line, for collectors) or ``text`` (for people)."""

    @classmethod
    def from_env(cls, env: Env) -> LogSettings:
        return cls(
            level=env.string("REDRIVE_LOG_LEVEL", "info", choices=LOG_LEVELS),
            format=env.string("REDRIVE_LOG_FORMAT", "json", choices=LOG_FORMATS),
        )


@dataclass(frozen=True)
class ProcessSettings:
    event_loop: str = "auto"
    """``REDRIVE_EVENT_LOOP``: ``uvloop`` (libuv; the images ship it), ``asyncio`` (the
    standard library's loop) or ``auto`` (uvloop when it is installed)."""

    @classmethod
    def from_env(cls, env: Env) -> ProcessSettings:
        loop = env.string("REDRIVE_EVENT_LOOP", "auto", choices=EVENT_LOOPS)
        if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            env.problem("REDRIVE_EVENT_LOOP", "uvloop is not installed in this environment "
                        "(pip install uvloop, or set asyncio)")
        return cls(event_loop=loop)


def _key(env: Env, name: str, parse: Callable[[str], object], fmt: str) -> str | None:
    """``name``'s value once ``parse`` accepts it; otherwise a problem (never the value)."""
    raw = env.optional(name)
    if raw is None:
        return None
    try:
        parse(raw)
    except KeyFormatError as exc:
        env.problem(name, f"{exc} (format: {fmt})")
        return None
    return raw


@dataclass(frozen=True)
class SecuritySettings:
    redact_headers: frozenset[str] = frozenset(DEFAULT_REDACT_HEADERS.split(","))
    """Lower-case header names never stored in clear (``REDRIVE_REDACT_HEADERS``)."""
    signing_key: str | None = field(default=None, repr=False)
    """HMAC key for record signatures (``REDRIVE_SIGNING_KEY``); never logged."""
    seal_key: str | None = field(default=None, repr=False)
    """AES-GCM key for sealed headers (``REDRIVE_SEAL_KEY``); never logged."""

    @classmethod
    def from_env(cls, env: Env) -> SecuritySettings:
        redact = frozenset(h.lower() for h in env.csv("REDRIVE_REDACT_HEADERS",
                                                      DEFAULT_REDACT_HEADERS))
        # Parse now so a bad key stops the start; messages never echo secret material.
        signing = _key(env, "REDRIVE_SIGNING_KEY", SigningKeys.parse,
                       "kid:base64secret[,...], secrets of at least 32 bytes")
        seal = _key(env, "REDRIVE_SEAL_KEY", SealKeys.parse,
                    "kid:base64key[,...], AES-256 keys of exactly 32 bytes")
        return cls(redact_headers=redact, signing_key=signing, seal_key=seal)

    @property
    def signing_keys(self) -> SigningKeys | None:
        """The parsed signing key ring, or None when signing is off."""
        return SigningKeys.parse(self.signing_key) if self.signing_key else None

    @property
    def seal_keys(self) -> SealKeys | None:
        """The parsed seal key ring, or None when sealing is off."""
        return SealKeys.parse(self.seal_key) if self.seal_key else None


@dataclass(frozen=True)
class PodIdentity:
    """Who captured a record, from the Kubernetes downward API."""

    pod: str = ""
    namespace: str = ""

    @classmethod
    def from_env(cls, env: Env) -> PodIdentity:
        # Outside Kubernetes the host name is the most useful stand-in for the pod name.
        return cls(pod=env.optional("POD_NAME") or socket.gethostname(),
                   namespace=env.optional("POD_NAMESPACE") or "")


@dataclass(frozen=True)
class AdminSettings:
    """The admin server every component runs: ``/metrics``, ``/healthz``, ``/readyz``."""

    host: str = "0.0.0.0"
    """Admin address (``REDRIVE_ADMIN_HOST``); all interfaces, for the kubelet's probes."""
    port: int = 9901
    """Admin port (``REDRIVE_ADMIN_PORT``): 9901 for the sidecar, 9902 for the worker."""

    @classmethod
    def from_env(cls, env: Env, default_port: int) -> AdminSettings:
        return cls(host=env.string("REDRIVE_ADMIN_HOST", "0.0.0.0"),
                   port=env.port("REDRIVE_ADMIN_PORT", default_port))


@dataclass(frozen=True)
class ShutdownSettings:
    drain_timeout_seconds: float = 20.0
    """On SIGTERM, the longest wait for in-flight work (requests, replays, the producer
    flush) before exiting (``REDRIVE_DRAIN_TIMEOUT_SECONDS``); keep it below the pod's
    termination grace period (30 s by default)."""

    @classmethod
    def from_env(cls, env: Env) -> ShutdownSettings:
        return cls(drain_timeout_seconds=env.number("REDRIVE_DRAIN_TIMEOUT_SECONDS", 20.0,
                                                    minimum=0))


def valid_topic(name: str) -> bool:
    """True when ``name`` is a legal Kafka topic name (for settings beyond the shared ones)."""
    return _valid_topic(name)
