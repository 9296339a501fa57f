"""Reading ``REDRIVE_*`` environment variables into typed, frozen settings.

Every component builds its settings once, at start, through an :class:`Env` reader that
collects *all* problems before raising one :class:`~redrive.errors.ConfigError`, so an
operator fixes a bad Deployment in one round instead of one variable per crash loop.
The settings groups shared by every component live here; each service adds its own.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from redrive.errors import ConfigError

T = TypeVar("T")

PREFIX = "REDRIVE_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
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


@dataclass(frozen=True)
class KafkaSettings:
    """Where records go. Shared by every component."""

    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    """Kafka brokers to bootstrap from (``REDRIVE_KAFKA_BOOTSTRAP_SERVERS``)."""
    topic: str = "failed-requests"
    """Topic of captured requests (``REDRIVE_TOPIC``); the original demo's name."""
    dlq_topic: str = "failed-requests.dlq"
    """Topic of requests that will not be redriven (``REDRIVE_DLQ_TOPIC``)."""

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
        return cls(bootstrap_servers=servers, topic=topic, dlq_topic=dlq)


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
        signing = env.optional("REDRIVE_SIGNING_KEY")
        seal = env.optional("REDRIVE_SEAL_KEY")
        # Signing and sealing land with the hardening work. Until then, refuse to start
        # rather than let an operator believe records are signed or sealed when they are not.
        for name, value in (("REDRIVE_SIGNING_KEY", signing), ("REDRIVE_SEAL_KEY", seal)):
            if value is not None:
                env.problem(name, "is set, but record signing and sealing are not available "
                                  "in this release; unset it")
        return cls(redact_headers=redact, signing_key=signing, seal_key=seal)


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


def valid_topic(name: str) -> bool:
    """True when ``name`` is a legal Kafka topic name (for settings beyond the shared ones)."""
    return _valid_topic(name)
