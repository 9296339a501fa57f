"""Token bucket and circuit breaker stepped with a fake clock."""

from __future__ import annotations

import pytest

from retry_worker.limits import BreakerState, CircuitBreaker, TokenBucket


def test_a_bucket_allows_a_small_burst_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=50)  # capacity: a tenth of a second's worth
    assert [bucket.take(0.0) for _ in range(5)] == [0, 0, 0, 0, 0]
    assert bucket.take(0.0) == pytest.approx(0.02)
    assert bucket.take(0.02) == 0


def test_a_bucket_holds_the_rate_over_a_long_run() -> None:
    bucket, now, taken = TokenBucket(rate=20), 0.0, 0
    while now < 10.0:
        wait = bucket.take(now)
        if wait == 0:
            taken += 1
        else:
            now += wait
    assert 200 <= taken <= 203


def test_a_rate_of_zero_never_waits() -> None:
    bucket = TokenBucket(rate=0)
    assert all(bucket.take(0.0) == 0 for _ in range(10_000))


def test_a_slow_bucket_still_holds_one_token() -> None:
    bucket = TokenBucket(rate=0.5)
    assert bucket.take(0.0) == 0
    assert bucket.take(0.0) == pytest.approx(2.0)


def test_the_breaker_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(failures=3, open_seconds=10)
    b.failure(0)
    b.failure(0)
    b.success()
    assert not b.failure(0) and not b.failure(0)
    assert b.failure(1.0)
    assert b.state is BreakerState.OPEN
    assert b.permit(5.0) == pytest.approx(6.0)


def test_after_the_open_period_exactly_one_probe_goes_through() -> None:
    b = CircuitBreaker(failures=1, open_seconds=10)
    b.failure(0)
    assert b.permit(10.0) == 0
    assert b.state is BreakerState.HALF_OPEN
    assert b.permit(10.0) > 0  # a second replay waits for the probe's outcome


def test_a_successful_probe_closes_the_breaker() -> None:
    b = CircuitBreaker(failures=1, open_seconds=10)
    b.failure(0)
    b.permit(10.0)
    assert b.success()
    assert b.closed and b.permit(10.0) == 0


def test_a_failed_probe_opens_the_breaker_again() -> None:
    b = CircuitBreaker(failures=5, open_seconds=10)
    for _ in range(5):
        b.failure(0)
    b.permit(10.0)
    assert b.failure(10.5)
    assert b.permit(11.0) == pytest.approx(9.5)


def test_a_breaker_with_zero_failures_never_opens() -> None:
    b = CircuitBreaker(failures=0, open_seconds=10)
    assert not any(b.failure(0) for _ in range(100))
    assert b.permit(0) == 0


def test_a_probe_that_was_never_sent_lets_the_next_replay_probe() -> None:
    b = CircuitBreaker(failures=1, open_seconds=10)
    b.failure(0)
    assert b.permit(10.0) == 0
    b.release_probe()
    assert b.permit(10.0) == 0
