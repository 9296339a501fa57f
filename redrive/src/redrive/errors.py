"""The few error types that cross Redrive's boundaries.

Library exceptions (aiohttp, aiokafka, OSError) are turned into these at the edge, so
the code above the boundary reasons about outcomes, not about library types.
"""

from __future__ import annotations

from collections.abc import Iterable


class RedriveError(Exception):
    """Base class for every error Redrive raises on purpose."""


class ConfigError(RedriveError):
    """The configuration is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"invalid configuration ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class RecordError(RedriveError):
    """A Kafka record is not a valid Redrive record (malformed JSON, missing fields...)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid record: " + "; ".join(self.problems))


class PublishError(RedriveError):
    """Kafka did not acknowledge a record (in time). The record is not known to be safe.

    ``retriable`` is False when Kafka refused the record for a reason that cannot change
    by trying again (too large, invalid, not authorised); ``reason`` then names it
    (``too_large``, ``invalid``, ``unauthorized``, ``rejected``) for metrics and the
    quarantine file. See :func:`redrive.kafka.publish_error`, the one place that decides.
    """

    def __init__(self, message: str, *, retriable: bool = True,
                 reason: str = "unavailable") -> None:
        super().__init__(message)
        self.retriable = retriable
        self.reason = reason
