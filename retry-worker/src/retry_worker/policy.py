"""The replay policy, pure: what an attempt's outcome means and what happens next.

No I/O and no clock of its own: callers pass ``now`` (epoch seconds) and a random number
in [0, 1), so the schedule is tested as plain data (like kopf's backoff sequences and
Dapr's named retry policies).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from redrive.deadletter import MAX_AGE, MAX_ATTEMPTS, PERMANENT, UNSAFE, AttemptLog
from redrive.envelope import IDEMPOTENT_METHODS, Record
from retry_worker.settings import RetrySettings

RETRIABLE_STATUSES = frozenset({408, 409, 425, 429})
"""4xx statuses that say "not now" rather than "never": timeout, conflict, too early, too many."""


class Verdict(enum.Enum):
    SUCCESS = "success"
    RETRIABLE = "retriable"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Result:
    """What one replay attempt came back with: a status, or an error when there was none."""

    started_at: float
    """Epoch seconds."""
    duration_seconds: float
    status: int | None = None
    error: str | None = None
    """``connect_error``, ``connection_error``, ``timeout``... when the service did not answer."""
    retry_after_seconds: float | None = None
    """The service's ``Retry-After``, in seconds from the end of the attempt."""

    @property
    def verdict(self) -> Verdict:
        return classify(self.status)

    def log(self) -> AttemptLog:
        return AttemptLog(at=self.started_at, duration_seconds=self.duration_seconds,
                          status=self.status, error=self.error)


def classify(status: int | None) -> Verdict:
    """2xx succeeds; 408/409/425/429, 5xx and no answer at all (connection errors,
    timeouts: ``status is None``) are worth retrying; any other 1xx/3xx/4xx is permanent
    (redirects are never followed: the origin must stay the target's)."""
    if status is None:
        return Verdict.RETRIABLE
    if 200 <= status < 300:
        return Verdict.SUCCESS
    if status in RETRIABLE_STATUSES or 500 <= status < 600:
        return Verdict.RETRIABLE
    return Verdict.PERMANENT


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with proportional jitter and a cap."""

    initial: float = 2.0
    """Seconds before the second attempt."""
    multiplier: float = 4.0
    cap: float = 3600.0
    """No single delay is longer, not even one asked for by ``Retry-After``."""
    jitter: float = 0.2
    """The delay is scaled by a factor in [1 - jitter, 1 + jitter]."""

    def base(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` before jitter: the schedule itself."""
        exponent = max(0, attempt - 1)
        # Past the cap the exact power does not matter; do not overflow a float to find out.
        if self.multiplier > 1 and exponent * math.log(self.multiplier) > \
                math.log(max(self.cap / self.initial, 1.0)) + 1.0:
            return self.cap
        return min(self.cap, self.initial * self.multiplier ** exponent)

    def delay(self, attempt: int, rand: float, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

        ``rand`` is a number in [0, 1) (``random.random()``). A ``retry_after`` from the
        service is honoured within [delay, cap]: it can lengthen the wait, never shorten it
        below the schedule nor stretch it past the cap.
        """
        base = self.base(attempt)
        delay = min(self.cap, base * (1.0 + self.jitter * (2.0 * rand - 1.0)))
        if retry_after is not None:
            delay = min(self.cap, max(delay, retry_after))
        return max(0.0, delay)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` named by a ``Retry-After`` header (delta-seconds or HTTP-date,
    RFC 9110 §10.2.3); None when absent or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    max_age_seconds: float = 86_400.0
    backoff: Backoff = Backoff()

    def tiers(self) -> tuple[float, ...]:
        """The fixed delays of the retry tiers (one retry topic each), shortest first: the
        schedule's delay after each attempt that can be followed by another, and the cap
        (the longest a ``Retry-After`` can ask for)."""
        delays = {self.backoff.base(n) for n in range(1, self.max_attempts)}
        return tuple(sorted(delays | {self.backoff.cap}))

    def tier_for(self, delay: float) -> float:
        """The tier a record waiting ``delay`` seconds goes to: the shortest one whose
        longest jittered delay, ``tier * (1 + jitter)``, is at least ``delay``. Within a
        tier every record is due at most that long after it was parked, so a record
        waiting behind its partition's head (which was parked earlier) is replayed never
        before its own due time and at most ``tier * (1 + jitter)`` after it was parked."""
        tiers = self.tiers()
        for tier in tiers:
            if tier * (1.0 + self.backoff.jitter) >= delay - 1e-9:
                return tier
        return tiers[-1]

    @classmethod
    def from_settings(cls, s: RetrySettings) -> RetryPolicy:
        return cls(max_attempts=s.max_attempts, max_age_seconds=s.max_age_seconds,
                   backoff=Backoff(initial=s.backoff_initial_seconds,
                                   multiplier=s.backoff_multiplier,
                                   cap=s.backoff_max_seconds, jitter=s.backoff_jitter))


@dataclass(frozen=True, slots=True)
class Done:
    """The service accepted the replay."""


@dataclass(frozen=True, slots=True)
class RetryAt:
    due: float
    """Epoch seconds before which the next attempt must not start."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str


Decision = Done | RetryAt | DeadLetter


def unsafe_to_replay(record: Record, *, has_idempotency_key: bool) -> bool:
    """True when a replay could apply a request twice and the service could not tell.

    A request that provably never reached the service, or whose method is idempotent,
    is safe to repeat; otherwise it must carry an Idempotency-Key.
    """
    return (record.error.reached_upstream
            and record.method.upper() not in IDEMPOTENT_METHODS
            and not has_idempotency_key)


def before_attempt(record: Record, *, has_idempotency_key: bool, now: float,
                   policy: RetryPolicy) -> DeadLetter | None:
    """Why ``record`` must not be replayed at all, or None when it may be."""
    if unsafe_to_replay(record, has_idempotency_key=has_idempotency_key):
        return DeadLetter(UNSAFE, f"{record.method} reached the service and the record has "
                                  "no Idempotency-Key, so a replay could apply it twice")
    age = now - record.timestamp
    if age > policy.max_age_seconds:
        return DeadLetter(MAX_AGE, f"captured {age:.0f}s ago, over the "
                                   f"{policy.max_age_seconds:g}s limit")
    if record.attempt >= policy.max_attempts:
        return DeadLetter(MAX_ATTEMPTS, f"already replayed {record.attempt} times, the "
                                        f"limit is {policy.max_attempts}")
    return None


def after_attempt(record: Record, attempt: int, result: Result, *, now: float, rand: float,
                  policy: RetryPolicy) -> Decision:
    """What to do after replay number ``attempt`` (1-based) of ``record`` came back."""
    verdict = result.verdict
    if verdict is Verdict.SUCCESS:
        return Done()
    what = f"status {result.status}" if result.status is not None else result.error or "error"
    if verdict is Verdict.PERMANENT:
        return DeadLetter(PERMANENT, f"the service answered {what}, which a retry cannot fix")
    if attempt >= policy.max_attempts:
        return DeadLetter(MAX_ATTEMPTS, f"all {attempt} replays failed; the last with {what}")
    due = now + policy.backoff.delay(attempt, rand, result.retry_after_seconds)
    deadline = record.timestamp + policy.max_age_seconds
    if due > deadline:
        return DeadLetter(MAX_AGE, f"the next replay would be due after the record's "
                                   f"{policy.max_age_seconds:g}s age limit; the last failed "
                                   f"with {what}")
    return RetryAt(due=due)
