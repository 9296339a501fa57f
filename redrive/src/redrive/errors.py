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
    """Kafka did not acknowledge a record in time. The record is not known to be safe."""
