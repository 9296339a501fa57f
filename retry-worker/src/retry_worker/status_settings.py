"""The worker's request-status settings: the status port, topic, view bounds, console token."""

from __future__ import annotations

from dataclasses import dataclass

from redrive.settings import Env, valid_topic
from redrive.status import DEFAULT_STATUS_PORT, status_topic

MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class StatusSettings:
    host: str = "0.0.0.0"
    """Status API and console address (``REDRIVE_STATUS_HOST``)."""
    port: int = DEFAULT_STATUS_PORT
    """``GET /v1/requests/{id}`` and ``/console/`` (``REDRIVE_STATUS_PORT``); 0 turns the
    port (and the view behind it) off, while status records are still written."""
    topic: str = "failed-requests.status"
    """Compacted topic of request states (``REDRIVE_STATUS_TOPIC``; default
    ``<REDRIVE_TOPIC>.status``)."""
    max_tracked: int = 1_000_000
    """Requests the local view remembers at most (``REDRIVE_STATUS_MAX_TRACKED``); the
    least recently updated are forgotten first (then answered 404)."""
    max_age_seconds: float = 7 * 86_400.0
    """Requests not updated for this long are forgotten (``REDRIVE_STATUS_MAX_AGE_SECONDS``);
    a week, the status topic's retention."""
    console_token: str | None = None
    """Bearer token of the console (``REDRIVE_CONSOLE_TOKEN``); unset, the console is off."""

    @classmethod
    def from_env(cls, env: Env, topic: str, other_topics: tuple[str, ...]) -> StatusSettings:
        explicit = env.optional("REDRIVE_STATUS_TOPIC")
        name = explicit or status_topic(topic)
        # A derived name is only as valid as REDRIVE_TOPIC, which is checked on its own.
        if explicit and not valid_topic(name):
            env.problem("REDRIVE_STATUS_TOPIC", f"{name!r} is not a valid Kafka topic name "
                                                "(letters, digits, '.', '_', '-'; at most 249)")
        if name in other_topics:
            env.problem("REDRIVE_STATUS_TOPIC", "must differ from the capture, retry and "
                                                "dead-letter topics")
        token = env.optional("REDRIVE_CONSOLE_TOKEN")
        if token is not None and (len(token) < MIN_TOKEN_CHARS or token != token.strip()):
            env.problem("REDRIVE_CONSOLE_TOKEN", f"must be at least {MIN_TOKEN_CHARS} "
                                                 "characters without surrounding spaces")
        return cls(
            host=env.string("REDRIVE_STATUS_HOST", "0.0.0.0"),
            port=env.integer("REDRIVE_STATUS_PORT", DEFAULT_STATUS_PORT, minimum=0,
                             maximum=65535),
            topic=name,
            max_tracked=env.integer("REDRIVE_STATUS_MAX_TRACKED", 1_000_000, minimum=1000),
            max_age_seconds=env.number("REDRIVE_STATUS_MAX_AGE_SECONDS", 7 * 86_400.0,
                                       minimum=60),
            console_token=token or None,
        )

    def summary(self) -> dict[str, object]:
        """For the startup log line; the token itself is never included."""
        return {"status": f"{self.host}:{self.port}" if self.port else "off",
                "status_topic": self.topic, "status_max_tracked": self.max_tracked,
                "console": "on" if self.console_token else "off"}
