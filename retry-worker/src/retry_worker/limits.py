"""Protecting the recovering service: a token bucket and a circuit breaker.

Both are plain state machines driven by a ``now`` (monotonic seconds) passed in, so tests
step a fake clock instead of sleeping. The worker's dispatcher asks them for permission
and sleeps for the wait they return.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """At most ``rate`` takes per second on average, bursts of at most ``capacity``.

    ``rate`` 0 means unlimited. The default capacity is a tenth of a second's worth (at
    least one token), so the first second of a run cannot burst far past the rate.
    """

    rate: float
    capacity: float = 0.0
    tokens: float = field(default=-1.0)
    updated: float | None = None

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            self.capacity = max(1.0, self.rate / 10.0)
        if self.tokens < 0:
            self.tokens = self.capacity

    def take(self, now: float) -> float:
        """Take one token and return 0, or take nothing and return seconds to wait."""
        if self.rate <= 0:
            return 0.0
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        # The epsilon absorbs float rounding: waiting exactly the returned time must yield
        # a token, or a caller could spin on ever tinier waits.
        if self.tokens >= 1.0 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after ``failures`` consecutive retriable failures; after ``open_seconds`` it
    lets exactly one probe through (half-open); the probe's success closes it, its failure
    opens it again. ``failures`` 0 disables the breaker.

    While open, the worker pauses consumption and starts no replay, so a dead service does
    not burn every record's attempts.
    """

    failures: int
    open_seconds: float
    state: BreakerState = BreakerState.CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def permit(self, now: float) -> float:
        """0 when a replay may start now (and, half-open, marks it as the probe); else
        seconds to wait before asking again."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            remaining = self.opened_at + self.open_seconds - now
            if remaining > 0:
                return remaining
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.probing:
            # One probe at a time; poll until its outcome decides.
            return min(0.05, self.open_seconds)
        self.probing = True
        return 0.0

    def success(self) -> bool:
        """Record an answer from the service. True when this closed the breaker."""
        was_closed = self.state is BreakerState.CLOSED
        self.state, self.consecutive, self.probing = BreakerState.CLOSED, 0, False
        return not was_closed

    def failure(self, now: float) -> bool:
        """Record a retriable failure. True when this opened the breaker."""
        self.consecutive += 1
        if self.failures <= 0:
            return False
        if self.state is BreakerState.HALF_OPEN or (
                self.state is BreakerState.CLOSED and self.consecutive >= self.failures):
            self.state, self.opened_at, self.probing = BreakerState.OPEN, now, False
            return True
        return False

    def release_probe(self) -> None:
        """The permitted probe was not sent after all (record revoked or refused): let the
        next replay be the probe instead of waiting forever for this one's outcome."""
        if self.state is BreakerState.HALF_OPEN:
            self.probing = False

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED
