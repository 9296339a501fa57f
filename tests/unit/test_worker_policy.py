"""The replay policy as plain data: classification, backoff, Retry-After, decisions."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from redrive.envelope import Failure
from redrive.retrytopics import tier_topic
from retry_worker.policy import (
    Backoff,
    DeadLetter,
    Done,
    Result,
    RetryAt,
    RetryPolicy,
    Verdict,
    after_attempt,
    before_attempt,
    classify,
    parse_retry_after,
    unsafe_to_replay,
)
from tests.support.worker import make_record


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert classify(status) is Verdict.SUCCESS


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 599, None])
def test_throttling_conflicts_5xx_and_no_answer_are_retriable(status: int | None) -> None:
    assert classify(status) is Verdict.RETRIABLE


@pytest.mark.parametrize("status", [100, 301, 302, 307, 400, 401, 403, 404, 410, 413, 422])
def test_other_statuses_including_redirects_are_permanent(status: int) -> None:
    assert classify(status) is Verdict.PERMANENT


def test_the_backoff_grows_by_the_multiplier_from_the_initial_delay() -> None:
    b = Backoff(initial=2, multiplier=4, cap=3600, jitter=0)
    assert [b.delay(n, rand=0.5) for n in range(1, 7)] == [2, 8, 32, 128, 512, 2048]


def test_the_backoff_is_capped_even_for_huge_attempt_numbers() -> None:
    b = Backoff(initial=2, multiplier=4, cap=3600, jitter=0)
    assert b.delay(7, 0.5) == 3600
    assert b.delay(10_000, 0.5) == 3600


def test_jitter_scales_the_delay_within_its_band() -> None:
    b = Backoff(initial=10, multiplier=2, cap=1000, jitter=0.2)
    assert b.delay(1, rand=0.0) == pytest.approx(8.0)
    assert b.delay(1, rand=0.5) == pytest.approx(10.0)
    assert b.delay(1, rand=0.999999) == pytest.approx(12.0, rel=1e-5)


def test_jitter_never_pushes_past_the_cap() -> None:
    assert Backoff(initial=100, multiplier=1, cap=100, jitter=0.5).delay(1, 0.99) == 100


def test_retry_after_lengthens_the_delay_but_only_up_to_the_cap() -> None:
    b = Backoff(initial=2, multiplier=4, cap=60, jitter=0)
    assert b.delay(1, 0.5, retry_after=30) == 30
    assert b.delay(1, 0.5, retry_after=600) == 60


def test_retry_after_never_shortens_the_scheduled_delay() -> None:
    assert Backoff(initial=2, multiplier=4, cap=60, jitter=0).delay(2, 0.5, retry_after=1) == 8


def test_retry_after_reads_delta_seconds_and_http_dates() -> None:
    now = time.time()
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 7 ", now) == 7
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now) == 0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2020"])
def test_unreadable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, time.time()) is None


POLICY = RetryPolicy(max_attempts=3, max_age_seconds=100,
                     backoff=Backoff(initial=1, multiplier=2, cap=50, jitter=0))


def _result(status: int | None = None, error: str | None = None,
            retry_after: float | None = None) -> Result:
    return Result(started_at=0, duration_seconds=0.01, status=status, error=error,
                  retry_after_seconds=retry_after)


def test_success_is_done() -> None:
    r = make_record(timestamp=1000)
    assert after_attempt(r, 1, _result(204), now=1001, rand=0.5, policy=POLICY) == Done()


def test_a_retriable_failure_is_scheduled_after_the_backoff() -> None:
    r = make_record(timestamp=1000)
    assert after_attempt(r, 2, _result(503), now=1010, rand=0.5, policy=POLICY) == RetryAt(1012)


def test_a_connection_error_is_scheduled_like_a_5xx() -> None:
    r = make_record(timestamp=1000)
    got = after_attempt(r, 1, _result(error="connect_error"), now=1000, rand=0.5, policy=POLICY)
    assert got == RetryAt(1001)


def test_a_permanent_status_is_dead_lettered_at_once() -> None:
    got = after_attempt(make_record(), 1, _result(404), now=time.time(), rand=0.5, policy=POLICY)
    assert isinstance(got, DeadLetter) and got.reason == "permanent" and "404" in got.detail


def test_the_last_allowed_attempt_failing_is_dead_lettered_max_attempts() -> None:
    r = make_record(timestamp=1000)
    got = after_attempt(r, 3, _result(503), now=1001, rand=0.5, policy=POLICY)
    assert isinstance(got, DeadLetter) and got.reason == "max_attempts"


def test_a_retry_due_past_the_age_limit_is_dead_lettered_max_age_now() -> None:
    r = make_record(timestamp=1000)
    got = after_attempt(r, 1, _result(429, retry_after=40), now=1070, rand=0.5, policy=POLICY)
    assert isinstance(got, DeadLetter) and got.reason == "max_age"


def test_a_record_older_than_the_age_limit_is_not_replayed() -> None:
    r = make_record(timestamp=1000)
    got = before_attempt(r, has_idempotency_key=True, now=1101, policy=POLICY)
    assert got is not None and got.reason == "max_age"
    assert before_attempt(r, has_idempotency_key=True, now=1099, policy=POLICY) is None


def test_a_record_already_at_the_attempt_limit_is_not_replayed() -> None:
    r = make_record(timestamp=1000, attempt=3)
    got = before_attempt(r, has_idempotency_key=True, now=1001, policy=POLICY)
    assert got is not None and got.reason == "max_attempts"


@pytest.mark.parametrize(("method", "reached", "has_key", "unsafe"), [
    ("POST", True, False, True),
    ("PATCH", True, False, True),
    ("POST", True, True, False),
    ("POST", False, False, False),   # provably never reached the service
    ("PUT", True, False, False),     # idempotent
    ("DELETE", True, False, False),
    ("GET", True, False, False),
])
def test_only_non_idempotent_requests_that_reached_the_service_need_a_key(
        method: str, reached: bool, has_key: bool, unsafe: bool) -> None:
    r = make_record(method=method, error=Failure(kind="read_timeout", reached_upstream=reached))
    assert unsafe_to_replay(r, has_idempotency_key=has_key) is unsafe
    refusal = before_attempt(r, has_idempotency_key=has_key, now=r.timestamp, policy=POLICY)
    assert (refusal is not None and refusal.reason == "unsafe") is unsafe


def test_retry_tiers_are_the_schedule_and_the_cap() -> None:
    policy = RetryPolicy(max_attempts=8, backoff=Backoff(2, 4, 3600, 0.2))
    assert policy.tiers() == (2, 8, 32, 128, 512, 2048, 3600)
    assert [tier_topic("t.retry", d) for d in (2, 3600, 0.1)] == [
        "t.retry.2s", "t.retry.3600s", "t.retry.100ms"]
    # Each jittered delay lands on its own tier; a longer Retry-After on a longer one.
    for attempt in range(1, 8):
        for rand in (0.0, 0.5, 0.999):
            delay = policy.backoff.delay(attempt, rand)
            assert policy.tier_for(delay) == policy.backoff.base(attempt)
    assert policy.tier_for(100) == 128
    assert policy.tier_for(3600) == 3600
    assert RetryPolicy(max_attempts=1, backoff=Backoff(2, 4, 60, 0)).tiers() == (60,)
